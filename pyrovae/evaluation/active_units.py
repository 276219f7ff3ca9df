r"""Active latent units (Burda et al. 2015, section 5.2), and the checks of evaluation inputs."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..data import Dataset, validate_data
from ..errors import ConfigError, positive_int
from ..models import VAE

__all__ = ["active_units", "ActiveUnits", "active_units_from_locs", "evaluation_input"]


def evaluation_input(vae: VAE, x: torch.Tensor | Dataset) -> torch.Tensor:
    """``x`` (or a data set's test split) on the model's device and dtype, checked against its likelihood."""
    if isinstance(x, Dataset):
        x = x.test
    if not torch.is_tensor(x):
        raise ConfigError(f"x must be a tensor or a pyrovae Dataset, got {type(x).__name__}")
    x = x.to(device=vae.device, dtype=vae.dtype)
    validate_data(x, vae.x_dim, vae.likelihood.name, "x")
    return x


class ActiveUnits(NamedTuple):
    r"""``count`` of latent coordinates with :math:`\mathrm{Cov}_x(\mathbb E_q[z_j]) >` ``threshold``,
    and ``variance``, that covariance's diagonal (shape ``(z_dim,)``)."""

    count: int
    variance: torch.Tensor
    threshold: float


def active_units_from_locs(locs: torch.Tensor, threshold: float) -> ActiveUnits:
    variance = locs.double().var(0, unbiased=False) if locs.shape[0] > 1 else torch.zeros(locs.shape[1]).double()
    return ActiveUnits(int((variance > threshold).sum()), variance.cpu(), threshold)


@torch.no_grad()
def active_units(vae: VAE, x: torch.Tensor | Dataset, threshold: float = 0.01, batch_size: int = 1000) -> ActiveUnits:
    r"""Active latent units (Burda et al. 2015, section 5.2).

    .. math::

        A_j = \mathrm{Cov}_{x}\big(\mathbb E_{q_\phi(z|x)}[z_j]\big) > \delta, \qquad \delta = 0.01,

    the variance over the data points of the encoder's mean :math:`\mu_\phi(x)_j`, taken under the
    empirical distribution of ``x`` (dividing by :math:`N`). A unit whose posterior mean does not
    move with :math:`x` carries no information about it.

    :param x: data, shape ``(N, x_dim)``, or a :class:`~pyrovae.data.Dataset` (its test set).
    """
    x = evaluation_input(vae, x)
    locs = torch.cat([vae.encoder(batch)[0] for batch in x.split(positive_int("batch_size", batch_size))])
    return active_units_from_locs(locs, threshold)
