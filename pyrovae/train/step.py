"""One optimisation step, in plain torch: ``loss = module(batch); loss.backward(); optimizer.step()``,
with the promise that no non-finite update is ever applied.

The check is made on the device, the way :class:`torch.amp.GradScaler` skips a step: the loss and
one sum per gradient tensor are added up (a NaN or inf anywhere makes the total non-finite), a
sticky device flag records the first non-finite step, and torch's fused Adam reads that flag as its
``found_inf`` and leaves parameters, moments and step counts untouched while it is set. Nothing is
copied to the host per step; the loop reads the flag (one synchronisation) when it checks, and
then raises :class:`NonFiniteLossError` naming the first bad step. On a CPU, where reading costs
nothing, the loop checks after every step; on a GPU every :attr:`GuardedStep.check_every` steps
and before anything is written. The parameters are those of the last finite step either way.

Where the optimizer cannot skip on a device flag (an Adam without ``fused``), the step reads the
flag itself before updating, one synchronisation per step.

Over several processes (``reduce``: the mean over ranks, all-reduced on the device) the check is
made on the step's loss over all ranks, so a non-finite loss on any rank makes every rank skip the
update at the same step: the ranks agree without a host synchronisation of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["GuardedStep", "NonFiniteLossError", "make_adam"]


class NonFiniteLossError(FloatingPointError):
    """The ELBO or a gradient became NaN or infinite; the parameters were not updated with it."""


def make_adam(parameters: Sequence[torch.Tensor] | object, lr: float) -> torch.optim.Adam:
    """:class:`torch.optim.Adam` with ``fused=True`` (all tensors updated by one kernel: 4-5x
    faster than the default per-tensor loop on a CPU, and able to skip a step on a device flag)
    where this torch supports it for the parameters' device, else the default implementation.
    Both compute the same update."""
    parameters = list(parameters)  # type: ignore[call-overload]
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # torch < 2.4 on a CPU, or a device without it
        return torch.optim.Adam(parameters, lr=lr)


class GuardedStep:
    """``loss = module(*batch)``, backward, and an update only while every step so far was finite.

    :param module: returns a differentiable scalar loss (an objective, possibly wrapped by an
        engine or by DDP).
    :param optimizer: steps the parameters; a fused Adam skips on the device flag.
    :param int first_step: steps done before this one (the count the error reports continues it).
    :param reduce: turns this process's loss into the step's loss before the check, e.g. the mean
        over the ranks of a distributed run (:meth:`pyrovae.train.distributed.World.mean`).
    :param float clip_norm: where positive, rescale the gradient (all parameters together) to at most
        this Euclidean norm before the update (:func:`torch.nn.utils.clip_grad_norm_`); a non-finite
        gradient stays non-finite, so the guard still sees it.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        first_step: int = 0,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        clip_norm: float = 0.0,
    ):
        self.module, self.optimizer, self.reduce = module, optimizer, reduce
        self.clip_norm = float(clip_norm)
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        device = self.parameters[0].device if self.parameters else torch.device("cpu")
        self.device_flag = bool(optimizer.defaults.get("fused"))
        #: 1.0 from the first non-finite step on (the fused Adam's ``found_inf``)
        self.bad = torch.zeros((), dtype=torch.float32, device=device)
        self._count = torch.full((), first_step, dtype=torch.int64, device=device)
        self._first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self._first_loss = torch.zeros((), dtype=torch.float64, device=device)
        self._first_loss_bad = torch.zeros((), dtype=torch.bool, device=device)
        #: how often (in steps) a loop should call :meth:`check`: every step where that is free
        self.check_every = 1 if device.type == "cpu" else 100

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        """One step; returns the loss, detached, on the device (not a float: no synchronisation)."""
        loss = self.loss_and_guard(*batch)
        self.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def loss_and_guard(self, *batch: torch.Tensor) -> torch.Tensor:
        """The loss and the gradients, clipped, and the guard's device state brought up to date;
        returns the (reduced) loss, detached. Every tensor of the guard is updated in place, so a
        CUDA graph that records this call (:class:`~pyrovae.train.graphed.GraphedStep`) carries the
        state from one replay to the next."""
        loss = self.module(*batch)
        loss.backward()
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        loss = loss.detach() if self.reduce is None else self.reduce(loss.detach())
        sums = [p.grad.sum() for p in self.parameters if p.grad is not None]
        total = loss.to(torch.float64) + (torch.stack(sums).sum().to(torch.float64) if sums else 0.0)
        bad_now = ~torch.isfinite(total)
        self._count += 1
        newly = bad_now & (self.bad == 0)
        torch.where(newly, self._count, self._first_bad, out=self._first_bad)
        torch.where(newly, loss.to(self._first_loss.dtype), self._first_loss, out=self._first_loss)
        torch.where(newly, ~torch.isfinite(loss), self._first_loss_bad, out=self._first_loss_bad)
        torch.maximum(self.bad, bad_now.to(self.bad.dtype), out=self.bad)
        return loss

    def update(self) -> None:
        """The optimizer's step, unless a step so far was non-finite (read on the device by a fused Adam)."""
        if self.device_flag:
            self.optimizer.found_inf = self.bad  # read by torch's fused Adam (as GradScaler sets it)
            self.optimizer.step()
        elif not bool(self.bad):  # one synchronisation per step
            self.optimizer.step()

    def failed(self) -> tuple[int, str] | None:
        """``None`` while every step was finite, else the first bad step's number (counting from 1
        over the whole run) and what became non-finite. Reads the device flag (a synchronisation)."""
        if not bool(self.bad):
            return None
        step = int(self._first_bad)
        if bool(self._first_loss_bad):
            return step, f"the loss became {float(self._first_loss)}"
        return step, "a gradient became NaN or inf"
