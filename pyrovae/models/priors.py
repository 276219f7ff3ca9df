r"""Priors :math:`p(z)` over the latent code.

A prior is a :class:`torch.nn.Module` whose call ``prior(batch_shape)`` returns a Pyro
distribution over ``z`` with ``event_shape == (z_dim,)`` and the requested ``batch_shape``.
Its tensors are buffers or parameters, so ``vae.to(device, dtype)`` moves them with the rest of
the model, and its parameters are trained with the VAE. Any module with that call signature
plugs into :class:`pyrovae.VAE` (see ``examples/custom_prior.py``).

============  =====================================================  ==========================
name          :math:`p(z)`                                           KL under ``meanfield``
============  =====================================================  ==========================
``normal``    :math:`\mathcal N(0, I)` (eq. 17)                  analytic (eq. 18)
``gaussian``  :math:`\mathcal N(\mu, \mathrm{diag}\,\sigma^2)`, learned  analytic (eq. 16)
``mog``       :math:`\sum_k \pi_k \mathcal N(\mu_k, \mathrm{diag}\,\sigma_k^2)`, learned  Monte Carlo
``vamp``      :math:`\frac1K \sum_k q_\phi(z|u_k)`, pseudo-inputs :math:`u_k` learned  Monte Carlo
``flow``      :math:`\mathcal N(0, I)` pushed through learned autoregressive affine maps  Monte Carlo
============  =====================================================  ==========================

Pyro's ``TraceMeanField_ELBO`` uses a closed-form KL only where ``kl_divergence`` is registered
for (guide, prior); otherwise it estimates :math:`\log q(z|x) - \log p(z)` at the sampled z.
:func:`pyrovae.infer.elbo.kl_modes` reports which one a VAE gets.

References: J. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018. G. Papamakarios,
T. Pavlakou and I. Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro.nn import AutoRegressiveNN
from torch import nn

from ..errors import PriorError, positive_int
from ..spec.names import PRIORS
from .kl import kl_diag_gaussian_std_normal, kl_diag_gaussians, registered_kl
from .mixture import DiagonalGaussianMixture

__all__ = [
    "Prior",
    "StandardNormalPrior",
    "LearnedGaussianPrior",
    "MixtureOfGaussiansPrior",
    "VampPrior",
    "FlowPrior",
    "DiagonalGaussianMixture",
    "make_prior",
    "PRIORS",
]


Shape = torch.Size | tuple[int, ...]


def _softplus_inverse(y: float) -> float:
    return math.log(math.expm1(y))


class Prior(nn.Module, ABC):
    r"""Base class of priors over a ``z_dim``-dimensional latent code.

    A subclass defines :meth:`forward`; it may also override the two hooks the rest of pyrovae asks
    instead of checking prior classes:

    - :meth:`analytic_kl`: :math:`\mathrm{KL}(q\,\|\,p)` in closed form for a diagonal Gaussian
      :math:`q`, or ``None``. The default asks torch's ``kl_divergence`` registry, which is exactly
      what decides whether Pyro's ``TraceMeanField_ELBO`` (``--elbo meanfield``) uses a closed form;
      a prior with its own closed form registers it there (``torch.distributions.register_kl``) so
      that the estimator and this hook agree (:meth:`kl_mode` refuses a prior where they do not).
    - :meth:`initialize_from_data`: set data-dependent parameters before training (default: none).

    :cvar components: the mixture components :math:`K` of a mixture prior (``mog``, ``vamp``), which
        the memory estimate counts (:meth:`pyrovae.VAE.activation_sizes`); 0 for one distribution.
    """

    components: int = 0

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = positive_int("z_dim", z_dim)

    @abstractmethod
    def forward(self, batch_shape: Shape = ()) -> dist.TorchDistribution:
        """:math:`p(z)` with batch shape ``batch_shape`` and event shape ``(z_dim,)``."""

    def _registered_kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | None:
        return registered_kl(dist.Normal(loc, scale).to_event(1), self(loc.shape[:-1]))

    def analytic_kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | None:
        r""":math:`\mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\sigma^2)\,\|\,p(z))` in closed form, one value
        per row of ``loc`` (shape ``loc.shape[:-1]``), or ``None`` where the prior has no closed form.

        :param loc: :math:`\mu`, shape ``(..., z_dim)``. :param scale: :math:`\sigma`, same shape.
        """
        return self._registered_kl(loc, scale)

    @torch.no_grad()
    def kl_mode(self) -> str:
        """``"analytic"`` where :meth:`analytic_kl` has a closed form (the ``meanfield`` ELBO then
        uses it), else ``"monte-carlo"``.

        :raises PriorError: where this prior's :meth:`analytic_kl` and torch's ``kl_divergence``
            registry disagree about having a closed form, so the reported mode could not be the one
            the ELBO uses.
        """
        reference = next(iter((*self.parameters(), *self.buffers())), None)
        like = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
        loc, scale = torch.zeros(1, self.z_dim, **like), torch.ones(1, self.z_dim, **like)
        hook, registered = self.analytic_kl(loc, scale) is not None, self._registered_kl(loc, scale) is not None
        if hook != registered:
            raise PriorError(
                f"{type(self).__name__}.analytic_kl {'has' if hook else 'has no'} closed form, but torch's "
                f"kl_divergence registry {'has one' if registered else 'has none'} for it, and the meanfield ELBO "
                "follows the registry: register the KL with torch.distributions.register_kl (or drop the override)"
            )
        return "analytic" if hook else "monte-carlo"

    def initialize_from_data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set data-dependent parameters from training rows ``x`` (shape ``(N, x_dim)``) before
        training starts; the default does nothing."""

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}"


