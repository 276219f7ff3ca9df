r"""Objectives recorded once per batch shape and compiled: the ``compiled`` engine.

Most of a small VAE's step is not arithmetic: it is Python. Every step, Pyro builds the messenger
stack of ``trace``, ``replay``, ``plate`` and ``scale``, constructs each distribution and records
every site, and autograd then walks a graph of a hundred small operations. At batch 32 on two
CPU cores that overhead is several times the cost of the matrix products
(``benchmarks/throughput.py`` measures both).

:class:`CompiledObjective` wraps an objective module (:class:`~pyrovae.infer.objective.Objective`:
``loss = objective(x)``). For each batch shape it runs the objective once as it is, then records
every tensor operation of its forward pass as a function of the module's parameters and buffers
(:func:`torch.func.functional_call` inside :func:`torch.fx.experimental.proxy_tensor.make_fx`:
model and guide run as Pyro programs one last time) and compiles that graph with
:func:`torch.compile` (inductor), which derives and compiles the backward pass too. Later calls
with the same shapes run the compiled graph: the same operations on the same inputs, without the
Python. The result is still a loss tensor whose ``backward()`` fills the parameters' gradients,
so ``loss = objective(x); loss.backward(); optimizer.step()`` works as ever, and
:class:`~torch.nn.parallel.DistributedDataParallel` can wrap it.

A training step of one process goes further (:meth:`CompiledObjective.loss_and_gradients`, which
:class:`~pyrovae.train.step.GuardedStep` calls where the module has it): the recorded forward
graph and its backward pass are recorded together, as one graph that returns the loss, the
gradients and their Euclidean norm (the ``grad_norm`` metric, which the non-finite guard reads),
and that one graph is compiled. A step then runs no autograd engine, no per-parameter gradient
accumulation and no separate pass for the norm, and inductor fuses the backward's element-wise
work with the forward's (``docs/performance/speed.md`` has the measurements). Recording the
backward pass costs a little at the first step of each key: a first epoch took 0.64-0.96 s longer
than the next with a warm inductor cache, against 0.38-0.47 s for the forward graph compiled on
its own (``pyrovae.train.engines`` lists the runs).

Properties the tests check (``tests/test_compiled_elbo.py``):

- *Same draws, same numbers.* The graph draws its noise with the eager kernels from torch's global
  generator (inductor's ``fallback_random``), in the order the eager objective draws it, and
  recording and compiling leave the generators as they found them; so with the same seed the
  losses and gradients (and, from the one graph, their norm) equal the eager ones to float
  rounding, step after step, and :func:`pyrovae.fit` trains to the same parameters with either
  engine.
- *Only what it can replay.* Anything the graph could not reproduce runs eagerly, with one warning
  saying why: validation on (its checks read values), a program that branches on values (a
  score-function estimator, ``.item()``), a tensor with a gradient that is not a parameter of the
  objective's modules (it would be frozen into the graph), unhashable arguments.
- *Recompiles when it must.* Graphs are keyed on the shapes, dtypes, devices and strides of the
  tensor arguments, the other arguments' values, whether gradients are on, the modules'
  train/eval mode and their parameters' identity; a new key records and compiles again (seconds
  each, so a loop should see few shapes: :func:`pyrovae.fit` sees at most two).

On a CPU, inductor is asked for its C++ launcher of the graph's kernels (:data:`CPU_COMPILE_OPTIONS`),
and where that fails the graph is compiled without it. Where inductor cannot compile at all (no C++
compiler, an unsupported operation), the recorded graph runs uncompiled, which still skips Pyro's
Python; a warning says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._compat import Messenger, is_validation_enabled, make_fx, module_state
from .joint_graph import gradient_norm_of, record_with_gradients

__all__ = ["CompiledObjective", "CompiledGraph"]

#: :func:`torch.compile` options for inductor. ``fallback_random`` makes the graph draw its noise
#: with the eager kernels, so compiled and eager steps see the same draws.
COMPILE_OPTIONS: dict[str, Any] = {"fallback_random": True}
#: added to :data:`COMPILE_OPTIONS` where a graph runs on a CPU: inductor writes the function that
#: launches the graph's kernels in C++ instead of Python (less time around the kernels at every call);
#: where that fails to compile, the graph is compiled again without it
CPU_COMPILE_OPTIONS: dict[str, Any] = {"cpp_wrapper": True}


class _UncompilableError(Exception):
    """Why an objective runs eagerly for a key."""


class _ModuleParams(Messenger):
    """``pyro.module`` inside a recording: its ``pyro.param(name, tensor)`` statements answer the
    module's own (recorded) tensor without touching Pyro's parameter store. Any other ``pyro.param``
    (one whose value lives only in the store) cannot be recorded."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        super().__init__()
        self._ids = {id(t) for t in tensors}

    def _pyro_param(self, msg: dict[str, Any]) -> None:  # Pyro's messenger protocol for param sites
        init = msg["args"][1] if len(msg["args"]) > 1 else msg["kwargs"].get("init_tensor")
        if not (torch.is_tensor(init) and id(init) in self._ids):
            raise _UncompilableError(f"pyro.param({msg['args'][0]!r}) is not a parameter of the objective's modules")
        msg["value"], msg["done"] = init, True


