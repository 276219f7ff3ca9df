r"""Hand-written versions of the objectives beyond the ELBO, that the estimators are checked against.

Pure torch and no ``torch.distributions``, for the VAE with the ``normal`` prior (eq. 17) and its
diagonal Gaussian guide: the reconstruction term by eq. 13 / 14 through the likelihood's own
``log_prob``, :math:`\log p(z)` and :math:`\log q(z|x)` written out, the KL per coordinate by
eq. 18, the MMD by :func:`pyrovae.models.mmd.mmd` (eq. 29-30). Each function takes the standard
normal noise ``eps`` of shape ``(K, B, z_dim)`` that drew :math:`z = \mu + \sigma \odot
\varepsilon`, so that it can be evaluated on the draws an estimator used, and returns the
objective summed over the minibatch and multiplied by :math:`N/B` (``num_data``), i.e. minus the
estimator's loss.

:func:`closed_form_iwae` computes the DReG gradient (eq. 25) the way Tucker et al. describe it,
as two objectives each differentiated for its own parameters (:func:`iwae_gradients`), not by the
single-loss construction of :class:`pyrovae.infer.iwae.IWAE_ELBO`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ..errors import ConfigError
from ..models.mmd import MMD_SCALES, mmd
from ..models.priors import StandardNormalPrior

__all__ = [
    "IwaeTerms",
    "closed_form_iwae",
    "iwae_gradients",
    "closed_form_weighted_elbo",
    "closed_form_infovae",
    "coordinate_kl",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _draw(vae: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if not isinstance(vae.prior, StandardNormalPrior):
        raise ConfigError(
            f"the hand-written objectives are written for the normal prior N(0, I), got {type(vae.prior).__name__}"
        )
    loc, scale = vae.encoder(x)
    if eps.dim() != 3 or eps.shape[1:] != loc.shape:
        raise ConfigError(f"eps must have shape (K, {loc.shape[0]}, {loc.shape[1]}), got {tuple(eps.shape)}")
    return loc, scale, loc + scale * eps


def _scale(x: torch.Tensor, num_data: int | None) -> float:
    return 1.0 if num_data is None else num_data / x.shape[0]


def _log_std_normal(z: torch.Tensor) -> torch.Tensor:
    """:math:`\\log \\mathcal N(z; 0, I)` per coordinate (eq. 17)."""
    return -0.5 * z**2 - _HALF_LOG_2PI


def _log_diag_normal(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """:math:`\\log \\mathcal N(z; \\mu, \\mathrm{diag}\\,\\sigma^2)` per coordinate."""
    return -0.5 * ((z - loc) / scale) ** 2 - torch.log(scale) - _HALF_LOG_2PI


class IwaeTerms(NamedTuple):
    """``log_weights`` (``(K, B)``) and ``bound`` (``(B,)``, eq. 23); ``objective``: the bound summed
    and scaled (its gradient is eq. 24); ``dreg_encoder``: the objective whose encoder gradient is
    eq. 25, :math:`\\frac NB \\sum_{k,b} \\overline{\\tilde w_{kb}^2}\\,\\log w_{kb}` with
    :math:`\\log q`'s parameters held fixed (its value means nothing)."""

    log_weights: torch.Tensor
    bound: torch.Tensor
    objective: torch.Tensor
    dreg_encoder: torch.Tensor


def closed_form_iwae(
    vae: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor, num_data: int | None = None
) -> IwaeTerms:
    r"""The IWAE bound (eq. 23) on the draws ``eps``, and the two objectives of its gradients.

    .. math::

        \log w_{kb} = \log p_\theta(x_b|z_{kb}) + \log \mathcal N(z_{kb}; 0, I)
            - \log \mathcal N(z_{kb}; \mu_b, \mathrm{diag}\,\sigma_b^2), \qquad
        \hat{\mathcal L}_K(x_b) = \log \frac1K \sum_k w_{kb}.
    """
    loc, scale, z = _draw(vae, x, eps)
    reconstruction = vae.likelihood.log_prob(x, vae.decoder(z))
    log_prior = _log_std_normal(z).sum(-1)
    log_w = reconstruction + log_prior - _log_diag_normal(z, loc, scale).sum(-1)
    bound = torch.logsumexp(log_w, 0) - math.log(eps.shape[0])
    # DReG: log q with its parameters held fixed, so that only the path through z is differentiated
    log_w_fixed_q = reconstruction + log_prior - _log_diag_normal(z, loc.detach(), scale.detach()).sum(-1)
    squared = torch.softmax(log_w.detach(), 0) ** 2
    factor = _scale(x, num_data)
    return IwaeTerms(log_w, bound, factor * bound.sum(), factor * (squared * log_w_fixed_q).sum())


