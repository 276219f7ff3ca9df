"""Encoder and decoder networks: plain MLPs whose sizes come from the data and the config
(convolutional ones: :mod:`pyrovae.models.conv`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = [
    "mlp",
    "mlp_body",
    "Encoder",
    "Decoder",
    "ACTIVATIONS",
    "check_activation",
    "check_hidden_dims",
    "loc_and_scale",
]

ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, "elu": nn.ELU}

#: floor added to the encoder's standard deviations so that log(sigma) stays finite
MIN_SCALE = 1e-6


def check_hidden_dims(hidden_dims: Sequence[int]) -> tuple[int, ...]:
    """``hidden_dims`` as a tuple, if it is one or more positive ints (the hidden layer widths)."""
    dims = tuple(hidden_dims)
    if not dims or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in dims):
        raise ConfigError(f"hidden_dims must be positive ints, got {hidden_dims!r}")
    return dims


def check_activation(activation: str) -> type[nn.Module]:
    """The module class of a hidden activation's name, or :class:`ConfigError` naming the choices."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def loc_and_scale(out: torch.Tensor, z_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A Gaussian head's output (``2 * z_dim`` wide) as :math:`(\mu, \sigma)`, with
    :math:`\sigma = \mathrm{softplus}(\cdot) + 10^{-6}` positive by construction."""
    loc, raw_scale = out.split(z_dim, dim=-1)
    return loc, F.softplus(raw_scale) + MIN_SCALE


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "relu") -> nn.Sequential:
    """``Linear -> act -> ... -> Linear``: ``len(hidden_dims)`` hidden layers."""
    body = mlp_body(in_dim, hidden_dims, activation)
    return nn.Sequential(*body, nn.Linear(check_hidden_dims(hidden_dims)[-1], out_dim))


def mlp_body(in_dim: int, hidden_dims: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """``Linear -> act`` for each hidden width: features of width ``hidden_dims[-1]``."""
    act = check_activation(activation)
    dims = (in_dim, *check_hidden_dims(hidden_dims))
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    r"""Amortised posterior parameters: :math:`x \mapsto (\mu_\phi(x), \sigma_\phi(x))`.

    :math:`\sigma = \mathrm{softplus}(\cdot) + 10^{-6}` is positive by construction.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden_dims: Sequence[int] = (400,), activation: str = "relu"):
        super().__init__()
        self.z_dim = z_dim
        self.net = mlp(x_dim, hidden_dims, 2 * z_dim, activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return loc_and_scale(self.net(x), self.z_dim)


class Decoder(nn.Module):
    """:math:`z \\mapsto` the likelihood's parameters (Bernoulli logits or Gaussian mean)."""

    def __init__(self, z_dim: int, x_dim: int, hidden_dims: Sequence[int] = (400,), activation: str = "relu"):
        super().__init__()
        self.net = mlp(z_dim, tuple(reversed(check_hidden_dims(hidden_dims))), x_dim, activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