def _arg_key(value: Any) -> Any:
    if torch.is_tensor(value):
        if value.requires_grad:
            raise _UncompilableError("a tensor argument requires grad")
        return ("tensor", tuple(value.shape), value.dtype, value.device, value.stride())
    hash(value)  # TypeError for unhashable arguments: those run eagerly
    return (type(value), value)


def _generator_devices(tensors: Sequence[torch.Tensor]) -> list[int]:
    """The CUDA devices whose generators a call on ``tensors`` may draw from."""
    return sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})


@dataclass
class CompiledGraph:
    """One recorded forward graph of an objective and how it is run.

    :ivar graph: the recorded graph (a :class:`torch.fx.GraphModule`, uncompiled), a function of
        ``(params, buffers, tensor arguments)`` returning the loss.
    :ivar run: what a call of the objective runs: ``graph`` compiled by :func:`torch.compile`, or
        ``graph`` itself where compiling failed; ``None`` until a call needs it (a training step
        that runs :attr:`joint` never does).
    :ivar compiled: whether ``run`` is compiled.
    :ivar joint: what :meth:`CompiledObjective.loss_and_gradients` runs: ``graph`` and its
        backward pass recorded together (:func:`~pyrovae.infer.joint_graph.record_with_gradients`),
        a function of the same inputs returning the loss, the parameters' gradients (``None`` for a
        parameter the loss does not depend on) and their norm, compiled where ``run`` would be;
        ``None`` until a step needs it, or where it could not be recorded (:attr:`joint_failed` says why).
    :ivar joint_compiled: whether ``joint`` is compiled.
    :ivar joint_failed: why the loss and gradients could not be recorded together (``""`` if they were, or
        have not been tried).
    """

    graph: torch.fx.GraphModule
    run: Callable[..., torch.Tensor] | None = None
    compiled: bool = False
    joint: Callable[..., tuple[torch.Tensor, list[torch.Tensor | None], torch.Tensor]] | None = None
    joint_compiled: bool = False
    joint_failed: str = ""


