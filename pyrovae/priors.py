r"""Priors :math:`p(z)` over the latent code.

A prior is a :class:`torch.nn.Module` whose call ``prior(batch_shape)`` returns a Pyro
distribution over ``z`` with ``event_shape == (z_dim,)`` and the requested ``batch_shape``.
Its tensors are buffers or parameters, so ``vae.to(device, dtype)`` moves them with the
rest of the model. Any module with that call signature plugs into :class:`pyrovae.VAE`.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["Prior", "StandardNormalPrior", "make_prior", "PRIORS"]

PRIORS = ("normal",)


class Prior(nn.Module):
    """Base class of priors over a ``z_dim``-dimensional latent code."""

    def __init__(self, z_dim: int):
        super().__init__()
        if not (isinstance(z_dim, int) and z_dim > 0):
            raise ValueError(f"z_dim must be a positive int, got {z_dim!r}")
        self.z_dim = z_dim

    def forward(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> dist.TorchDistribution:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}"


class StandardNormalPrior(Prior):
    r""":math:`p(z) = \mathcal N(0, I)` (seed eq. 17). Fixed: it has no parameters."""

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self, batch_shape: torch.Size | tuple[int, ...] = ()) -> dist.TorchDistribution:
        shape = tuple(batch_shape) + (self.z_dim,)
        return dist.Normal(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)


def make_prior(prior: str | Prior, z_dim: int) -> Prior:
    """Build a prior by name, or check and return a prior module given by the user."""
    if isinstance(prior, nn.Module):
        if getattr(prior, "z_dim", z_dim) != z_dim:
            raise ValueError(f"prior has z_dim={prior.z_dim}, the VAE has z_dim={z_dim}")
        return prior
    if prior == "normal":
        return StandardNormalPrior(z_dim)
    raise ValueError(f"prior must be one of {PRIORS} or a Prior module, got {prior!r}")
