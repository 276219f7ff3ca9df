"""Each rank's share of a global batch, with the noise of the whole batch drawn on every rank
(:class:`GlobalBatchNoise`), so that several processes make the run one process would
(:class:`ShardedObjective`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._compat import Messenger
from ..errors import ConfigError

__all__ = ["GlobalBatchNoise", "ShardedObjective"]


class GlobalBatchNoise(Messenger):
    r"""Draw each latent sample site in the data plate with the noise of the whole global batch.

    In one process the guide's site :math:`z \sim \mathcal N(\mu, \sigma^2)` over a batch of
    :math:`B` rows draws :math:`\epsilon` of shape ``(..., B, z_dim)`` (``B`` at the plate's
    dimension) from torch's generator and returns :math:`\mu + \sigma\epsilon`. Inside this messenger
    a rank holding rows ``start:stop`` of those :math:`B` draws the same :math:`\epsilon` (the same
    shape, so the same numbers, and the generator left where one process leaves it) and keeps rows
    ``start:stop`` of it. With ``start=0, stop=total`` the site is drawn exactly as without it.

    Sites already given a value (observed, or replayed from the guide) and sites outside the plate
    (drawn alike by every rank) are left as they are; a fresh draw in the plate from anything but a
    (possibly ``Independent``) Normal is refused, since its noise could not be split.

    :param int start: the first of this rank's rows in the global batch.
    :param int stop: one past its last.
    :param int total: the global batch's rows.
    :param str plate: the name of the data plate (``"data"`` in :class:`pyrovae.VAE`).
    """

    def __init__(self, start: int, stop: int, total: int, plate: str = "data"):
        super().__init__()
        if not 0 <= start <= stop <= total:
            raise ConfigError(f"rows {start}:{stop} are not rows of a batch of {total}")
        self.start, self.stop, self.total, self.plate = start, stop, total, plate

    def _pyro_sample(self, msg: dict[str, Any]) -> None:  # Pyro's messenger protocol for sample sites
        if msg["value"] is not None or msg["is_observed"] or msg["done"]:
            return
        frame = next((f for f in msg["cond_indep_stack"] if f.name == self.plate), None)
        if frame is None:
            return
        fn = msg["fn"]
        base = fn.base_dist if isinstance(fn, torch.distributions.Independent) else fn
        if not isinstance(base, torch.distributions.Normal) or msg["args"] or msg["kwargs"]:
            raise ConfigError(
                f"training on several processes draws the noise of site {msg['name']!r} for the whole global batch, "
                f"which needs a Normal guide distribution; found {type(base).__name__}"
            )
        dim = len(fn.batch_shape) + frame.dim
        shape = list(base.loc.shape)
        if shape[dim] != self.stop - self.start:
            raise ConfigError(
                f"site {msg['name']!r} has {shape[dim]} rows in plate {self.plate!r}, expected this rank's "
                f"{self.stop - self.start}"
            )
        shape[dim] = self.total
        eps = _standard_normal(shape, base.loc.dtype, base.loc.device).narrow(dim, self.start, self.stop - self.start)
        msg["value"] = base.loc + eps * base.scale


def _standard_normal(shape: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Standard normal noise drawn as torch's ``Normal.rsample`` draws it (the same numbers from
    the same generator state); ``torch.normal`` while a trace records it."""
    if torch.jit.is_tracing():
        zeros = torch.zeros(shape, dtype=dtype, device=device)
        return torch.normal(zeros, torch.ones_like(zeros))
    return torch.empty(shape, dtype=dtype, device=device).normal_()


class ShardedObjective(nn.Module):
    r"""A rank's loss on its rows of a global batch: ``objective(rows)`` under
    :class:`GlobalBatchNoise`, weighted so that the mean over ranks is the global batch's loss.

    ``forward(rows)`` takes this rank's equal share of a batch of ``len(rows) * size`` rows;
    ``forward(rows, (start, total, owned))`` rows ``start:start + len(rows)`` of a batch of
    ``total`` rows, of which this rank owns ``owned`` (0 for a placeholder row), with the weight
    :math:`w_r = W \cdot owned / total` (see :mod:`pyrovae.train.distributed`).
    """

    def __init__(self, objective: nn.Module, world: Any):
        super().__init__()
        self.objective = objective
        self.rank, self.size = world.rank, world.size

    def forward(self, rows: torch.Tensor, layout: tuple[int, int, int] | None = None) -> torch.Tensor:
        count = rows.shape[0]
        start, total, owned = layout if layout is not None else (self.rank * count, self.size * count, count)
        with GlobalBatchNoise(start, start + count, total):
            loss = self.objective(rows)
        if owned * self.size == total:
            return loss
        weigh = getattr(self.objective, "weigh", None)  # (what the objective records, weighted as its loss)
        if weigh is not None:
            weigh(owned * self.size / total)
        return loss * (owned * self.size / total)
