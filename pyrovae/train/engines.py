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
``jit``       :class:`~pyrovae.infer.traced.TracedObjective`: the forward pass traced once per batch shape by
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

An engine owns its step: :meth:`Engine.check` refuses, once per run and before anything is
written, what it cannot run (:class:`StepPlan`: the device, the processes, the batch size against
the training rows, validation and anomaly detection), and :meth:`Engine.make_step` builds the step
the training loop calls (:class:`~pyrovae.train.step.GuardedStep`, or
:class:`~pyrovae.train.graphed.GraphedStep` for ``cudagraph``). The loop never asks an engine's
name. An engine of your own is a subclass registered by :func:`register_engine`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..infer.compiled import CompiledObjective
from ..infer.traced import TracedObjective
from ..spec.names import register_name
from .graphed import GraphedStep, check_recordable
from .step import GuardedStep

__all__ = [
    "Engine",
    "StepPlan",
    "EagerEngine",
    "CompiledEngine",
    "JitEngine",
    "TracedObjective",
    "CudaGraphEngine",
    "ENGINES",
    "engine_names",
    "register_engine",
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


@dataclass(frozen=True)
class StepPlan:
    """What an engine is checked against (:meth:`Engine.check`): where and how a run's steps run.

    :ivar device: where the step runs.
    :ivar processes: how many processes train together (1 outside torchrun).
    :ivar batch_size: the rows of a step (over several processes, the global batch).
    :ivar train_rows: the training rows the batches are cut from (validation rows held out).
    :ivar validate: Pyro's validation is on.
    :ivar anomaly: autograd's anomaly detection is on.
    """

    device: torch.device
    processes: int
    batch_size: int
    train_rows: int
    validate: bool = False
    anomaly: bool = False


class Engine(ABC):
    """How a step runs: :meth:`wrap` turns an objective into the module to call, :meth:`check`
    refuses what the engine cannot run, :meth:`make_step` builds the step the loop calls.

    A subclass sets :attr:`name`, implements :meth:`wrap`, and may extend :meth:`require` (its
    prerequisites) and :meth:`make_step`; :func:`register_engine` makes ``--engine NAME`` build it.
    """

    #: the ``--engine`` name
    name: ClassVar[str]
    #: every step takes a batch of one shape (the loop drops an epoch's last, smaller batch)
    fixed_shapes: ClassVar[bool] = False

    @abstractmethod
    def wrap(self, objective: nn.Module) -> nn.Module:
        """The module whose call ``module(*args)`` returns ``objective(*args)``, computed this way."""

    def require(self, plan: StepPlan) -> None:
        """Raise :class:`~pyrovae.errors.ConfigError` if this engine cannot run ``plan``'s steps: here,
        a batch larger than the training rows where every batch must have one shape."""
        if self.fixed_shapes and plan.batch_size > plan.train_rows:
            raise ConfigError(
                f"the {self.name} engine drops incomplete batches, so --batch-size {plan.batch_size} must not exceed "
                f"the {plan.train_rows} training rows: lower --batch-size or use --engine eager or compiled"
            )

    def check(self, plan: StepPlan) -> None:
        """:meth:`require` once: an engine checked against ``plan`` (by the run's plan) is not checked
        again for it (by the loop)."""
        if getattr(self, "_checked", None) == plan:
            return
        self.require(plan)
        self._checked = plan

    def make_step(self, module: nn.Module, optimizer: torch.optim.Optimizer, **guard: Any) -> GuardedStep:
        """The step the loop calls with each batch: ``module`` (this engine's :meth:`wrap`, possibly
        inside DDP) run by a :class:`~pyrovae.train.step.GuardedStep` (``guard``: its ``first_step``,
        ``reduce``, ``clip_norm``)."""
        return GuardedStep(module, optimizer, **guard)

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


class JitEngine(Engine):
    """:class:`~pyrovae.infer.traced.TracedObjective`: TorchScript traces, one batch shape per run."""

    name = "jit"
    fixed_shapes = True

    def wrap(self, objective: nn.Module) -> nn.Module:
        return TracedObjective(objective)


class CudaGraphEngine(Engine):
    """The ``inner`` engine's module (``compiled`` by default: fewer, fused kernels to record), run
    by a step recorded in a CUDA graph and replayed (:class:`~pyrovae.train.graphed.GraphedStep`):
    one CUDA device, one process, one batch shape, neither validation nor anomaly detection."""

    name = "cudagraph"
    fixed_shapes = True

    def __init__(self, inner: Engine | None = None):
        self.inner = inner if inner is not None else CompiledEngine()
        if isinstance(self.inner, CudaGraphEngine):
            raise ConfigError(f"the cudagraph engine records another engine's step, not {self.inner!r}")

    def wrap(self, objective: nn.Module) -> nn.Module:
        return self.inner.wrap(objective)

    def require(self, plan: StepPlan) -> None:
        super().require(plan)
        check_recordable(plan.device, plan.processes)
        if plan.validate or plan.anomaly:
            which = "Pyro's validation (--validate)" if plan.validate else "autograd's anomaly detection"
            raise ConfigError(
                f"the cudagraph engine cannot record a step with {which} on (it reads values on the host): "
                "turn it off or use --engine eager"
            )

    def make_step(self, module: nn.Module, optimizer: torch.optim.Optimizer, **guard: Any) -> GuardedStep:
        """A :class:`~pyrovae.train.graphed.GraphedStep` (``guard``: ``first_step``, ``reduce``, ``clip_norm``)."""
        return GraphedStep(module, optimizer, **guard)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inner={self.inner!r})"


#: ``--engine`` names -> engine classes; ``auto`` picks one of them per run (:func:`make_engine`)
ENGINES: dict[str, type[Engine]] = {
    "eager": EagerEngine,
    "compiled": CompiledEngine,
    "jit": JitEngine,
    "cudagraph": CudaGraphEngine,
}


def engine_names() -> tuple[str, ...]:
    """The names ``--engine`` takes: ``auto`` and every registered engine."""
    return ("auto", *ENGINES)


def register_engine(engine: type[Engine]) -> type[Engine]:
    """Make ``--engine NAME`` (``NAME``: the class's :attr:`Engine.name`, set in its body) build
    ``engine()``; returns the class, so it can decorate it. A name already taken is refused."""
    if not (isinstance(engine, type) and issubclass(engine, Engine)):
        raise ConfigError(f"register_engine takes a subclass of pyrovae.train.engines.Engine, got {engine!r}")
    ENGINES[register_name("engine", engine.__dict__.get("name"), engine.__module__)] = engine
    return engine


def make_engine(
    name: str | Engine = "auto", steps: int | None = None, validate: bool = False, anomaly: bool = False
) -> Engine:
    """The engine called ``name`` (one of :func:`engine_names`), or ``name`` itself if it is an :class:`Engine`.

    ``auto`` is ``compiled`` for a run of at least :data:`AUTO_MIN_STEPS` ``steps`` with neither Pyro's
    validation (whose checks a graph cannot replay) nor autograd's anomaly detection on, else ``eager``.
    """
    if isinstance(name, Engine):
        return name
    if name == "auto":
        long_enough = steps is not None and steps >= AUTO_MIN_STEPS
        return CompiledEngine() if long_enough and not validate and not anomaly else EagerEngine()
    if name not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(engine_names())}, got {name!r}")
    return ENGINES[name]()
