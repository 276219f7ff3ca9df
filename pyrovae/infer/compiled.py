r"""The lean ELBOs with the whole loss-and-gradient computation compiled into one graph.

Most of a small VAE's SVI step is not arithmetic: it is Python. Every step, Pyro builds the
messenger stack of ``trace``, ``replay``, ``plate`` and ``scale``, constructs each distribution,
records every site, and autograd then walks a graph of a hundred small operations. At batch 32
on two CPU cores that overhead is several times the cost of the matrix products
(``benchmarks/throughput.py`` measures both).

:class:`CompiledTraceMeanField_ELBO` and :class:`CompiledTrace_ELBO` are
:class:`~pyrovae.infer.lean_elbo.LeanTraceMeanField_ELBO` and :class:`~pyrovae.infer.lean_elbo.LeanTrace_ELBO`
whose ``loss_and_grads`` runs model and guide as Pyro programs once per batch shape, with
:func:`torch.fx.experimental.proxy_tensor.make_fx` recording every tensor operation of the lean
ELBO estimate (eq. 11 with the KL of eq. 18, or eq. 12) *and of its backward pass*; then
:func:`torch.compile` (inductor) compiles that graph. Later steps with the same shapes run the
compiled graph: the same operations on the same inputs, without the Python. It is the idea of
Pyro's ``JitTrace_ELBO`` (``torch.jit.trace`` of the forward pass), taken to the backward pass
and to a compiler that fuses the elementwise work.

Properties the tests check (``tests/test_compiled_elbo.py``):

- *Same draws, same numbers.* The graph draws its noise with the eager kernel from torch's global
  generator (inductor's ``fallback_random``), in the order the eager ELBO draws it, and the trace
  is made with the generator's state restored afterwards; so with the same seed, the losses and
  gradients equal the lean ELBO's to float rounding, step after step, and ``pyrovae.fit`` trains
  to the same parameters with either.
- *Only what it can compile.* It compiles only where the lean shortcut applies (no validation,
  every guide site reparameterised, no auxiliary sites), where model and guide are methods of
  :class:`torch.nn.Module` objects and every tensor with a gradient is one of their parameters
  (a ``pyro.param`` outside a module would otherwise be frozen into the graph). Anything else
  runs the lean ELBO's eager code, with one warning saying why.
- *Recompiles when it must.* The compiled graph is keyed on model and guide, the shapes, dtypes
  and devices of the tensor arguments, the other arguments' values, the modules' train/eval mode
  and their parameters' identity; a new key traces and compiles again (each compile takes
  seconds, so a training loop should see few batch shapes: ``pyrovae.fit`` sees at most two).
- ``pyro.infer.SVI`` works with it: where model or guide have ``param`` sites, every compiled
  step replays them, so SVI's parameter capture sees the same parameters.

Where inductor cannot compile (no C++ compiler, an unsupported operation), the recorded graph
runs uncompiled, which still skips Pyro's Python; a warning says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer.util import torch_item
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.util import warn_if_nan
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from .lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO, _LeanMixin

__all__ = ["CompiledTrace_ELBO", "CompiledTraceMeanField_ELBO", "CompiledStep"]


class _UncompilableError(Exception):
    """Why a program runs the eager code instead."""


class _ModuleParams(Messenger):
    """``pyro.module`` inside a recorded program: its ``pyro.param(name, tensor)`` statements answer
    the module's own (recorded) tensor without touching Pyro's parameter store. Any other
    ``pyro.param`` (one whose value lives in the store) cannot be recorded."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        super().__init__()
        self._ids = {id(t) for t in tensors}

    def _pyro_param(self, msg: dict[str, Any]) -> None:
        init = msg["args"][1] if len(msg["args"]) > 1 else msg["kwargs"].get("init_tensor")
        if not (torch.is_tensor(init) and id(init) in self._ids):
            raise _UncompilableError(f"pyro.param({msg['args'][0]!r}) is not a parameter of model's or guide's module")
        msg["value"], msg["done"] = init, True


def _owner(fn: Callable) -> Any:
    return getattr(fn, "__self__", None)


def _modules(model: Callable, guide: Callable) -> list[nn.Module]:
    modules: list[nn.Module] = []
    for owner in (_owner(model), _owner(guide)):
        if isinstance(owner, nn.Module) and all(owner is not m for m in modules):
            modules.append(owner)
    return modules


def _arg_key(value: Any) -> Any:
    if torch.is_tensor(value):
        if value.requires_grad:
            raise _UncompilableError("a tensor argument requires grad")
        return ("tensor", tuple(value.shape), value.dtype, value.device, value.stride())
    hash(value)  # TypeError for unhashable arguments: those run eagerly
    return (type(value), value)


