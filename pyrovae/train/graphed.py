"""A training step replayed from a CUDA graph: the ``cudagraph`` engine's step.

On a GPU a small VAE's step is mostly waiting: the host launches a few hundred small kernels (the
objective's forward and backward, the guard's sums), each taking longer to launch than to run.
:class:`GraphedStep` records the launches of one step once, in a :class:`torch.cuda.CUDAGraph`,
and then replays them with one call per step:

1. the first ``warmup`` steps run as :class:`~pyrovae.train.step.GuardedStep` runs them, on a side
   stream (so that lazy initialisation — the compiled engine's compiling, cuBLAS's workspaces,
   the optimizer's state — happens before recording, as CUDA graphs require); they are real steps
   of the run;
2. then the loss, the gradients (clipped where asked) and the guard's update
   (:meth:`~pyrovae.train.step.GuardedStep.loss_and_guard`) are recorded once, reading the batch
   from a buffer of fixed shape;
3. every later step copies its batch into that buffer, replays the graph and runs torch's fused
   Adam after it (one launch, which skips the update on the guard's device flag as before).

The noise of each replay comes from torch's CUDA generator, which CUDA graphs advance on every
replay, so each step draws afresh. The gradients live in the graph's memory: they are never set to
``None`` after recording (a replay writes them in place). The optimizer step stays outside the graph,
so learning-rate schedules and callbacks that set ``param_groups[...]["lr"]`` keep working.

What a graph cannot replay is refused before the first step: a device other than CUDA, several
processes (their all-reduce would have to be recorded too), an optimizer without the fused
device flag (it would read the flag on the host), Pyro's validation and autograd's anomaly mode
(both read values on the host); and a batch of another shape is refused when it comes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import torch
from torch import nn

from .._compat import is_validation_enabled
from ..errors import ConfigError
from .step import GuardedStep

__all__ = ["GraphedStep", "GraphBackend", "CudaGraphs", "check_recordable"]


def check_recordable(device: torch.device | str, processes: int = 1) -> None:
    """Refuse, with what to do instead, a run whose step a CUDA graph cannot record: a device
    other than CUDA, or more than one process."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ConfigError(
            f"the cudagraph engine records CUDA graphs, so it needs a CUDA device; got {device}: "
            "use --engine compiled (or eager) there"
        )
    if processes > 1:
        raise ConfigError(
            f"the cudagraph engine runs in one process, got {processes}: use --engine compiled (or eager) with torchrun"
        )


class GraphBackend(Protocol):
    """Where a :class:`GraphedStep` warms up and records: CUDA graphs (:class:`CudaGraphs`) in
    training, a stand-in in tests without a GPU."""

    def warmup_context(self) -> AbstractContextManager[object]:
        """The context in which the warm-up steps run (a side stream)."""

    def capture(self, record: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, Callable[[], None]]:
        """Record ``record()`` once; return its output tensor and the function that replays it
        (each replay rewrites that tensor in place)."""


class CudaGraphs:
    """:class:`GraphBackend` of one CUDA device: a side stream to warm up on, :class:`torch.cuda.CUDAGraph`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.side = torch.cuda.Stream(device)

    def warmup_context(self) -> AbstractContextManager[object]:
        return _on_side_stream(self.side, self.device)

    def capture(self, record: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, Callable[[], None]]:
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = record()
        return out, graph.replay


@contextmanager
def _on_side_stream(side: torch.cuda.Stream, device: torch.device) -> Iterator[None]:
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream(device).wait_stream(side)


class GraphedStep(GuardedStep):
    """:class:`~pyrovae.train.step.GuardedStep` whose loss, gradients and guard are replayed from
    a CUDA graph after ``warmup`` ordinary steps (``guard``: GuardedStep's keyword arguments
    ``first_step``, ``reduce``, ``clip_norm``; ``backend`` is for tests: :class:`CudaGraphs` of
    the parameters' device by default).

    The loss returned for each step is a copy of the graph's output, so a loop may keep it
    until it checks (no synchronisation per step).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        warmup: int = 3,
        backend: GraphBackend | None = None,
        **guard: Any,
    ):
        # first_step, reduce, clip_norm: GuardedStep's; a graph records the guard's device form
        super().__init__(module, optimizer, on_host=False, **guard)
        # (the graph records the step's loss and backward pass as autograd runs them: one launch a
        # step either way, so a joint graph of loss and gradients would save nothing here)
        self.together = None
        if backend is None:
            check_recordable(self.bad.device)
        if self.reduce is not None:
            raise ConfigError(
                "the cudagraph engine records one process's step, so GraphedStep takes no reduce: use --engine "
                "compiled (or eager) with torchrun"
            )
        if not self.device_flag:
            raise ConfigError(
                "the cudagraph engine needs an optimizer that skips a step on a device flag (torch's fused "
                f"Adam); got {type(optimizer).__name__} without fused=True"
            )
        if is_validation_enabled() or torch.is_anomaly_enabled():
            which = "Pyro's validation" if is_validation_enabled() else "autograd's anomaly detection"
            raise ConfigError(
                f"the cudagraph engine cannot record a step with {which} on (it reads values on the host): "
                "turn it off or use --engine eager"
            )
        if warmup < 1:
            raise ConfigError(
                f"warmup must be at least 1 step (lazy initialisation comes before recording), got {warmup}"
            )
        self.warmup = int(warmup)
        self.backend = backend if backend is not None else CudaGraphs(self.bad.device)
        self._warmed = 0
        self._inputs: tuple[torch.Tensor, ...] | None = None
        self._loss: torch.Tensor | None = None
        self._replay: Callable[[], None] | None = None

    @property
    def recorded(self) -> bool:
        """Whether the graph has been recorded (steps after the warm-up are replays)."""
        return self._replay is not None

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        if self._replay is None:
            if self._warmed < self.warmup:
                self._warmed += 1
                with self.backend.warmup_context():
                    return super().__call__(*batch)
            self._record(batch)
        assert self._inputs is not None and self._loss is not None and self._replay is not None
        if len(batch) != len(self._inputs) or any(
            b.shape != i.shape or b.dtype != i.dtype for b, i in zip(batch, self._inputs, strict=False)
        ):
            found = [tuple(b.shape) for b in batch]
            expected = [tuple(i.shape) for i in self._inputs]
            raise ConfigError(
                f"the cudagraph engine replays a step recorded for batches of shape {expected}, got {found}: "
                "every batch of a run must have one shape (the loop drops an epoch's last, smaller batch)"
            )
        for buffer, x in zip(self._inputs, batch, strict=True):
            buffer.copy_(x, non_blocking=True)
        self._replay()
        self.update()
        return self._loss.clone()

    def _record(self, batch: tuple[torch.Tensor, ...]) -> None:
        self._inputs = tuple(x.detach().clone() for x in batch)
        self.optimizer.zero_grad(set_to_none=True)  # the recorded backward allocates the gradients

        def record() -> torch.Tensor:
            return self.loss_and_guard(*self._inputs)

        try:
            self._loss, self._replay = self.backend.capture(record)
        except RuntimeError as error:
            raise ConfigError(
                f"the cudagraph engine could not record this step ({str(error).splitlines()[0]}): something in "
                "the model, guide or objective synchronises with the host; use --engine compiled"
            ) from error
