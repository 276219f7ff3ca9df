r"""Observation models :math:`p_\theta(x|z)`: Bernoulli (eq. 13), Gaussian (eq. 14) and the discretized
logistic of 8-bit images (eq. 33).

Each likelihood is a small :class:`torch.nn.Module` with two faces:

- :meth:`Likelihood.distribution` builds the Pyro distribution used at the observation site
  ``"x"`` of :meth:`pyrovae.VAE.model`;
- :meth:`Likelihood.log_prob` evaluates the same density written out by hand (eq. 13 / 14),
  used by :func:`pyrovae.closed_form_elbo`.

The decoder's raw output is interpreted by the likelihood: logits for the Bernoulli, the mean
:math:`\mu` for the Gaussian, a location and a scale per pixel for the discretized logistic
(:attr:`Likelihood.params_per_dim` numbers per data dimension: the decoder's output has
``params_per_dim * x_dim`` columns).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .._compat import extended_shape, validate_sample
from ..errors import ConfigError
from ..spec.names import LIKELIHOODS

__all__ = [
    "bernoulli_log_likelihood",
    "gaussian_log_likelihood",
    "discretized_logistic_log_likelihood",
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "DiscretizedLogisticLikelihood",
    "DiscretizedLogistic",
    "make_likelihood",
    "LIKELIHOODS",
]


#: grey levels of an 8-bit pixel; pixels are stored as ``k / LEVELS_MAX``, ``k = 0, ..., 255``
LEVELS_MAX = 255


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


def discretized_logistic_log_likelihood(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""Log-probability of 8-bit pixels under a logistic discretized to their 256 levels, eq. 33.

    A pixel :math:`x = k/255` owns the bin :math:`[x - \tfrac1{510}, x + \tfrac1{510}]`, the first and
    the last bin reaching out to :math:`-\infty` and :math:`+\infty`; its probability is the
    logistic :math:`(\mu, s)` mass of that bin,

    .. math::

        P(x) = \sigma(b) - \sigma(a), \qquad a = \frac{x - \frac1{510} - \mu}{s},\quad
            b = \frac{x + \frac1{510} - \mu}{s},

    with :math:`\sigma(a) = 0` for :math:`k = 0` and :math:`\sigma(b) = 1` for :math:`k = 255`. It is
    computed as :math:`\log P = \log\sigma(b) - \mathrm{softplus}(a) + \log(1 - e^{a - b})`
    (from :math:`\sigma(b) - \sigma(a) = (e^b - e^a) / ((1 + e^a)(1 + e^b))`), finite wherever the
    bin is, however far from :math:`\mu`; the edges are :math:`\log\sigma(b) = -\mathrm{softplus}(-b)`
    and :math:`\log(1 - \sigma(a)) = -\mathrm{softplus}(a)`. The 256 probabilities of a pixel sum
    to 1, so this is a probability, not a density: :math:`-\log_2 P` summed over the pixels is a
    code length in bits.

    :param torch.Tensor x: pixels :math:`k/255`, shape ``(..., d)``.
    :param torch.Tensor loc: :math:`\mu`, broadcastable to ``x``.
    :param torch.Tensor scale: :math:`s > 0`, broadcastable to ``x``.
    :returns: the log-probability per coordinate, shape of the broadcast (not summed).
    """
    half_bin = 0.5 / LEVELS_MAX
    a = (x - half_bin - loc) / scale
    b = (x + half_bin - loc) / scale
    lowest = -F.softplus(-b)  # log sigma(b): the bin reaching down to -inf
    highest = -F.softplus(a)  # log(1 - sigma(a)): the bin reaching up to +inf
    inner = lowest + highest + torch.log(-torch.expm1(a - b))
    return torch.where(x < half_bin, lowest, torch.where(x > 1 - half_bin, highest, inner))


