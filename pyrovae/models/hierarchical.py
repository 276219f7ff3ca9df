r"""A VAE with two levels of latent variables (eq. 34): :math:`p(z_2)\,p_\theta(z_1|z_2)\,p_\theta(x|z_1)`.

Model (the Pyro program :meth:`HierarchicalVAE.model`, latent sites ``"z2"`` then ``"z1"``):

.. math::

    z_2 \sim p(z_2), \qquad z_1 \sim p_\theta(z_1|z_2) = \mathcal N(\mu_\theta(z_2),
        \mathrm{diag}\,\sigma_\theta(z_2)^2), \qquad x \sim p_\theta(x|z_1),

with any prior of :mod:`pyrovae.models.priors` on the top level :math:`z_2` (``normal``, ``vamp``, ...).
Guide (:meth:`HierarchicalVAE.guide`), top-down as the model, so that both sample ``z2`` first:

.. math::

    q_\phi(z_2, z_1|x) = q_\phi(z_2|x)\, q_\phi(z_1|x, z_2),

both diagonal Gaussians computed from one set of features :math:`h_\phi(x)` of the data (an MLP
or convolutional body, ``arch``). This is the two-level VAE of Tomczak & Welling (2018, section
3.3), whose VampPrior on the top level is :math:`\frac1K\sum_k q_\phi(z_2|u_k)`: the top-level
encoder is ``vae.encoder`` (``vae.encoder(x)`` returns the parameters of :math:`q_\phi(z_2|x)`),
which is what :class:`~pyrovae.models.priors.VampPrior` calls.

The ELBO (eq. 34) has one KL per site:

.. math::

    \mathcal L(x) = \mathbb E_{q}\big[\log p_\theta(x|z_1)\big]
        - \mathbb E_{q_\phi(z_2|x)}\big[\mathrm{KL}(q_\phi(z_1|x, z_2)\,\|\,p_\theta(z_1|z_2))\big]
        - \mathrm{KL}(q_\phi(z_2|x)\,\|\,p(z_2)).

The ``z1`` term is a KL between two diagonal Gaussians given :math:`z_2` (eq. 16), in closed form
whatever the prior; the ``z2`` term is in closed form exactly where the prior has one
(:meth:`HierarchicalVAE.meanfield_kl_modes` says which site gets which). ``meanfield`` then
estimates the expectation over :math:`z_2` with the drawn :math:`z_2`.

Reference: J. Tomczak and M. Welling, "VAE with a VampPrior", AISTATS 2018.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from ..errors import ConfigError
from ..spec.names import LATENTS
from .base import ImportanceWeights
from .conv import ConvBody
from .kl import kl_mode
from .networks import Encoder, loc_and_scale, mlp_body
from .vae import VAE, register_module

__all__ = ["HierarchicalVAE", "TwoLevelEncoder", "make_vae", "check_latents", "LATENTS"]

#: levels of latent variables a VAE can have (``--latents``): 1 (:class:`~pyrovae.models.vae.VAE`)
#: or 2 (:class:`HierarchicalVAE`)


class TwoLevelEncoder(nn.Module):
    r""":math:`q_\phi(z_2|x)` and :math:`q_\phi(z_1|x, z_2)` from one body :math:`h_\phi(x)`.

    ``forward(x)`` returns the parameters of :math:`q_\phi(z_2|x)` (the top level), as a one-level
    encoder does. :math:`q_\phi(z_1|x, z_2)` is an MLP of one hidden layer (width ``hidden``) on
    :math:`[h_\phi(x), z_2]`.

    :param body: ``x -> h``, features of width ``feature_dim``.
    """

    def __init__(self, body: nn.Module, feature_dim: int, z_dim: int, hidden: int, activation: str):
        super().__init__()
        self.z_dim = z_dim
        self.body = body
        self.top = nn.Linear(feature_dim, 2 * z_dim)
        self.bottom = Encoder(feature_dim + z_dim, z_dim, (hidden,), activation)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`h_\\phi(x)`, shape ``(..., feature_dim)``."""
        return self.body(x)

    def top_params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale of :math:`q_\\phi(z_2|x)` from the features."""
        return loc_and_scale(self.top(h), self.z_dim)

    def bottom_params(self, h: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale of :math:`q_\\phi(z_1|x, z_2)`; ``h`` is broadcast to ``z2``'s leading shape
        (draws, particles)."""
        h = h.expand(*z2.shape[:-1], h.shape[-1])
        return self.bottom(torch.cat([h, z2], dim=-1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.top_params(self.features(x))


class HierarchicalVAE(VAE):
    r"""Two-level VAE :math:`p(z_2)\,p_\theta(z_1|z_2)\,p_\theta(x|z_1)` with guide
    :math:`q_\phi(z_2|x)\,q_\phi(z_1|x, z_2)` (see :mod:`pyrovae.models.hierarchical`, eq. 34).

    Takes :class:`~pyrovae.models.vae.VAE`'s arguments; ``z_dim`` is the size of each level, the
    prior is that of :math:`z_2`, and :math:`p_\theta(z_1|z_2)` and :math:`q_\phi(z_1|x, z_2)` are MLPs
    with one hidden layer of width ``hidden_dims[-1]``. ``vae.encoder`` is the
    :class:`TwoLevelEncoder`; ``vae.encoder(x)``, :meth:`posterior` and the latent-space pictures are
    those of the top level :math:`z_2`.
    """

    latent_sites = ("z2", "z1")
    kind = "hierarchical"

    def __init__(self, x_dim: int, **options: Any):
        super().__init__(x_dim, **options)
        activation = self._hparams["activation"]
        self.conditional_prior = Encoder(self.z_dim, self.z_dim, (self.hidden_dims[-1],), activation)

    def _encoder(self, z_dim: int, activation: str) -> nn.Module:
        if self.arch == "conv":
            body: nn.Module = ConvBody(self.image_shape, self.channels, self.hidden_dims, activation)
        else:
            body = mlp_body(self.x_dim, self.hidden_dims, activation)
        return TwoLevelEncoder(body, self.hidden_dims[-1], z_dim, self.hidden_dims[-1], activation)

    def register_model_params(self) -> None:
        super().register_model_params()
        register_module(f"{self.name}_conditional_prior", self.conditional_prior)

    def conditional(self, z2: torch.Tensor) -> dist.TorchDistribution:
        r""":math:`p_\theta(z_1|z_2)`, a diagonal Gaussian with the batch shape of ``z2``'s rows."""
        loc, scale = self.conditional_prior(z2)
        return dist.Normal(loc, scale).to_event(1)

    # -- Pyro program --------------------------------------------------------------------
    def model(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        r""":math:`z_2 \sim p(z_2)`, :math:`z_1 \sim p_\theta(z_1|z_2)`, :math:`x \sim p_\theta(x|z_1)`, observed."""
        scale = self._check_batch(x, num_data)
        if self._register_on_call:
            self.register_model_params()
        with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=scale):
            z2 = pyro.sample("z2", self.prior((x.shape[0],)))
            z1 = pyro.sample("z1", self.conditional(z2))
            output = self.decoder(z1)
            pyro.sample("x", self.likelihood.distribution(output), obs=x)
        return output

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        r""":math:`z_2 \sim q_\phi(z_2|x)`, then :math:`z_1 \sim q_\phi(z_1|x, z_2)`."""
        scale = self._check_batch(x, num_data)
        if self._register_on_call:
            register_module(f"{self.name}_encoder", self.encoder)
        with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=scale):
            h = self.encoder.features(x)
            loc2, scale2 = self.encoder.top_params(h)
            z2 = pyro.sample("z2", dist.Normal(loc2, scale2).to_event(1))
            loc1, scale1 = self.encoder.bottom_params(h, z2)
            return pyro.sample("z1", dist.Normal(loc1, scale1).to_event(1))

    @torch.no_grad()
    def meanfield_kl_modes(self) -> dict[str, str]:
        """How ``meanfield`` treats each site's KL: ``z2`` as its prior says (:meth:`Prior.kl_mode`),
        ``z1`` (a diagonal Gaussian against the diagonal Gaussian :math:`p_\\theta(z_1|z_2)`) by the
        registered closed form, eq. 16 (checked against torch's registry, as Pyro looks it up). A
        prior that is not a pyrovae :class:`Prior` is looked up in the registry against the guide's
        diagonal Gaussian for ``z2``, as :func:`pyrovae.infer.kl_modes` does for a one-level VAE."""
        probe = torch.zeros(1, self.z_dim, device=self.device, dtype=self.dtype)
        gaussian = dist.Normal(probe, torch.ones_like(probe)).to_event(1)  # the guide's family at both levels
        z1 = kl_mode(gaussian, self.conditional(probe))
        # (a prior module of yours need not be a pyrovae Prior: then the registry decides, as for z1)
        top = self.prior.kl_mode() if hasattr(self.prior, "kl_mode") else kl_mode(gaussian, self.prior((1,)))
        return {"z2": top, "z1": z1}

    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> ImportanceWeights:
        r"""The weights of eq. 34's model and guide, written out by hand: :math:`z = (z_2, z_1)`,
        :math:`\log p(z) = \log p(z_2) + \log p_\theta(z_1|z_2)` and
        :math:`\log q = \log q_\phi(z_2|x) + \log q_\phi(z_1|x, z_2)`, each Gaussian :math:`\log q` from
        the noise that drew it; per chunk of ``k`` the noise of ``z2`` is drawn before that of ``z1``.
        The mean of ``z1`` depends on the draw of ``z2`` (``means["z1"]`` has shape ``(k, B, z_dim)``)."""
        h = self.encoder.features(x)
        loc, scale = self.encoder.top_params(h)
        log_q_const = -(torch.log(scale) + 0.5 * math.log(2 * math.pi)).sum(-1)

        def noise() -> torch.Tensor:
            return torch.randn((k, x.shape[0], self.z_dim), generator=generator, device=x.device, dtype=x.dtype)

        eps = noise()
        z2 = loc + scale * eps
        log_q2 = log_q_const - 0.5 * eps.pow(2).sum(-1)
        loc1, scale1 = self.encoder.bottom_params(h, z2)
        eps1 = noise()
        z1 = loc1 + scale1 * eps1
        log_q1 = -(torch.log(scale1) + 0.5 * math.log(2 * math.pi) + 0.5 * eps1.pow(2)).sum(-1)
        log_lik = self.likelihood.log_prob(x, self.decoder(z1))
        log_p = self.prior((x.shape[0],)).log_prob(z2) + self.conditional(z2).log_prob(z1)
        weight = log_lik + log_p - (log_q2 + log_q1)
        return ImportanceWeights(weight, log_lik, torch.cat([z2, z1], -1), {"z2": loc, "z1": loc1})

    def analytic_kl(self, x: torch.Tensor) -> None:
        """``None``: the ``z1`` term of eq. 34 is an expectation over :math:`z_2`, with no closed form."""
        return None

    # -- conveniences (no Pyro involved) ----------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """Decode ``n`` draws :math:`z_2 \\sim p(z_2)`, :math:`z_1 \\sim p_\\theta(z_1|z_2)`."""
        z2 = self.prior((n,)).sample()
        output = self.decoder(self.conditional(z2).sample())
        return self.likelihood.mean(output) if mean else self.likelihood.distribution(output).sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`E[x|z_1]` at the guide's means: :math:`z_2 = \\mu_\\phi(x)`, then :math:`z_1` the mean of
        :math:`q_\\phi(z_1|x, z_2)`."""
        h = self.encoder.features(x)
        z2, _ = self.encoder.top_params(h)
        z1, _ = self.encoder.bottom_params(h, z2)
        return self.likelihood.mean(self.decoder(z1))


def check_latents(latents: Any) -> int:
    """``latents`` if it is one of :data:`LATENTS`."""
    if isinstance(latents, bool) or latents not in LATENTS:
        raise ConfigError(f"latents (--latents) must be one of {', '.join(map(str, LATENTS))}, got {latents!r}")
    return latents


def make_vae(x_dim: int, latents: int = 1, **options: Any) -> VAE:
    """A :class:`~pyrovae.models.vae.VAE` (``latents=1``) or a :class:`HierarchicalVAE` (``latents=2``),
    built with ``options`` (the arguments of :class:`~pyrovae.models.vae.VAE`)."""
    check_latents(latents)
    return (HierarchicalVAE if latents == 2 else VAE)(x_dim, **options)
