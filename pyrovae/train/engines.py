r"""Engines: how the loss of a training step is computed (``--engine``), independent of what is
estimated (``--elbo``).

An engine wraps an objective module (:class:`~pyrovae.infer.objective.Objective`, ``loss =
objective(x)``) into the module the training loop calls; every engine computes the same loss and
gradients on the same draws, so it changes only the time a step takes:

============  ==================================================================================
``eager``     the objective as it is: model and guide run as Pyro programs every step.
``compiled``  :class:`~pyrovae.infer.compiled.CompiledObjective`: the forward pass recorded once
              per batch shape, and (in a step of one process) recorded again with its backward
              pass as one graph of the loss, the gradients and their norm, compiled by
              :func:`torch.compile` (inductor); seconds of compiling per shape, then faster steps.
``jit``       :class:`~pyrovae.infer.traced.TracedObjective`: the forward pass traced once per batch shape by
              :func:`torch.jit.trace` (TorchScript, deprecated by torch 2.13 but still shipped);
              needs every batch of a run to have one shape, so the loop drops the last, smaller
              batch of each epoch.
``cudagraph`` the ``compiled`` objective, with the whole step's loss, gradients and guard recorded
              once in a CUDA graph and replayed (:class:`~pyrovae.train.graphed.GraphedStep`): one
              launch per step instead of hundreds; CUDA only, one process, one batch shape per
              run.
``auto``      ``compiled`` where a run is long enough to repay compiling and nothing forbids it
              (validation, anomaly detection), else ``eager`` (:func:`compile_pays`).
============  ==================================================================================

``auto`` never picks ``jit`` (it drops each epoch's last, smaller batch, so the run would see other
data than the eager one; and TorchScript is deprecated) nor ``cudagraph`` (not yet measured on a
GPU). Its rule on a CPU, :func:`compile_pays`: compile when the run's steps times the time a compiled
step saves, :data:`AUTO_SAVING_MS` (0.7 ms + 1.6 us per row of the batch), reach
:data:`AUTO_COMPILE_SECONDS` (4 s). The measurements behind it, for ``--elbo meanfield`` on the
784-400-50 MLP (Fashion-MNIST, fused Adam), on this project's 2-core x86-64 CPU (torch 2.13):

- per step, eager minus compiled, from ``python benchmarks/throughput.py --breakdown-batches
  32,128,256 --rounds 7`` at f9337b6 (2 torch threads, median of 7 rounds, the committed
  ``benchmarks/results/throughput.md``): 0.74 ms at batch 32 (4.75 against 4.01 ms), 0.80 ms at
  128 (4.97 / 4.17), 1.27 ms at 256 (10.62 / 9.35) and 2.33 ms at 1024 (27.11 / 24.78): the line
  above within 0.2 ms at each;
- the same comparison re-checked at bb6ee2c on the machine shared with other jobs (times about
  twice the quiet ones), by the CPU time of the training thread (``time.thread_time`` around
  ``fit``'s epochs; one torch thread; 7 alternating rounds of 2-epoch runs on 4,096 rows): compiled
  against eager 5.43 / 7.24 ms at batch 32, 8.55 / 11.43 at 128, 12.85 / 16.14 at 256 and
  42.0 / 51.2 at 1024, the compiled step 18-25% shorter at each (``jit``: 6.04, 10.93, 13.89
  and 56.5 ms, between the two or behind both); and, the same way at 82d1215, beside the
  hand-written step with the fused Adam (``hand-fused`` of the benchmark): compiled against
  hand-fused 3.06 / 3.11 ms at batch 32, 7.83 / 7.96 at 128, 13.17 / 14.62 at 256 and 37.7 / 42.3
  at 1024 (eager 4.11, 16.69 and 50.2 ms at 32, 256 and 1024). With one torch thread the compiled
  step saves more than the line above, taken with two, says: the rule errs towards eager;
- compiling the two graphs of a run (the batch and the last, smaller one): 19.5 s with an empty
  inductor cache and 3.2-3.5 s with a warm one (README, Performance, at af11453).
- re-checked in ``benchmarks/results/throughput.md`` at 9d5ec71 (a 2-core Intel Xeon with AVX-512,
  one torch thread, medians of 7 rounds): eager minus compiled 0.82 ms at batch 32 (3.09 / 2.27),
  0.97 at 128 (5.39 / 4.43), 1.12 at 256 (8.54 / 7.43) and 4.74 at 1024 (30.49 / 25.75), above
  the line at each (at batch 256 by 0.01 ms), and a first epoch 0.38-0.47 s longer than the timed
  one (both graphs compiled, warm cache): the rule still errs towards eager, if barely at 256.
- re-checked in ``benchmarks/results/throughput.md`` at 9f7d394, where the compiled step takes
  its loss, gradients and norm from one graph (:mod:`pyrovae.infer.joint_graph`) launched from
  C++ (the same machine and settings): eager minus compiled 1.19 ms at batch 32 (3.09 / 1.89),
  1.40 at 128 (5.20 / 3.80), 1.53 at 256 (8.19 / 6.66) and 4.34 at 1024 (26.29 / 21.95), above
  the line at each, and a first epoch 0.64-0.96 s longer than the timed one (recording the
  joint graph and loading its compiled code; warm cache): the rule errs further towards eager.
  (The runs before it: at c1c920d, 0.78, 1.15, 1.30 and 3.76 ms; at 035cb4a on a slower machine
  of the same kind, 0.90, 1.20, 1.32 and 5.88 ms; at 9e7603a on a 2-core AMD EPYC, 2.30, 2.09,
  4.43 and 9.40 ms, and 1.2-1.8 s of compiling.)

So the default Fashion-MNIST run (30 epochs of 60,000 rows) compiles at batch 32 (56,250 steps,
about 42 s saved), 128 (14,070 steps, 12.6 s), 256 (7,050 steps, 7.8 s) and 1024 (1,770 steps,
4.1 s), and a run of 2 epochs at batch 128 (938 steps, 0.85 s) stays eager. On other devices,
where nothing has been measured yet, and for objectives other than :data:`AUTO_MEASURED_ELBOS`,
``auto`` compiles runs of at least :data:`AUTO_MIN_STEPS` steps; except ``infovae`` on a CPU from
:data:`AUTO_INFOVAE_EAGER_ROWS` (768) codes a step (:func:`eager_step_faster`), where the eager
step's MMD goes through the compiled tiles of :mod:`~pyrovae.models.mmd_tiles` and the compiled
engine's recorded MMD is slower: in ``benchmarks/results/throughput.md`` (9f7d394, a 2-core Intel
Xeon with AVX-512, one torch thread, medians of 7 rounds, ``--elbos
meanfield,infovae,compiled-meanfield,compiled-infovae``), the compiled ``infovae`` step took 36.69
ms at batch 1024 against 33.41 ms eager, and 4.04 ms at batch 128 against 6.12 ms eager (1.94 /
3.49 at 32, 7.32 / 9.91 at 256); around the switch (``benchmarks/results/infovae_rule/``, 752e6a5,
5 rounds, ``--batch-sizes 512,640,768,1024``), compiled 14.15 against eager 15.78 ms at batch 512
and 18.35 against 19.75 ms at 640, eager 22.13 against compiled 22.46 ms at 768 and 30.99 against
34.68 ms at 1024. (Before the compiled step took its gradients from one graph, at 9388b1b, the
eager step was already the faster one at 512: 17.34 against 18.94 ms.)

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
from ..models import mmd_tiles
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
    "AUTO_SAVING_MS",
    "AUTO_COMPILE_SECONDS",
    "AUTO_MEASURED_ELBOS",
    "compile_pays",
    "eager_step_faster",
    "AUTO_INFOVAE_EAGER_ROWS",
    "make_engine",
]

#: ``auto`` on a CPU: the milliseconds a ``compiled`` step saves over an ``eager`` one, estimated as
#: ``AUTO_SAVING_MS[0] + AUTO_SAVING_MS[1] * batch_size`` (the 784-400-50 MLP; see the module docstring)
AUTO_SAVING_MS = (0.7, 0.0016)
#: ``auto`` on a CPU compiles when the steps' estimated saving is at least this many seconds: what
#: compiling a run's two graphs costs with a warm inductor cache (3.2-3.5 s), with a margin; a cold
#: cache (a machine's first compile, 19.5 s) is paid once
AUTO_COMPILE_SECONDS = 4.0
#: ``auto`` on other devices (no figures measured there yet), and for objectives other than
#: :data:`AUTO_MEASURED_ELBOS`, compiles a run of at least this many steps
AUTO_MIN_STEPS = 10_000
#: ``auto`` on a CPU keeps ``infovae`` eager from this many codes a step (batch size times
#: particles), where its eager MMD takes the compiled tiles and its eager step is the faster one
#: (:func:`eager_step_faster`; the module docstring has the measurement)
AUTO_INFOVAE_EAGER_ROWS = 768
#: the objectives (``--elbo``) whose compiled and eager steps were measured for the rule on a CPU
#: (the others fall back on :data:`AUTO_MIN_STEPS`)
AUTO_MEASURED_ELBOS = ("meanfield", "trace")


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


def compile_pays(steps: int | None, batch_size: int | None = None, device: torch.device | str | None = None) -> bool:
    """Whether compiling repays itself over a run of ``steps`` steps of ``batch_size`` rows on
    ``device``: on a CPU (or an unknown device) with the batch size known, when ``steps`` times
    :data:`AUTO_SAVING_MS` at that batch size reach :data:`AUTO_COMPILE_SECONDS`; otherwise when
    ``steps`` reach :data:`AUTO_MIN_STEPS` (see the module docstring for the measurements)."""
    if steps is None:
        return False
    on_cpu = device is None or torch.device(device).type == "cpu"
    if not on_cpu or batch_size is None:
        return steps >= AUTO_MIN_STEPS
    saving_ms = AUTO_SAVING_MS[0] + AUTO_SAVING_MS[1] * batch_size
    return steps * saving_ms / 1000 >= AUTO_COMPILE_SECONDS


def eager_step_faster(elbo: str, rows: int, device: torch.device | str | None = None) -> bool:
    """Whether the eager step of ``--elbo elbo`` is known to beat the compiled one for ``rows`` codes
    a step (batch size times particles) on ``device``: ``infovae`` on a CPU from
    :data:`AUTO_INFOVAE_EAGER_ROWS` codes, where its MMD takes the compiled tiles of
    :mod:`~pyrovae.models.mmd_tiles` (codes and prior draws together at least
    :data:`~pyrovae.models.mmd_tiles.MIN_ROWS`), which the compiled engine's recorded MMD does not
    (see the module docstring for the measurement)."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    tiles = mmd_tiles.MIN_ROWS is not None and 2 * rows >= mmd_tiles.MIN_ROWS
    return elbo == "infovae" and on_cpu and tiles and rows >= AUTO_INFOVAE_EAGER_ROWS


def make_engine(
    name: str | Engine = "auto",
    steps: int | None = None,
    validate: bool = False,
    anomaly: bool = False,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    eager_faster: bool = False,
) -> Engine:
    """The engine called ``name`` (one of :func:`engine_names`), or ``name`` itself if it is an :class:`Engine`.

    ``auto`` is ``compiled`` for a run whose ``steps`` (of ``batch_size`` rows, on ``device``) repay
    compiling (:func:`compile_pays`) with neither Pyro's validation (whose checks a graph cannot
    replay) nor autograd's anomaly detection on, and whose eager step is not known to be the faster
    (``eager_faster``: :func:`eager_step_faster`), else ``eager``.
    """
    if isinstance(name, Engine):
        return name
    if name == "auto":
        pays = compile_pays(steps, batch_size, device) and not eager_faster
        return CompiledEngine() if pays and not validate and not anomaly else EagerEngine()
    if name not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(engine_names())}, got {name!r}")
    return ENGINES[name]()