class StandardNormalPrior(Prior):
    r""":math:`p(z) = \mathcal N(0, I)` (eq. 17). Fixed: it has no parameters."""

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self, batch_shape: Shape = ()) -> dist.TorchDistribution:
        shape = tuple(batch_shape) + (self.z_dim,)
        return dist.Normal(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)

    def analytic_kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Eq. 18, written out (:func:`~pyrovae.models.kl.kl_diag_gaussian_std_normal`)."""
        return kl_diag_gaussian_std_normal(loc, scale)


class LearnedGaussianPrior(Prior):
    r""":math:`p(z) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)` with learned :math:`\mu` and
    :math:`\sigma = \mathrm{softplus}(\rho)`; starts at :math:`\mathcal N(0, I)`. Its KL to a diagonal
    Gaussian :math:`q` is eq. 16."""

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.scale_unconstrained = nn.Parameter(torch.full((z_dim,), _softplus_inverse(1.0)))

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.scale_unconstrained)

    def forward(self, batch_shape: Shape = ()) -> dist.TorchDistribution:
        shape = tuple(batch_shape) + (self.z_dim,)
        return dist.Normal(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)

    def analytic_kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Eq. 16 for diagonal covariances, written out (:func:`~pyrovae.models.kl.kl_diag_gaussians`)."""
        return kl_diag_gaussians(loc, scale, self.loc, self.scale)


class MixtureOfGaussiansPrior(Prior):
    r""":math:`p(z) = \sum_{k=1}^K \pi_k \mathcal N(z; \mu_k, \mathrm{diag}\,\sigma_k^2)`, all learned.

    :param int components: :math:`K`.
    :param float init_spread: the means start as :math:`\mathcal N(0, \text{init\_spread}^2 I)` draws
        (distinct, so the components do not stay identical), the scales at 1 and the weights equal.
    """

    def __init__(self, z_dim: int, components: int = 10, init_spread: float = 1.0):
        super().__init__(z_dim)
        self.components = positive_int("components", components)
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(init_spread * torch.randn(components, z_dim))
        self.scale_unconstrained = nn.Parameter(torch.full((components, z_dim), _softplus_inverse(1.0)))

    @property
    def scales(self) -> torch.Tensor:
        return F.softplus(self.scale_unconstrained)

    def forward(self, batch_shape: Shape = ()) -> dist.TorchDistribution:
        return DiagonalGaussianMixture(self.logits, self.locs, self.scales, batch_shape)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, components={self.components}"


