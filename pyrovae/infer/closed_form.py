r"""The hand-written closed-form ELBO (eq. 11) that every estimator is checked against.

Pure torch, no ``torch.distributions``: the reconstruction term by eq. 13 (Bernoulli) or eq. 14
(Gaussian) through the likelihood's own ``log_prob``, and the KL in closed form (eq. 16 / 18).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..models.vae import ElboTerms

__all__ = ["closed_form_elbo"]


def closed_form_elbo(
    vae: torch.nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
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
    """
    if eps is not None and z is not None:
        raise ConfigError("give at most one of eps and z, got both")
    loc, scale = vae.encoder(x)
    if z is None:
        if eps is None:
            eps = torch.randn_like(loc)
        if eps.shape[-2:] != loc.shape:
            raise ConfigError(f"eps must end in shape {tuple(loc.shape)}, got {tuple(eps.shape)}")
        z = loc + scale * eps
    elif z.shape[-2:] != loc.shape:
        raise ConfigError(f"z must end in shape {tuple(loc.shape)}, got {tuple(z.shape)}")
    reconstruction = vae.likelihood.log_prob(x, vae.decoder(z))
    if reconstruction.dim() > 1:
        reconstruction = reconstruction.reshape(-1, x.shape[0]).mean(0)
    kl = vae.prior.analytic_kl(loc, scale)
    if kl is None:
        raise ConfigError(
            f"closed_form_elbo needs a prior with a closed-form KL; {type(vae.prior).__name__} has none "
            "(its analytic_kl returns None): use estimate_elbo, whose KL is then Monte Carlo"
        )
    return ElboTerms(reconstruction - kl, reconstruction, kl)