@dataclass
class CompiledStep:
    """One compiled loss-and-gradient graph and the tensors it reads.

    :ivar graph: the recorded graph (a :class:`torch.fx.GraphModule`, uncompiled).
    :ivar run: what is called each step: ``graph`` compiled by :func:`torch.compile`, or ``graph``
        itself where compiling failed.
    :ivar compiled: whether ``run`` is compiled.
    :ivar params: the tensors differentiated (the modules' parameters that require grad).
    :ivar constants: the modules' other parameters and buffers, read as inputs.
    :ivar param_names: the ``param`` sites of model and guide, replayed for Pyro's SVI.
    """

    graph: torch.fx.GraphModule
    run: Callable[..., tuple[torch.Tensor, list[torch.Tensor]]]
    compiled: bool
    params: list[torch.Tensor]
    constants: list[torch.Tensor]
    param_names: list[str]

    def __call__(self, tensors: Sequence[torch.Tensor]) -> float:
        loss, grads = self.run(self.params, self.constants, list(tensors))
        for p, g in zip(self.params, grads, strict=True):
            if p.grad is None:
                p.grad = g
            else:
                p.grad += g
        if self.param_names and _PYRO_STACK:
            for name in self.param_names:
                pyro.param(name)
        return torch_item(loss)


class _CompiledMixin(_LeanMixin):
    """``loss_and_grads`` through a :class:`CompiledStep` per program and shape."""

    #: the :func:`torch.compile` backend for every graph; ``None`` runs the recorded graph as it is
    #: (no compiling: still without Pyro's per-step Python)
    backend: str | None = "inductor"
    #: torch.compile options (inductor config). ``fallback_random`` makes the graph draw its noise
    #: with the eager kernels, so compiled and eager steps see the same draws.
    compile_options: dict[str, Any] = {"fallback_random": True}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: per key (program, shapes, arguments, modules): its step, or why it runs eagerly
        self._compiled_steps: dict[Any, CompiledStep | str] = {}

    def _key(self, model: Callable, guide: Callable, args: tuple, kwargs: dict[str, Any]) -> Any:
        modules = _modules(model, guide)
        return (
            tuple((id(_owner(fn)), getattr(fn, "__func__", fn)) for fn in (model, guide)),
            tuple(_arg_key(a) for a in args),
            tuple((k, _arg_key(v)) for k, v in sorted(kwargs.items())),
            tuple(
                (m.training, tuple((id(t), t.requires_grad, t.shape) for t in (*m.parameters(), *m.buffers())))
                for m in modules
            ),
        )

    def compiled_step(self, model: Callable, guide: Callable, *args, **kwargs) -> CompiledStep | None:
        """The :class:`CompiledStep` that ``loss_and_grads(model, guide, *args, **kwargs)`` runs,
        or ``None`` where it runs the eager code (after that call has been made once)."""
        try:
            step = self._compiled_steps.get(self._key(model, guide, args, kwargs))
        except (_UncompilableError, TypeError):
            return None
        return step if isinstance(step, CompiledStep) else None

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss as a float; its gradient is accumulated into the parameters' ``.grad``.

        The first call for a program and shape runs the lean ELBO's eager code (and records and
        compiles the graph); later calls run the compiled graph.
        """
        if not self._lean_applies(guide) or not torch.is_grad_enabled():
            return super().loss_and_grads(model, guide, *args, **kwargs)
        try:
            key = self._key(model, guide, args, kwargs)
        except (_UncompilableError, TypeError) as error:
            self._warn_eager(str(error) or "an argument is not hashable")
            return super().loss_and_grads(model, guide, *args, **kwargs)
        step = self._compiled_steps.get(key)
        if isinstance(step, CompiledStep):
            loss = step([a for a in (*args, *(kwargs[k] for k in sorted(kwargs))) if torch.is_tensor(a)])
            warn_if_nan(loss, "loss")
            return loss
        if step is None:
            with poutine.trace(param_only=True) as capture:
                loss = super().loss_and_grads(model, guide, *args, **kwargs)
            try:
                self._compiled_steps[key] = self._build(model, guide, args, kwargs, list(capture.trace.nodes))
            except _UncompilableError as error:
                self._compiled_steps[key] = str(error)
                self._warn_eager(str(error))
            return loss
        return super().loss_and_grads(model, guide, *args, **kwargs)

    def _warn_eager(self, why: str) -> None:
        warnings.warn(f"{type(self).__name__} runs eagerly here: {why}", RuntimeWarning, stacklevel=3)

    def _loss(self, model: Callable, guide: Callable, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
        loss: Any = 0.0
        for model_trace, guide_trace in self._lean_traces(model, guide, args, kwargs):
            elbo = self._lean_elbo(model_trace, guide_trace)
            if elbo is None:
                raise _UncompilableError("a site needs Pyro's own estimator (not reparameterised, or auxiliary)")
            loss = loss - elbo / self.num_particles
        return loss

    def _build(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict[str, Any], param_names: list[str]
    ) -> CompiledStep:
        modules = _modules(model, guide)
        if not modules:
            raise _UncompilableError("model and guide are not methods of a torch.nn.Module")
        named: list[tuple[int, str, torch.Tensor]] = []
        seen: set[int] = set()
        for i, module in enumerate(modules):
            for name, t in (*module.named_parameters(), *module.named_buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    named.append((i, name, t))
        differentiated = [entry for entry in named if entry[2].requires_grad]
        fixed = [entry for entry in named if not entry[2].requires_grad]
        keys = sorted(kwargs)
        values = (*args, *(kwargs[k] for k in keys))
        tensor_slots = [i for i, a in enumerate(values) if torch.is_tensor(a)]

        def loss_and_grads(params: list[torch.Tensor], constants: list[torch.Tensor], tensors: list[torch.Tensor]):
            params = [p.detach().requires_grad_() for p in params]
            full = list(values)
            for slot, t in zip(tensor_slots, tensors, strict=True):
                full[slot] = t
            call_args, call_kwargs = tuple(full[: len(args)]), dict(zip(keys, full[len(args) :], strict=True))
            with ExitStack() as stack:
                for i, module in enumerate(modules):
                    swapped = {name: t for (j, name, _), t in zip(differentiated, params, strict=True) if j == i}
                    swapped.update({name: t for (j, name, _), t in zip(fixed, constants, strict=True) if j == i})
                    stack.enter_context(torch.nn.utils.stateless._reparametrize_module(module, swapped))
                stack.enter_context(_ModuleParams([*params, *constants]))
                loss = self._loss(model, guide, call_args, call_kwargs)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            return loss.detach(), grads

        params = [t for _, _, t in differentiated]
        constants = [t for _, _, t in fixed]
        tensors = [values[slot] for slot in tensor_slots]
        # recording and the first compiled call draw noise: both leave the generators as they were
        cuda = sorted({t.device.index or 0 for t in (*params, *tensors) if t.device.type == "cuda"})
        try:
            with torch.random.fork_rng(devices=cuda), ExitStack() as stack:
                for module in modules:
                    if hasattr(module, "registered_once"):  # pyrovae.VAE: no param-store writes
                        stack.enter_context(module.registered_once())
                graph = make_fx(loss_and_grads)(params, constants, tensors)
        except _UncompilableError:
            raise
        except Exception as error:  # data-dependent Python control flow, .item(), ...
            why = f"model and guide could not be recorded ({type(error).__name__}: {error})"
            raise _UncompilableError(why) from error
        for node in graph.graph.nodes:
            if node.op == "get_attr":
                constant = getattr(graph, node.target)
                if torch.is_tensor(constant) and constant.requires_grad:
                    raise _UncompilableError(
                        f"a tensor of shape {tuple(constant.shape)} with a gradient is not a parameter of "
                        f"{', '.join(type(m).__name__ for m in modules)}"
                    )
        step = CompiledStep(graph, graph, False, params, constants, param_names)
        if self.backend is None:
            return step
        try:
            options = dict(self.compile_options) if self.backend == "inductor" else None
            run = torch.compile(graph, backend=self.backend, dynamic=False, fullgraph=True, options=options)
            with torch.random.fork_rng(devices=cuda):
                run(params, constants, tensors)  # compiles now, outside the caller's next step
            step.run, step.compiled = run, True
        except Exception as error:  # no C++ compiler, an operation inductor lacks, ...
            warnings.warn(
                f"{type(self).__name__}: torch.compile failed ({type(error).__name__}: {error}); "
                "running the recorded graph uncompiled",
                RuntimeWarning,
                stacklevel=4,
            )
        return step


class CompiledTrace_ELBO(_CompiledMixin, LeanTrace_ELBO):  # noqa: N801 (named after Pyro's class)
    r""":class:`~pyrovae.infer.lean_elbo.LeanTrace_ELBO` (Monte Carlo KL, eq. 12), its loss and
    gradient compiled into one graph per batch shape (see :mod:`pyrovae.infer.compiled`)."""


class CompiledTraceMeanField_ELBO(_CompiledMixin, LeanTraceMeanField_ELBO):  # noqa: N801
    r""":class:`~pyrovae.infer.lean_elbo.LeanTraceMeanField_ELBO` (analytic KL, eq. 11 and 18), its
    loss and gradient compiled into one graph per batch shape (see :mod:`pyrovae.infer.compiled`)."""
