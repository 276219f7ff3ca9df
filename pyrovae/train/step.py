"""One optimisation step, in plain torch: ``loss = module(batch); loss.backward(); optimizer.step()``,
with the promise that no non-finite update is ever applied.

Where the module computes its loss, gradients and their norm in one call (the ``compiled``
engine's :meth:`~pyrovae.infer.compiled.CompiledObjective.loss_and_gradients`: one compiled
graph, no autograd engine at run time), the step takes them from that call instead of the first
two statements; the check below is the same.

The check adds up the loss and one sum per gradient tensor: a NaN or inf anywhere makes the total
non-finite. Where it is made depends on what reading a value costs:

- **On a GPU** it stays on the device, the way :class:`torch.amp.GradScaler` skips a step: a sticky
  device flag records the first non-finite step, and torch's fused Adam reads that flag as its
  ``found_inf`` and leaves parameters, moments and step counts untouched while it is set. Nothing is
  copied to the host per step; the loop reads the flag (one synchronisation) every
  :attr:`GuardedStep.check_every` steps and before anything is written. A CUDA graph can record this
  form of the step (:mod:`pyrovae.train.graphed`).
- **On a CPU**, where reading a value costs nothing, the check is made on the host at every step
  and the update is skipped there: half the operations of the device form, which on a CPU are paid
  for one by one. It reads the loss and the gradient norm the step computes anyway (for
  ``grad_norm``) rather than summing every gradient tensor again: a norm no larger than
  :attr:`GuardedStep.safe_norm` proves every gradient finite and every sum of them finite too, so
  the sums are taken only where the norm is larger or not finite (a float32 norm overflows to inf
  for gradients above about 1e19, whose sums may well be finite), and the verdict is always the
  sums' (:meth:`GuardedStep.gradients_finite`).

Either way the loop raises :class:`NonFiniteLossError` naming the first bad step, and the
parameters are those of the last finite step. Where the optimizer cannot skip on a device flag (an
Adam without ``fused``), the device form reads the flag itself before updating, one
synchronisation per step.

Over several processes (``reduce``: the mean over ranks, all-reduced on the device) the check is
made on the step's loss over all ranks (and on gradients the ranks share), so a non-finite loss on
any rank makes every rank skip the update at the same step: the ranks agree without a host
synchronisation of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..infer.joint_graph import gradient_norm_of

__all__ = ["GuardedStep", "NonFiniteLossError", "make_adam", "gradient_norm"]


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


def gradient_norm(parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    """The Euclidean norm of all the parameters' gradients together (0 where none has one), on
    their device, as :func:`torch.nn.utils.clip_grad_norm_` measures it."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    first = grads[0]
    if first.device.type == "cpu" and all(g.device == first.device and g.dtype == first.dtype for g in grads):
        # on a CPU torch's foreach norm takes these norms one by one: the same numbers, without the
        # regrouping of the tensors by device and dtype that costs as much as the norms at small sizes
        with torch.no_grad():
            return gradient_norm_of(grads)
    total = getattr(torch.nn.utils, "get_total_norm", None)  # (torch >= 2.6: one fused kernel)
    if total is not None:
        return total(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


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
    :param on_host: check each step on the host (``True``) or keep the check on the device
        (``False``); ``None``: on the host where the parameters are on a CPU.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        first_step: int = 0,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        clip_norm: float = 0.0,
        on_host: bool | None = None,
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
        #: whether each step is checked on the host (else on the device)
        self.on_host = device.type == "cpu" if on_host is None else bool(on_host)
        #: the host form's record: (first bad step, what became non-finite), or None
        self._host_failure: tuple[int, str] | None = None
        self._host_count = int(first_step)
        #: how often (in steps) a loop should call :meth:`failed`: every step where that is free
        self.check_every = 1 if self.on_host or device.type == "cpu" else 100
        #: the sum of the steps' gradient norms (before clipping) and their count, kept on the device
        #: (in the host form, as Python floats: the same float64 additions, with no tensor operation)
        self._norms = torch.zeros(2, dtype=torch.float64, device=device)
        self._host_norms = [0.0, 0]
        #: a gradient norm at most this large proves every gradient element finite and every
        #: per-tensor sum of them finite: each sum is at most sqrt(elements) times the norm, kept a
        #: factor 4 below the dtype's largest value (float32: about 3.8e34 for this model's 313,600-element weights)
        floats = [p for p in self.parameters if p.is_floating_point()]
        largest = max((p.numel() for p in floats), default=1)
        self.safe_norm = min((torch.finfo(p.dtype).max for p in floats), default=0.0) / (4 * math.sqrt(largest))
        #: the module's loss, gradients and their norm in one call (``module.loss_and_gradients``, as
        #: :meth:`pyrovae.infer.compiled.CompiledObjective.loss_and_gradients`), where it has one, the
        #: step's loss is not reduced over processes and the optimizer steps exactly the module's
        #: parameters with gradients (the norm is theirs); else ``None``
        self.together: Callable[..., tuple[torch.Tensor, torch.Tensor] | None] | None = None
        together = getattr(module, "loss_and_gradients", None)
        if callable(together) and reduce is None:
            own = {id(p) for p in module.parameters() if p.requires_grad}
            if own == {id(p) for p in self.parameters}:
                self.together = together

    def __call__(self, *batch: torch.Tensor) -> torch.Tensor:
        """One step; returns the loss, detached, on the device (not a float: no synchronisation)."""
        loss = self.loss_and_guard(*batch)
        self.update()
        # (what zero_grad(set_to_none=True) does, without its profiling label)
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        return loss

    def loss_and_guard(self, *batch: torch.Tensor) -> torch.Tensor:
        """The loss and the gradients, clipped, and the guard brought up to date; returns the
        (reduced) loss, detached. In the device form every tensor of the guard is updated in place,
        so a CUDA graph that records this call (:class:`~pyrovae.train.graphed.GraphedStep`) carries
        the state from one replay to the next."""
        found = self.together(*batch) if self.together is not None else None
        if found is None:
            loss = self.module(*batch)
            loss.backward()
            loss = loss.detach()
            norm = None
        else:
            loss, norm = found
        if self.clip_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        elif norm is None:
            norm = gradient_norm(self.parameters)
        loss = loss if self.reduce is None else self.reduce(loss)
        if self.on_host:
            value = float(norm)
            self._host_norms[0] += value
            self._host_norms[1] += 1
            self._check_on_host(loss, value)
        else:
            self._norms[0].add_(norm.to(torch.float64))  # (in place: a recorded graph carries them on)
            self._norms[1].add_(1.0)
            self._check_on_device(loss)
        return loss

    def grad_norms(self) -> tuple[float, int]:
        """The sum of the gradient norms of the steps since :meth:`set_grad_norms` and their count
        (one synchronisation)."""
        if self.on_host:
            return self._host_norms[0], self._host_norms[1]
        total, steps = self._norms.tolist()
        return total, int(steps)

    def set_grad_norms(self, total: float = 0.0, steps: int = 0) -> None:
        """Start the sum of gradient norms at ``total`` over ``steps`` steps (0: a new epoch's)."""
        if self.on_host:
            self._host_norms = [float(total), int(steps)]
            return
        self._norms[0].fill_(total)
        self._norms[1].fill_(steps)

    def _gradient_sums(self) -> list[torch.Tensor]:
        return [p.grad.sum() for p in self.parameters if p.grad is not None]

    def gradients_finite(self, norm: float) -> bool:
        """Whether the sum (in float64) of the per-tensor sums of the gradients is finite, the guard's
        test of a gradient, given their norm ``norm`` (before clipping, which only shrinks them): at
        once where ``norm`` is at most :attr:`safe_norm`, else by the sums themselves."""
        if norm <= self.safe_norm:  # (False for a NaN norm)
            return True
        return math.isfinite(sum(s.item() for s in self._gradient_sums()))

    def _check_on_host(self, loss: torch.Tensor, norm: float) -> None:
        """Read the loss and test the gradients by their norm ``norm`` (free on a CPU); remember the first bad step."""
        self._host_count += 1
        if self._host_failure is not None:
            return
        value = float(loss)
        if not math.isfinite(value):
            self._host_failure = (self._host_count, f"the loss became {value}")
        elif not self.gradients_finite(norm):
            self._host_failure = (self._host_count, "a gradient became NaN or inf")

    def _check_on_device(self, loss: torch.Tensor) -> None:
        """Bring the sticky device flag and the first bad step's record up to date, with no
        synchronisation and no new tensors kept between steps."""
        sums = self._gradient_sums()
        total = loss.to(torch.float64) + (torch.stack(sums).sum().to(torch.float64) if sums else 0.0)
        bad_now = ~torch.isfinite(total)
        self._count += 1
        newly = bad_now & (self.bad == 0)
        torch.where(newly, self._count, self._first_bad, out=self._first_bad)
        torch.where(newly, loss.to(self._first_loss.dtype), self._first_loss, out=self._first_loss)
        torch.where(newly, ~torch.isfinite(loss), self._first_loss_bad, out=self._first_loss_bad)
        torch.maximum(self.bad, bad_now.to(self.bad.dtype), out=self.bad)

    def update(self) -> None:
        """The optimizer's step, unless a step so far was non-finite (in the device form with a fused
        Adam, read by the optimizer on the device)."""
        if self.on_host:
            if self._host_failure is None:
                self.optimizer.step()
        elif self.device_flag:
            self.optimizer.found_inf = self.bad  # read by torch's fused Adam (as GradScaler sets it)
            self.optimizer.step()
        elif not bool(self.bad):  # one synchronisation per step
            self.optimizer.step()

    def failed(self) -> tuple[int, str] | None:
        """``None`` while every step was finite, else the first bad step's number (counting from 1
        over the whole run) and what became non-finite. The device form reads its flag (a
        synchronisation)."""
        if self.on_host:
            return self._host_failure
        if not bool(self.bad):
            return None
        step = int(self._first_bad)
        if bool(self._first_loss_bad):
            return step, f"the loss became {float(self._first_loss)}"
        return step, "a gradient became NaN or inf"