class VampPrior(Prior):
    r"""VampPrior: :math:`p(z) = \frac1K \sum_{k=1}^K q_\phi(z|u_k)` with learned pseudo-inputs
    :math:`u_k` (Tomczak & Welling 2018).

    It shares the VAE's encoder, which is held by reference (not as a submodule), so the encoder's
    weights are stored, registered and trained once, as part of the VAE. Call
    :meth:`initialize_from` to start the pseudo-inputs at random training rows.

    :param encoder: the VAE's encoder, ``x -> (loc, scale)``.
    :param int x_dim: data dimension (size of a pseudo-input).
    :param int components: :math:`K`.
    """

    def __init__(self, z_dim: int, encoder: nn.Module, x_dim: int, components: int = 10):
        super().__init__(z_dim)
        self.components = positive_int("components", components)
        self._encoder = (encoder,)  # a tuple: nn.Module does not register it as a submodule
        self.pseudo_inputs = nn.Parameter(torch.rand(components, x_dim))
        self.register_buffer("logits", torch.zeros(components))

    @property
    def encoder(self) -> nn.Module:
        return self._encoder[0]

    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set the pseudo-inputs to ``components`` distinct random rows of ``x``."""
        if x.dim() != 2 or x.shape[1] != self.pseudo_inputs.shape[1]:
            raise PriorError(f"x must have shape (N, {self.pseudo_inputs.shape[1]}), got {tuple(x.shape)}")
        if x.shape[0] < self.components:
            raise PriorError(f"need at least {self.components} rows to initialise the pseudo-inputs, got {x.shape[0]}")
        rows = torch.randperm(x.shape[0], generator=generator)[: self.components].to(x.device)
        self.pseudo_inputs.copy_(x.index_select(0, rows))

    def forward(self, batch_shape: Shape = ()) -> dist.TorchDistribution:
        locs, scales = self.encoder(self.pseudo_inputs)
        return DiagonalGaussianMixture(self.logits, locs, scales, batch_shape)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, components={self.components}"


class _FlowDistribution(dist.TransformedDistribution):
    """Samples under the base distribution's dtype.

    Pyro 1.9's ``AffineAutoregressive`` inverse (used when sampling) allocates its work tensors with
    the default dtype, so a float64 flow would fail to sample; ``log_prob`` is unaffected.
    """

    def _under_base_dtype(self, draw, sample_shape):
        old = torch.get_default_dtype()
        torch.set_default_dtype(self.base_dist.mean.dtype)
        try:
            return draw(torch.Size(sample_shape))
        finally:
            torch.set_default_dtype(old)

    def sample(self, sample_shape: Shape = ()) -> torch.Tensor:
        return self._under_base_dtype(super().sample, sample_shape)

    def rsample(self, sample_shape: Shape = ()) -> torch.Tensor:
        return self._under_base_dtype(super().rsample, sample_shape)


class FlowPrior(Prior):
    r"""A normalizing-flow prior: :math:`z = f(u)`, :math:`u \sim \mathcal N(0, I)`, with
    :math:`\log p(z) = \log \mathcal N(f^{-1}(z); 0, I) + \log\lvert\det \partial f^{-1}/\partial z\rvert`.

    :math:`f^{-1}` is a stack of ``num_flows`` masked autoregressive affine maps (MAF direction) with
    a fixed reversal between them, so ``log_prob`` — which the ELBO needs at every step — is one
    network pass per layer; sampling (for pictures) is sequential in ``z_dim``.

    :param int num_flows: number of autoregressive layers.
    :param hidden_dims: hidden widths of each layer's autoregressive network (default ``(4 z_dim,)``).
    """

    def __init__(self, z_dim: int, num_flows: int = 2, hidden_dims: Sequence[int] | None = None):
        super().__init__(z_dim)
        positive_int("num_flows", num_flows)
        hidden = list(hidden_dims) if hidden_dims is not None else [max(4 * z_dim, 8)]
        self.layers = nn.ModuleList(T.AffineAutoregressive(AutoRegressiveNN(z_dim, hidden)) for _ in range(num_flows))
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))
        self.register_buffer("reverse", torch.arange(z_dim - 1, -1, -1))

    def forward(self, batch_shape: Shape = ()) -> dist.TorchDistribution:
        shape = tuple(batch_shape) + (self.z_dim,)
        base = dist.Normal(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)
        inverse_maps: list[T.Transform] = []
        for i, layer in enumerate(self.layers):  # f^{-1} = A_1 o P o A_2 o ...; f is its inverse
            if i:
                inverse_maps.append(T.Permute(self.reverse))
            inverse_maps.append(layer)
        forward_maps = [t.inv for t in reversed(inverse_maps)]
        return _FlowDistribution(base, forward_maps)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, num_flows={len(self.layers)}"


def make_prior(
    prior: str | nn.Module,
    z_dim: int,
    components: int = 10,
    encoder: nn.Module | None = None,
    x_dim: int | None = None,
) -> nn.Module:
    """Build a prior by name (one of :data:`PRIORS`), or check and return a prior module.

    ``components`` is :math:`K` for ``mog`` and ``vamp``; ``vamp`` also needs the VAE's encoder
    and ``x_dim``.
    """
    if isinstance(prior, nn.Module):
        if getattr(prior, "z_dim", z_dim) != z_dim:
            raise PriorError(f"prior has z_dim={prior.z_dim}, the VAE has z_dim={z_dim}")
        return prior
    if prior == "normal":
        return StandardNormalPrior(z_dim)
    if prior == "gaussian":
        return LearnedGaussianPrior(z_dim)
    if prior == "mog":
        return MixtureOfGaussiansPrior(z_dim, components)
    if prior == "vamp":
        if encoder is None or x_dim is None:
            raise PriorError("the 'vamp' prior needs the VAE's encoder and x_dim")
        return VampPrior(z_dim, encoder, x_dim, components)
    if prior == "flow":
        return FlowPrior(z_dim)
    raise PriorError(f"prior must be one of {PRIORS} or a Prior module, got {prior!r}")
