r"""Observation models :math:`p_\theta(x|z)`: Bernoulli (eq. 13) and Gaussian (eq. 14).

Each likelihood is a small :class:`torch.nn.Module` with two faces:

- :meth:`Likelihood.distribution` builds the Pyro distribution used at the observation site
  ``"x"`` of :meth:`pyrovae.VAE.model`;
- :meth:`Likelihood.log_prob` evaluates the same density written out by hand (eq. 13 / 14),
  used by :func:`pyrovae.closed_form_elbo`.

The decoder's raw output is interpreted by the likelihood: logits for the Bernoulli, the mean
:math:`\mu` for the Gaussian.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = [
    "bernoulli_log_likelihood",
    "gaussian_log_likelihood",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "make_likelihood",
    "LIKELIHOODS",
]

LIKELIHOODS = ("bernoulli", "gaussian")


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    r"""Multivariate Bernoulli log-likelihood, eq. 13, in logits form.

    .. math::

        \log p_\theta(x|z) = \sum_{k=1}^{d} x_k \log a_k + (1 - x_k) \log(1 - a_k)
            = -\mathrm{BCE}(x, a), \qquad a = \mathrm{sigmoid}(\ell).

    Using :math:`\log a = \ell - \mathrm{softplus}(\ell)` and
    :math:`\log(1 - a) = -\mathrm{softplus}(\ell)` the sum becomes
    :math:`\sum_k x_k \ell_k - \mathrm{softplus}(\ell_k)`, which is finite for every finite
    logit (no :math:`\log 0` when the sigmoid saturates).

    :param torch.Tensor x: observations in :math:`\{0, 1\}`, shape ``(..., d)``.
    :param torch.Tensor logits: decoder logits :math:`\ell`, broadcastable to ``x``.
    :returns: log-likelihood summed over the last dimension, shape ``(...)``.
    """
    return (x * logits - F.softplus(logits)).sum(-1)


def gaussian_log_likelihood(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""Diagonal Gaussian log-likelihood, eq. 14.

    .. math::

        \log p_\theta(x|z) = -\frac{d}{2}\log(2\pi\sigma^2) - \frac{1}{2\sigma^2}\lVert x-\mu\rVert^2

    written for a per-coordinate :math:`\sigma_k` (a scalar :math:`\sigma` is the special case
    of eq. 14): :math:`-\sum_k \big[\tfrac12\log 2\pi + \log\sigma_k + (x_k-\mu_k)^2 / 2\sigma_k^2\big]`.
    The constant is kept, so the value is a proper log-density.

    :param torch.Tensor x: observations, shape ``(..., d)``.
    :param torch.Tensor loc: decoder mean :math:`\mu`, broadcastable to ``x``.
    :param torch.Tensor scale: :math:`\sigma > 0`, a scalar tensor or broadcastable to ``x``.
    :returns: log-density summed over the last dimension, shape ``(...)``.
    """
    log_norm = 0.5 * math.log(2 * math.pi) + torch.log(scale)
    per_coordinate = -log_norm - 0.5 * ((x - loc) / scale) ** 2
    return per_coordinate.expand(torch.broadcast_shapes(per_coordinate.shape, x.shape)).sum(-1)


class Likelihood(nn.Module, ABC):
    """Base class: maps the decoder's output to :math:`p_\\theta(x|z)`."""

    name: str = "likelihood"

    @abstractmethod
    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        """The Pyro distribution of ``x`` given the decoder output (event dim 1)."""

    @abstractmethod
    def log_prob(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The hand-written log-density (eq. 13 / 14), summed over the last dimension."""

    @abstractmethod
    def mean(self, output: torch.Tensor) -> torch.Tensor:
        """:math:`E[x|z]`, used for pictures of samples and reconstructions."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class BernoulliLikelihood(Likelihood):
    """Multivariate Bernoulli with decoder logits (eq. 13). Data must lie in ``{0, 1}``."""

    name = "bernoulli"

    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=output).to_event(1)

    def log_prob(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_likelihood(x, output)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output)


class GaussianLikelihood(Likelihood):
    r"""Diagonal Gaussian with decoder mean :math:`\mu` (eq. 14).

    :param int x_dim: data dimension :math:`d`.
    :param float sigma: the fixed :math:`\sigma`, or the initial value when ``learn_sigma``.
    :param bool learn_sigma: learn one :math:`\sigma_k` per coordinate. It is parameterised as
        :math:`\sigma_k = \sigma_{\min} + \mathrm{softplus}(\rho_k)`, positive by construction.
    :param float min_sigma: floor :math:`\sigma_{\min}` of a learned :math:`\sigma`; it keeps the
        likelihood bounded on coordinates the decoder fits exactly (constant pixels).
    """

    name = "gaussian"

    def __init__(self, x_dim: int, sigma: float = 1.0, learn_sigma: bool = False, min_sigma: float = 1e-3):
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"sigma must be > 0, got {sigma}")
        if learn_sigma and not 0 <= min_sigma < sigma:
            raise ConfigError(f"min_sigma must be in [0, sigma={sigma}), got {min_sigma}")
        self.learn_sigma = learn_sigma
        self.min_sigma = float(min_sigma) if learn_sigma else 0.0
        if learn_sigma:
            # inverse softplus, so that sigma starts at the requested value
            init = math.log(math.expm1(sigma - self.min_sigma))
            self.sigma_unconstrained = nn.Parameter(torch.full((x_dim,), init))
        else:
            self.register_buffer("fixed_sigma", torch.tensor(float(sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        """:math:`\\sigma`: a scalar tensor when fixed, shape ``(x_dim,)`` when learned."""
        if self.learn_sigma:
            return self.min_sigma + F.softplus(self.sigma_unconstrained)
        return self.fixed_sigma

    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(output, self.sigma.expand(output.shape)).to_event(1)

    def log_prob(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return gaussian_log_likelihood(x, output, self.sigma)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return output

    def extra_repr(self) -> str:
        return f"name='gaussian', learn_sigma={self.learn_sigma}"


def make_likelihood(name: str, x_dim: int, sigma: float = 1.0, learn_sigma: bool = False) -> Likelihood:
    """Build a likelihood by name (``"bernoulli"`` or ``"gaussian"``)."""
    if name == "bernoulli":
        if learn_sigma:
            raise ConfigError("learn_sigma applies to the 'gaussian' likelihood only, got likelihood='bernoulli'")
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(x_dim, sigma=sigma, learn_sigma=learn_sigma)
    raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {name!r}")
