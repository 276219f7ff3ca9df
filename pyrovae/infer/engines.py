r"""Engines: how the loss of a training step is computed (``--engine``), independent of what is
estimated (``--elbo``).

An engine wraps an objective module (:class:`~pyrovae.infer.objective.Objective`, ``loss =
objective(x)``) into the module the training loop calls; every engine computes the same loss and
gradients on the same draws, so it changes only the time a step takes:

============  ==================================================================================
``eager``     the objective as it is: model and guide run as Pyro programs every step.
``compiled``  :class:`~pyrovae.infer.compiled.CompiledObjective`: the forward pass recorded once
              per batch shape and compiled by :func:`torch.compile` (inductor), which derives the
              backward pass; seconds of compiling per shape, then faster steps.
``jit``       :class:`TracedObjective`: the forward pass traced once per batch shape by
              :func:`torch.jit.trace` (TorchScript, deprecated by torch 2.13 but still shipped);
              needs every batch of a run to have one shape, so the loop drops the last, smaller
              batch of each epoch.
``cudagraph`` the ``compiled`` objective, with the whole step's loss, gradients and guard recorded
              once in a CUDA graph and replayed (:class:`~pyrovae.train.graphed.GraphedStep`): one
              launch per step instead of hundreds; CUDA only, one process, one batch shape per
              run.
``auto``      ``compiled`` where a run is long enough to repay compiling (:data:`AUTO_MIN_STEPS`
              steps) and nothing forbids it (validation, anomaly detection), else ``eager``.
============  ==================================================================================

Each engine class declares what it needs from the loop (:attr:`Engine.fixed_shapes`,
:attr:`Engine.records_step`) instead of being recognised by its name.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from .._compat import is_validation_enabled
from ..errors import ConfigError
from .compiled import CompiledObjective

__all__ = [
    "Engine",
    "EagerEngine",
    "CompiledEngine",
    "JitEngine",
    "TracedObjective",
    "CudaGraphEngine",
    "ENGINES",
    "ENGINE_NAMES",
    "AUTO_MIN_STEPS",
    "make_engine",
]

#: ``auto`` compiles when a run has at least this many steps. Measured on this project's 2-core CPU
#: for the 784-400-50 network at batch 128 (``benchmarks/throughput.py``; README, Performance):
#: compiling a run's two graphs (the batch and the last, smaller one) cost about 19.5 s with an empty
#: inductor cache (a machine's first run) and about 3 s with a warm one, and a compiled step then took
#: about 1.1 ms less than an eager one (4.8 against 5.9 ms). So compiling pays for itself after about
#: 2,700 steps with a warm cache and 18,000 with a cold one; at 10,000 steps it repays a warm compile
#: almost four times over and most of a cold one, and the default Fashion-MNIST run (469 steps x 30
#: epochs at batch 128) compiles.
AUTO_MIN_STEPS = 10_000


class Engine(ABC):
    """How a step's loss is computed; :meth:`wrap` turns an objective into the module to call."""

    #: the ``--engine`` name
    name: ClassVar[str]
    #: the loop must give every step a batch of one shape (it then drops an epoch's last, smaller batch)
    fixed_shapes: ClassVar[bool] = False
    #: the loop must record its step in a CUDA graph (:class:`~pyrovae.train.graphed.GraphedStep`)
    records_step: ClassVar[bool] = False

    @abstractmethod
    def wrap(self, objective: nn.Module) -> nn.Module:
        """The module whose call ``module(*args)`` returns ``objective(*args)``, computed this way."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EagerEngine(Engine):
    """Model and guide run as Pyro programs at every step."""

    name = "eager"

    def wrap(self, objective: nn.Module) -> nn.Module:
        return objective


class CompiledEngine(Engine):
    """:class:`~pyrovae.infer.compiled.CompiledObjective`: recorded and compiled per batch shape.

    :param backend: the :func:`torch.compile` backend (``None``: the recorded graph uncompiled).
    :param options: inductor options (default :data:`pyrovae.infer.compiled.COMPILE_OPTIONS`).
    """

    name = "compiled"

    def __init__(self, backend: str | None = "inductor", options: dict[str, Any] | None = None):
        self.backend, self.options = backend, options

    def wrap(self, objective: nn.Module) -> nn.Module:
        return CompiledObjective(objective, self.backend, self.options)


class TracedObjective(nn.Module):
    """``objective`` traced by :func:`torch.jit.trace` once per input shape.

    The traced module shares the objective's parameters, so gradients reach them; its noise comes
    from torch's global generator, as the eager objective's does, and tracing leaves the
    generators as it found them (the first call of a shape runs the objective as it is).
    """

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective
        self.traced: dict[Any, Any] = {}
        self.warned = False

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if is_validation_enabled():
            if not self.warned:
                self.warned = True
                warnings.warn(
                    "the jit engine runs this objective eagerly: Pyro's validation is on", RuntimeWarning, stacklevel=2
                )
            return self.objective(*args)
        if not all(torch.is_tensor(a) for a in args):
            raise ConfigError("the jit engine traces tensor arguments only; pass keyword options at construction")
        key = (tuple((a.shape, a.dtype, a.device) for a in args), torch.is_grad_enabled(), self.objective.training)
        traced = self.traced.get(key)
        if traced is not None:
            return traced(*args)
        loss = self.objective(*args)
        devices = sorted({a.device.index or 0 for a in args if a.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # TracerWarnings for the draws (they are meant to differ) and the deprecation
            self.traced[key] = torch.jit.trace(self.objective, args, check_trace=False)
        return loss


class JitEngine(Engine):
    """:class:`TracedObjective`: TorchScript traces, one batch shape per run."""

    name = "jit"
    fixed_shapes = True

    def wrap(self, objective: nn.Module) -> nn.Module:
        return TracedObjective(objective)


class CudaGraphEngine(Engine):
    """The ``inner`` engine's module (``compiled`` by default: fewer, fused kernels to record), run
    by a step that the loop records in a CUDA graph and replays
    (:class:`~pyrovae.train.graphed.GraphedStep`, which refuses what a graph cannot replay)."""

    name = "cudagraph"
    fixed_shapes = True
    records_step = True

    def __init__(self, inner: Engine | None = None):
        self.inner = inner if inner is not None else CompiledEngine()
        if self.inner.records_step:
            raise ConfigError(f"the cudagraph engine records another engine's step, not {self.inner!r}")

    def wrap(self, objective: nn.Module) -> nn.Module:
        return self.inner.wrap(objective)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inner={self.inner!r})"


#: ``--engine`` names; ``auto`` picks one of the others per run (:func:`make_engine`)
ENGINES: dict[str, type[Engine]] = {
    "eager": EagerEngine,
    "compiled": CompiledEngine,
    "jit": JitEngine,
    "cudagraph": CudaGraphEngine,
}
ENGINE_NAMES = ("auto", *ENGINES)


def make_engine(
    name: str | Engine = "auto", steps: int | None = None, validate: bool = False, anomaly: bool = False
) -> Engine:
    """The engine called ``name`` (one of :data:`ENGINE_NAMES`), or ``name`` itself if it is an :class:`Engine`.

    ``auto`` is ``compiled`` for a run of at least :data:`AUTO_MIN_STEPS` ``steps`` with neither Pyro's
    validation (whose checks a graph cannot replay) nor autograd's anomaly detection on, else ``eager``.
    """
    if isinstance(name, Engine):
        return name
    if name == "auto":
        long_enough = steps is not None and steps >= AUTO_MIN_STEPS
        return CompiledEngine() if long_enough and not validate and not anomaly else EagerEngine()
    if name not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINE_NAMES)}, got {name!r}")
    return ENGINES[name]()