def iwae_gradients(
    vae: torch.nn.Module, x: torch.Tensor, eps: torch.Tensor, grad: str, num_data: int | None = None
) -> list[torch.Tensor]:
    """The gradient of the IWAE *loss* (minus the objective) for every parameter of ``vae``, in
    ``vae.parameters()`` order: eq. 24 for every parameter (``grad="standard"``), or eq. 25 for the
    encoder's and eq. 24 for the others (``grad="dreg"``)."""
    terms = closed_form_iwae(vae, x, eps, num_data)
    params = list(vae.parameters())
    standard = torch.autograd.grad(-terms.objective, params, retain_graph=True, allow_unused=True)
    if grad == "standard":
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, standard, strict=True)]
    encoder = {id(p) for p in vae.encoder.parameters()}
    dreg = torch.autograd.grad(-terms.dreg_encoder, params, allow_unused=True)
    out = []
    for p, s, d in zip(params, standard, dreg, strict=True):
        g = d if id(p) in encoder else s
        out.append(torch.zeros_like(p) if g is None else g)
    return out


def coordinate_kl(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    r""":math:`\mathrm{KL}_j(q\,\|\,\mathcal N(0, 1))` per coordinate: eq. 18's summand
    :math:`\tfrac12(\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)`, or with ``z`` its one-draw estimate
    :math:`\log q_j(z_j) - \log \mathcal N(z_j; 0, 1)`."""
    if z is None:
        return 0.5 * (loc**2 + scale**2 - torch.log(scale**2) - 1.0)
    return _log_diag_normal(z, loc, scale) - _log_std_normal(z)


def closed_form_weighted_elbo(
    vae: torch.nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    weight: float = 1.0,
    free_bits: float = 0.0,
    analytic: bool = True,
    num_data: int | None = None,
) -> torch.Tensor:
    r"""Eq. 26-27 on the draws ``eps``: :math:`\frac NB \big[\sum_b \frac1K \sum_k \log p_\theta(x_b|z_{kb})
    - w\,\mathcal R\big]`, with the KL weight ``weight`` (:math:`\beta_t`), free bits ``free_bits`` and
    the KL per coordinate in closed form (``analytic``) or at the draws."""
    loc, scale, z = _draw(vae, x, eps)
    reconstruction = vae.likelihood.log_prob(x, vae.decoder(z)).mean(0).sum()
    kl = coordinate_kl(loc, scale).expand_as(z) if analytic else coordinate_kl(loc, scale, z)  # (K, B, d)
    if free_bits > 0:
        penalty = x.shape[0] * kl.mean((0, 1)).clamp_min(free_bits).sum()
    else:
        penalty = kl.sum(-1).mean(0).sum()
    return _scale(x, num_data) * (reconstruction - weight * penalty)


def closed_form_infovae(
    vae: torch.nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    prior_draws: torch.Tensor,
    alpha: float,
    lam: float,
    kernel: str = "imq",
    scales: Sequence[float] = MMD_SCALES,
    num_data: int | None = None,
) -> torch.Tensor:
    r"""Eq. 28 on the draws ``eps`` and ``prior_draws`` (both ``(K, B, z_dim)``): the reconstruction
    term minus :math:`(1-\alpha)` times the KL of eq. 18, minus :math:`(\alpha + \lambda - 1)` times
    the unbiased MMD between the :math:`KB` codes and the :math:`KB` prior draws, which counts once
    per minibatch (times :math:`B`, before the :math:`N/B` scale)."""
    z = _draw(vae, x, eps)[2]
    objective = closed_form_weighted_elbo(vae, x, eps, weight=1.0 - alpha)
    rows = x.shape[0]
    divergence = mmd(z.reshape(-1, z.shape[-1]), prior_draws.reshape(-1, z.shape[-1]), kernel, scales)
    return _scale(x, num_data) * (objective - (alpha + lam - 1.0) * rows * divergence)