class DiscretizedLogistic(dist.TorchDistribution):
    r"""The discretized logistic of eq. 33 as a Pyro distribution over pixels :math:`k/255` (one per
    coordinate: wrap it with ``.to_event(1)`` for an image). ``log_prob`` is
    :func:`discretized_logistic_log_likelihood`; ``sample`` rounds a logistic draw to the nearest level
    in :math:`[0, 1]`, which has exactly these probabilities."""

    arg_constraints = {"loc": dist.constraints.real, "scale": dist.constraints.positive}
    support = dist.constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: DiscretizedLogistic | None = None) -> DiscretizedLogistic:
        shape = torch.Size(batch_shape)
        return DiscretizedLogistic(self.loc.expand(shape), self.scale.expand(shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            validate_sample(self, value)
        return discretized_logistic_log_likelihood(value, self.loc, self.scale)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = extended_shape(self, torch.Size(sample_shape))
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-12, 1 - 1e-12)
            draw = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return (torch.round(draw * LEVELS_MAX) / LEVELS_MAX).clamp(0.0, 1.0)

    @property
    def mean(self) -> torch.Tensor:
        """The location clamped to [0, 1] (the mean of the rounded draw, near the edges, differs)."""
        return self.loc.clamp(0.0, 1.0)


class Likelihood(nn.Module, ABC):
    """Base class: maps the decoder's output to :math:`p_\\theta(x|z)`.

    :cvar params_per_dim: numbers the decoder outputs per data dimension.
    :cvar discrete: whether the likelihood is a probability of discrete values (then
        :math:`-\\log_2 p(x)` per dimension is reported as bits per dimension).
    """

    name: str = "likelihood"
    params_per_dim: int = 1
    discrete: bool = False

    @abstractmethod
    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        """The Pyro distribution of ``x`` given the decoder output (event dim 1)."""

    @abstractmethod
    def log_prob(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The hand-written log-density (eq. 13 / 14 / 23), summed over the last dimension."""

    @abstractmethod
    def mean(self, output: torch.Tensor) -> torch.Tensor:
        """:math:`E[x|z]`, used for pictures of samples and reconstructions."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class BernoulliLikelihood(Likelihood):
    """Multivariate Bernoulli with decoder logits (eq. 13). Data must lie in ``{0, 1}``."""

    name = "bernoulli"
    discrete = True

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


class DiscretizedLogisticLikelihood(Likelihood):
    r"""8-bit pixels under a discretized logistic (eq. 33), a location and a scale per pixel from the
    decoder: the decoder's output is :math:`(\mu, \rho)`, each ``x_dim`` wide, and
    :math:`s = s_{\min} + \mathrm{softplus}(\rho)`. Data must be levels :math:`k/255` in [0, 1]
    (8-bit images scaled, as the loaders scale them).

    :param float min_scale: :math:`s_{\min}`; a logistic narrower than a bin puts nearly all its mass
        on one level, so the log-probability stays bounded by 0 whatever the floor.
    """

    name = "discretized-logistic"
    params_per_dim = 2
    discrete = True

    def __init__(self, min_scale: float = 1e-3):
        super().__init__()
        self.min_scale = float(min_scale)

    def _split(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = output.chunk(2, dim=-1)
        return loc, self.min_scale + F.softplus(raw_scale)

    def distribution(self, output: torch.Tensor) -> dist.TorchDistribution:
        return DiscretizedLogistic(*self._split(output)).to_event(1)

    def log_prob(self, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        loc, scale = self._split(output)
        per_pixel = discretized_logistic_log_likelihood(x, loc, scale)
        return per_pixel.expand(torch.broadcast_shapes(per_pixel.shape, x.shape)).sum(-1)

    def mean(self, output: torch.Tensor) -> torch.Tensor:
        return self._split(output)[0].clamp(0.0, 1.0)


def make_likelihood(name: str, x_dim: int, sigma: float = 1.0, learn_sigma: bool = False) -> Likelihood:
    """Build a likelihood by name (one of :data:`LIKELIHOODS`)."""
    if name == "bernoulli":
        if learn_sigma:
            raise ConfigError("learn_sigma applies to the 'gaussian' likelihood only, got likelihood='bernoulli'")
        return BernoulliLikelihood()
    if name == "gaussian":
        return GaussianLikelihood(x_dim, sigma=sigma, learn_sigma=learn_sigma)
    if name == "discretized-logistic":
        if learn_sigma:
            raise ConfigError(
                "learn_sigma applies to the 'gaussian' likelihood only; the discretized logistic's scales come "
                "from the decoder"
            )
        return DiscretizedLogisticLikelihood()
    raise ConfigError(f"likelihood must be one of {LIKELIHOODS}, got {name!r}")