class CompiledObjective(nn.Module):
    """``objective`` with its forward pass recorded and compiled once per batch shape.

    :param objective: a module whose ``forward`` returns a differentiable loss and whose only
        tensors with gradients are its parameters (e.g. :class:`~pyrovae.infer.objective.Objective`).
    :param backend: the :func:`torch.compile` backend; ``None`` runs the recorded graph as it is
        (no compiling: still without Pyro's per-step Python).
    :param options: :func:`torch.compile` options for inductor (default :data:`COMPILE_OPTIONS`, and
        on a CPU :data:`CPU_COMPILE_OPTIONS` too).
    """

    def __init__(self, objective: nn.Module, backend: str | None = "inductor", options: dict[str, Any] | None = None):
        super().__init__()
        self.objective = objective
        self.backend = backend
        self.options = dict(COMPILE_OPTIONS if options is None else options)
        self._default_options = options is None
        #: per key (shapes, arguments, modes, parameters): its graph, or why it runs eagerly
        self.graphs: dict[Any, CompiledGraph | str] = {}
        self._warned: set[str] = set()

    def _tensors(self) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]], tuple[bool, ...]]:
        """The graph's tensor inputs, named: parameters with gradients, then the frozen ones and
        the buffers; and the train/eval mode of every module (one walk of the modules, made at every call)."""
        named, buffers, modes = module_state(self.objective)
        params, frozen = [], []
        for name, p in named:
            (params if p.requires_grad else frozen).append((name, p))
        return params, [*frozen, *buffers], modes

    def _key(self, args: tuple, kwargs: dict[str, Any], tensors: tuple[list, list, tuple] | None = None) -> Any:
        """The key of the graph for this call (``tensors``: :meth:`_tensors`, where already at hand)."""
        params, buffers, modes = self._tensors() if tensors is None else tensors
        return (
            tuple(_arg_key(a) for a in args),
            tuple((k, _arg_key(v)) for k, v in sorted(kwargs.items())) if kwargs else (),
            torch.is_grad_enabled(),
            modes,
            tuple((id(t), t.requires_grad, t.shape) for _, t in (*params, *buffers)),
        )

    def graph_for(self, *args: Any, **kwargs: Any) -> CompiledGraph | None:
        """The graph that ``self(*args, **kwargs)`` runs, or ``None`` where it runs eagerly (after
        that call has been made once)."""
        try:
            graph = self.graphs.get(self._key(args, kwargs))
        except (_UncompilableError, TypeError):
            return None
        return graph if isinstance(graph, CompiledGraph) else None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if is_validation_enabled():
            self._warn_eager("Pyro's validation is on (its checks read tensor values)")
            return self.objective(*args, **kwargs)
        tensors = self._tensors()  # one walk of the modules for the key and the graph's inputs
        try:
            key = self._key(args, kwargs, tensors)
        except (_UncompilableError, TypeError) as error:
            self._warn_eager(f"an argument is not hashable ({error})" if isinstance(error, TypeError) else str(error))
            return self.objective(*args, **kwargs)
        graph = self.graphs.get(key)
        if isinstance(graph, CompiledGraph):
            inputs = self._inputs(tensors, args, kwargs)
            if graph.run is None:  # (recorded by a training step, which runs its joint graph)
                self._compile_forward(graph, inputs)
            assert graph.run is not None
            return graph.run(*inputs)
        loss = self.objective(*args, **kwargs)  # the first call of a key runs as it is...
        if graph is None:  # ...and then records and compiles, leaving the generators as they were
            self._record_and_compile(key, args, kwargs, self._compile_forward)
        return loss

    def loss_and_gradients(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        r"""What ``loss = self(*args, **kwargs); loss.backward()`` computes, in one call: returns the
        loss (detached) and the Euclidean norm of the gradients together (:func:`gradient_norm_of`),
        and sets the ``grad`` of each parameter of the objective that has one. ``None`` (and
        nothing computed) where it cannot: a parameter already has a gradient (``backward`` would
        add to it), gradients are off, Pyro's validation or autograd's anomaly detection is on,
        or this call runs eagerly; the caller then takes the usual way.

        For each key the first call runs the objective as it is and its backward pass; it then
        records the forward graph and its backward pass together (:attr:`CompiledGraph.joint`:
        :func:`torch.autograd.grad` inside :func:`~torch.fx.experimental.proxy_tensor.make_fx`)
        and compiles that one graph, with the generators left as they were. Later calls run it:
        the same operations on the same draws as the eager step (the gradients equal autograd's
        to float rounding), without autograd's engine at run time, without a separate pass for
        the norm, and with the backward's element-wise kernels fused with the forward's.
        """
        if is_validation_enabled() or torch.is_anomaly_enabled() or not torch.is_grad_enabled():
            return None
        tensors = self._tensors()
        params = [p for _, p in tensors[0]]
        if not params or any(p.grad is not None for p in params):
            return None
        try:
            key = self._key(args, kwargs, tensors)
        except (_UncompilableError, TypeError):
            return None  # (the call warns when it runs eagerly)
        graph = self.graphs.get(key)
        if isinstance(graph, str):
            return None
        if graph is None:  # the first call of a key runs as it is, then records and compiles
            loss = self.objective(*args, **kwargs)
            loss.backward()
            norm = gradient_norm_of([p.grad for p in params if p.grad is not None])
            self._record_and_compile(key, args, kwargs, self._compile_joint)
            return loss.detach(), norm
        inputs = self._inputs(tensors, args, kwargs)
        if graph.joint is None and not graph.joint_failed:  # (recorded by a call of the objective)
            self._compile_joint(graph, inputs)
        if graph.joint is None:
            return None
        with torch.no_grad():
            loss, grads, norm = graph.joint(*inputs)
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.grad = g
        return loss, norm

    @staticmethod
    def _inputs(
        tensors: tuple[list, list, tuple], args: tuple, kwargs: dict[str, Any]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """A graph's inputs for this call: the parameters, the frozen ones and buffers, the tensor arguments."""
        params, buffers, _ = tensors
        arguments = [a for a in (*args, *(kwargs[k] for k in sorted(kwargs))) if torch.is_tensor(a)]
        return [p for _, p in params], [b for _, b in buffers], arguments

    def _warn_eager(self, why: str) -> None:
        if why not in self._warned:
            self._warned.add(why)
            warnings.warn(f"the compiled engine runs this objective eagerly: {why}", RuntimeWarning, stacklevel=3)

    def _record_and_compile(
        self, key: Any, args: tuple, kwargs: dict[str, Any], compile: Callable[[CompiledGraph, tuple], None]
    ) -> None:
        """After a key's first call ran as it is: record its graph (:meth:`_record`), keep it and
        ``compile`` it (:meth:`_compile_forward` or :meth:`_compile_joint`); or keep and say why it
        cannot be recorded."""
        try:
            recorded = self.graphs[key] = self._record(args, kwargs)
        except _UncompilableError as error:
            self.graphs[key] = str(error)
            self._warn_eager(str(error))
            return
        compile(recorded, self._inputs(self._tensors(), args, kwargs))

    def _record(self, args: tuple, kwargs: dict[str, Any]) -> CompiledGraph:
        """The objective's forward pass on these arguments, recorded (uncompiled) with the generators
        left as they were."""
        params, buffers, _ = self._tensors()
        names = [n for n, _ in (*params, *buffers)]
        keys = sorted(kwargs)
        values = (*args, *(kwargs[k] for k in keys))
        slots = [i for i, a in enumerate(values) if torch.is_tensor(a)]
        objective = self.objective

        def loss_of(
            params: list[torch.Tensor], buffers: list[torch.Tensor], tensors: list[torch.Tensor]
        ) -> torch.Tensor:
            full = list(values)
            for slot, t in zip(slots, tensors, strict=True):
                full[slot] = t
            state = dict(zip(names, (*params, *buffers), strict=True))
            call_args, call_kwargs = tuple(full[: len(args)]), dict(zip(keys, full[len(args) :], strict=True))
            with ExitStack() as stack:
                for module in objective.modules():  # no param-store writes while recording
                    if hasattr(module, "without_param_sites"):
                        stack.enter_context(module.without_param_sites())
                stack.enter_context(_ModuleParams([*params, *buffers]))
                return torch.func.functional_call(objective, state, call_args, call_kwargs, strict=True)

        p = [t.detach() for _, t in params]
        b = [t for _, t in buffers]
        tensors = [values[slot] for slot in slots]
        try:
            with torch.random.fork_rng(devices=_generator_devices([*p, *tensors])):
                graph = make_fx(loss_of)(p, b, tensors)
        except _UncompilableError:
            raise
        except Exception as error:  # data-dependent Python control flow, .item(), ...
            why = f"model and guide could not be recorded ({type(error).__name__}: {str(error).splitlines()[0]})"
            raise _UncompilableError(why) from error
        for node in graph.graph.nodes:
            if node.op == "get_attr":
                constant = getattr(graph, node.target)
                if torch.is_tensor(constant) and constant.requires_grad:
                    raise _UncompilableError(
                        f"a tensor of shape {tuple(constant.shape)} with a gradient is not a parameter of the objective"
                    )
        return CompiledGraph(graph)

    def _compile(self, function: Callable[..., Any], inputs: tuple, gradients: bool) -> tuple[Callable[..., Any], bool]:
        """``function`` compiled with this module's backend and called once on ``inputs`` (and, with
        ``gradients``, differentiated; without, called with gradients off), the generators left as
        they were: ``(compiled, True)``; or ``(function, False)``, with a warning, where compiling fails."""
        if self.backend is None:
            return function, False
        params, _, tensors = inputs
        tries: list[dict[str, Any] | None] = [self.options if self.backend == "inductor" else None]
        on_cpu = all(t.device.type == "cpu" for t in (*params, *tensors))
        if self.backend == "inductor" and self._default_options and on_cpu:
            tries.insert(0, {**self.options, **CPU_COMPILE_OPTIONS})
        for options in tries:
            try:
                compiled = torch.compile(function, backend=self.backend, dynamic=False, fullgraph=True, options=options)
                with torch.random.fork_rng(devices=_generator_devices([*params, *tensors])):
                    if gradients:  # compile forward and backward now
                        loss = compiled(*inputs)
                        if loss.requires_grad:
                            torch.autograd.grad(loss, params, allow_unused=True)
                    else:
                        with torch.no_grad():
                            compiled(*inputs)
            except Exception as error:  # no C++ compiler, an operation inductor lacks, ...
                failure = error
                continue
            return compiled, True
        warnings.warn(
            f"torch.compile failed ({type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}); "
            "running the recorded graph uncompiled",
            RuntimeWarning,
            stacklevel=5,
        )
        return function, False

    def _compile_forward(self, graph: CompiledGraph, inputs: tuple) -> None:
        """Set ``graph.run``: the recorded forward graph compiled (its backward derived by :func:`torch.compile`)."""
        graph.run, graph.compiled = self._compile(graph.graph, inputs, gradients=True)

    def _compile_joint(self, graph: CompiledGraph, inputs: tuple) -> None:
        """Set ``graph.joint``: the recorded forward graph and its backward pass recorded as one graph
        (:func:`~pyrovae.infer.joint_graph.record_with_gradients`), compiled; or ``graph.joint_failed``."""
        params, buffers, tensors = inputs
        try:
            devices = _generator_devices([*params, *tensors])
            joint = record_with_gradients(graph.graph, params, buffers, tensors, devices)
        except Exception as error:  # a backward pass that cannot be recorded
            graph.joint_failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            warnings.warn(
                "the compiled engine could not record this objective's backward pass with its forward pass "
                f"({graph.joint_failed}); its gradients are taken by autograd",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        graph.joint, graph.joint_compiled = self._compile(joint, inputs, gradients=False)
