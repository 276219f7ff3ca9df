r"""The hand-written closed-form ELBO (eq. 11) that every estimator is checked against.

Pure torch, no ``torch.distributions``: the reconstruction term by eq. 13 (Bernoulli), eq. 14
(Gaussian) or eq. 33 (discretized logistic) through the likelihood's own ``log_prob``, and the KL
in closed form (eq. 16 / 18); for the two-level VAE, eq. 34 with both KLs in closed form.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.hierarchical import HierarchicalVAE
from ..models.kl import kl_diag_gaussians
from ..models.vae import ElboTerms

__all__ = ["closed_form_elbo", "two_level_closed_form_elbo"]


def closed_form_elbo(
    vae: torch.nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor | dict[str, torch.Tensor] | None = None,
    z: torch.Tensor | dict[str, torch.Tensor] | None = None,
) -> ElboTerms:
    r"""The ELBO of eq. 11, written out in torch without ``torch.distributions``.

    .. math::

        \mathcal L(x) \approx \frac1S \sum_{s=1}^S \log p_\theta(x|z_s)
            - \mathrm{KL}(q_\phi(z|x)\,\|\,p(z)), \qquad z_s = \mu_\phi(x) + \sigma_\phi(x)\odot\varepsilon_s

    with the reconstruction term by eq. 13 (Bernoulli) or eq. 14 (Gaussian) and the KL by
    eq. 18 (prior :math:`\mathcal N(0, I)`) or eq. 16 (learned Gaussian prior). Give ``eps`` (or
    ``z``) to evaluate it on the same draw another estimator used.

    :param vae: a :class:`pyrovae.VAE`.
    :param torch.Tensor x: data, shape ``(B, x_dim)``.
    :param eps: standard-normal noise, shape ``(S, B, z_dim)`` or ``(B, z_dim)``; gradients flow
        through :math:`z = \mu + \sigma\varepsilon` (the reparameterisation trick).
    :param z: latent samples, same shapes as ``eps``, used as given (no gradient to the encoder
        through them). Mutually exclusive with ``eps``. When neither is given, ``eps`` is drawn.
    :returns: :class:`ElboTerms` with ``elbo = reconstruction - kl``, each shape ``(B,)``; the
        reconstruction term is averaged over the ``S`` draws.

    For a :class:`~pyrovae.models.hierarchical.HierarchicalVAE`, ``eps`` and ``z`` are dicts with
    one tensor per site (``"z2"``, ``"z1"``) and the ELBO is eq. 34 (:func:`two_level_closed_form_elbo`).
    """
    if eps is not None and z is not None:
        raise ConfigError("give at most one of eps and z, got both")
    if isinstance(vae, HierarchicalVAE):
        return two_level_closed_form_elbo(vae, x, eps, z)
    loc, scale = vae.encoder(x)
    z = _draw(loc, scale, eps, z)
    reconstruction = vae.likelihood.log_prob(x, vae.decoder(z))
    if reconstruction.dim() > 1:
        reconstruction = reconstruction.reshape(-1, x.shape[0]).mean(0)
    kl = _prior_kl(vae, loc, scale, "a prior")
    return ElboTerms(reconstruction - kl, reconstruction, kl)


def _prior_kl(vae: torch.nn.Module, loc: torch.Tensor, scale: torch.Tensor, what: str) -> torch.Tensor:
    """The prior's closed-form KL from the diagonal Gaussian ``(loc, scale)``, or a one-line refusal."""
    kl = vae.prior.analytic_kl(loc, scale)
    if kl is None:
        raise ConfigError(
            f"closed_form_elbo needs {what} with a closed-form KL; {type(vae.prior).__name__} has none "
            "(its analytic_kl returns None): use estimate_elbo, whose KL is then Monte Carlo"
        )
    return kl


def _site_noise(values: dict[str, torch.Tensor] | None, site: str, what: str) -> torch.Tensor | None:
    if values is None:
        return None
    if not isinstance(values, dict) or set(values) != {"z2", "z1"}:
        found = sorted(values) if isinstance(values, dict) else type(values).__name__
        raise ConfigError(f"{what} of a two-level VAE must be a dict with the keys 'z2' and 'z1', got {found}")
    return values[site]


def _draw(
    loc: torch.Tensor,
    scale: torch.Tensor,
    eps: torch.Tensor | None,
    z: torch.Tensor | None,
    site: str | None = None,
) -> torch.Tensor:
    """``z`` as given, else ``loc + scale * eps`` (``eps`` drawn when missing), checked against
    ``loc``; ``site`` names the latent site of a two-level VAE in the error."""
    given, name = (z, "z") if z is not None else (eps, "eps")
    if given is None:
        return loc + scale * torch.randn_like(loc)
    if given.shape[-2:] != loc.shape[-2:]:
        where = name if site is None else f"{name}[{site!r}]"
        raise ConfigError(f"{where} must end in shape {tuple(loc.shape[-2:])}, got {tuple(given.shape)}")
    return given if z is not None else loc + scale * given


def two_level_closed_form_elbo(
    vae: HierarchicalVAE,
    x: torch.Tensor,
    eps: dict[str, torch.Tensor] | None = None,
    z: dict[str, torch.Tensor] | None = None,
) -> ElboTerms:
    r"""The two-level ELBO of eq. 34, written out in torch without ``torch.distributions``.

    .. math::

        \mathcal L(x) \approx \frac1S \sum_{s=1}^S \Big[\log p_\theta(x|z_1^s)
            - \mathrm{KL}\big(q_\phi(z_1|x, z_2^s)\,\|\,p_\theta(z_1|z_2^s)\big)\Big]
            - \mathrm{KL}\big(q_\phi(z_2|x)\,\|\,p(z_2)\big),

    with :math:`z_2^s = \mu_2 + \sigma_2 \odot \varepsilon_2^s` and :math:`z_1^s = \mu_1(x, z_2^s) +
    \sigma_1(x, z_2^s) \odot \varepsilon_1^s`; the ``z1`` KL by eq. 16 (two diagonal Gaussians), the ``z2``
    KL by the prior's ``analytic_kl`` (eq. 18 / 16). The KL term of the result is the sum of both.

    :param eps: ``{"z2": ..., "z1": ...}`` standard-normal noise, each of shape ``(S, B, z_dim)`` or
        ``(B, z_dim)``. :param z: the draws themselves, same layout (used as given).
    """
    h = vae.encoder.features(x)
    loc2, scale2 = vae.encoder.top_params(h)
    z2 = _draw(loc2, scale2, _site_noise(eps, "z2", "eps"), _site_noise(z, "z2", "z"), "z2")
    loc1, scale1 = vae.encoder.bottom_params(h, z2)
    z1 = _draw(loc1, scale1, _site_noise(eps, "z1", "eps"), _site_noise(z, "z1", "z"), "z1")
    prior_loc, prior_scale = vae.conditional_prior(z2)
    reconstruction = vae.likelihood.log_prob(x, vae.decoder(z1))
    kl_z1 = kl_diag_gaussians(loc1, scale1, prior_loc, prior_scale)
    if reconstruction.dim() > 1:
        reconstruction = reconstruction.reshape(-1, x.shape[0]).mean(0)
        kl_z1 = kl_z1.reshape(-1, x.shape[0]).mean(0)
    kl_z2 = _prior_kl(vae, loc2, scale2, "a top-level prior")
    kl = kl_z1 + kl_z2
    return ElboTerms(reconstruction - kl, reconstruction, kl)
