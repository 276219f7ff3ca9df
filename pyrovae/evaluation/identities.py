r"""The equivalent forms of the ELBO (eq. 19-21) and the split of its KL (eq. 32), each side computed
on its own, for the linear-Gaussian VAE and a finite data set.

With :math:`p_D` uniform over the :math:`N` rows of ``x`` (so :math:`H(p_D) = \log N`), the
encoder's Gaussians :math:`q_\phi(z|x_n) = \mathcal N(m_n, \mathrm{diag}\,s^2)` and the exact
model of :class:`~pyrovae.models.linear_gaussian.LinearGaussianVAE`, :func:`elbo_forms` returns

- the ELBO of eq. 12, :math:`\frac1N \sum_n \mathcal L(x_n)`, by ``exact_elbo`` (eq. 11, no Monte Carlo);
- eq. 19's right-hand side, :math:`-\mathrm{KL}(q(x,z)\,\|\,p(x,z)) - \log N`, from the entropy of
  each :math:`q(z|x_n)` and the cross-entropies :math:`\mathbb E_{q(z|x_n)}[\log p(z)]` and
  :math:`\mathbb E_{q(z|x_n)}[\log p_\theta(x_n|z)]`, each in closed form (no KL formula involved);
- eq. 20's, :math:`-\mathrm{KL}(p_D\,\|\,p_\theta) - \frac1N\sum_n \mathrm{KL}(q(z|x_n)\,\|\,p_\theta(z|x_n)) - \log N`,
  from the exact :math:`\log p_\theta(x_n)` and eq. 16 against the exact posterior;
- eq. 21's, :math:`-\mathrm{KL}(q(z)\,\|\,p(z)) - \mathbb E_{q(z)}[\mathrm{KL}(q(x|z)\,\|\,p_\theta(x|z))] - \log N`,
  by Monte Carlo over :math:`z \sim q(z)` (eq. 31: a point uniformly, then its Gaussian), with the
  responsibilities :math:`q(x_n|z)` of eq. 31 computed exactly for each draw, and its standard error;
- eq. 32's two parts, the mutual information :math:`I_q(x; z)` and :math:`\mathrm{KL}(q(z)\,\|\,p(z))`,
  from the same draws, beside :math:`\frac1N \sum_n \mathrm{KL}(q(z|x_n)\,\|\,p(z))` in closed form.

So eq. 19 and 20 can be checked to float64 rounding, and eq. 21 and 32 within their standard
errors (``tests/test_identities.py``; ``examples/seed_identities.py`` prints every side).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError, positive_int
from ..models.kl import kl_diag_gaussian_std_normal
from ..models.likelihoods import gaussian_log_likelihood
from ..models.linear_gaussian import LinearEncoder, LinearGaussianVAE

__all__ = ["ElboForms", "elbo_forms"]

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class ElboForms:
    """Each side of eq. 19-21 and 32 for :math:`p_D` uniform over ``n_points`` points, in nats.

    ``*_se`` are Monte Carlo standard errors (``draws`` draws of :math:`z \\sim q(z)`); every other
    number is exact. ``eq19``, ``eq20``, ``eq21`` are the right-hand sides minus :math:`H(p_D)`, to
    compare with ``elbo``.
    """

    n_points: int
    draws: int
    elbo: float
    entropy_data: float
    kl_joint: float
    eq19: float
    kl_data_model: float
    kl_posterior: float
    eq20: float
    kl_aggregate: float
    conditional_kl: float
    eq21: float
    eq21_se: float
    kl_prior: float
    mutual_information: float
    kl_split_se: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _standard_error(values: torch.Tensor) -> float:
    return float(values.std() / math.sqrt(len(values)))


@torch.no_grad()
def elbo_forms(
    vae: LinearGaussianVAE, x: torch.Tensor, draws: int = 100_000, seed: int = 0, chunk: int = 10_000
) -> ElboForms:
    r"""Every side of eq. 19-21 and 32 for the data ``x`` (``(N, x_dim)``, :math:`p_D` uniform
    over its rows) and ``vae``'s encoder, the Monte Carlo ones from ``draws`` draws of
    :math:`z \sim q_\phi(z)` (seeded by ``seed``, on a generator of its own)."""
    if not isinstance(vae, LinearGaussianVAE) or not isinstance(vae.encoder, LinearEncoder):
        raise ConfigError("elbo_forms needs a LinearGaussianVAE with encoder='linear' (exact model, Gaussian q)")
    if x.dim() != 2 or x.shape[1] != vae.x_dim or x.shape[0] < 2:
        raise ConfigError(f"x must have shape (N >= 2, {vae.x_dim}), got {tuple(x.shape)}")
    positive_int("draws", draws)
    n = x.shape[0]
    log_n = math.log(n)
    loc, scale = vae.encoder(x)  # (N, k), (N, k)
    w, b, sigma = vae.weight, vae.bias, vae.sigma
    elbo = vae.exact_elbo(x).elbo.mean()

    # eq. 19: entropies and cross-entropies of Gaussians, each in closed form
    entropy_q = (0.5 * (1 + _LOG_2PI) + torch.log(scale)).sum(-1)
    cross_prior = -0.5 * (vae.z_dim * _LOG_2PI + (loc**2 + scale**2).sum(-1))
    residual = x - loc @ w.mT - b
    spread = ((w**2) @ (scale**2).mT).sum(0)  # tr(W diag(s_n^2) W^T) per point
    cross_lik = -0.5 * (vae.x_dim * torch.log(2 * math.pi * sigma**2) + (residual.pow(2).sum(-1) + spread) / sigma**2)
    kl_joint = (-log_n - entropy_q - cross_prior - cross_lik).mean()

    # eq. 20: the exact marginal likelihood and the KL to the exact posterior
    kl_data_model = (-log_n - vae.exact_log_marginal(x)).mean()
    kl_posterior = vae.kl_to_posterior(x).mean()

    # eq. 21 and 32 by Monte Carlo over z ~ q(z)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    terms = []  # per draw: log q(z) - log p(z); sum_m r_m [log r_m - log p(x_m|z)]; log q(z|x_n) - log q(z)
    done = 0
    while done < draws:
        size = min(chunk, draws - done)
        points = torch.randint(n, (size,), generator=generator).to(x.device)
        eps = torch.randn(size, vae.z_dim, generator=generator, dtype=x.dtype).to(x.device)
        z = loc[points] + scale[points] * eps
        log_q_each = gaussian_log_likelihood(z[:, None, :], loc[None], scale[None])  # (S, N): log q(z|x_m)
        log_q = torch.logsumexp(log_q_each, -1) - log_n
        log_prior = gaussian_log_likelihood(z, z.new_zeros(()), z.new_ones(()))  # log N(z; 0, I)
        log_r = log_q_each - torch.logsumexp(log_q_each, -1, keepdim=True)  # log q(x_m|z), eq. 31
        log_lik = gaussian_log_likelihood(x[None], vae.decoder(z)[:, None, :], sigma)  # (S, N)
        conditional = (log_r.exp() * (log_r - log_lik)).sum(-1)
        information = log_q_each.gather(1, points[:, None]).squeeze(1) - log_q
        terms.append(torch.stack([log_q - log_prior, conditional, information], -1))
        done += size
    terms = torch.cat(terms)
    means = terms.mean(0)
    kl_prior = kl_diag_gaussian_std_normal(loc, scale).mean()
    return ElboForms(
        n_points=n,
        draws=draws,
        elbo=float(elbo),
        entropy_data=log_n,
        kl_joint=float(kl_joint),
        eq19=float(-kl_joint - log_n),
        kl_data_model=float(kl_data_model),
        kl_posterior=float(kl_posterior),
        eq20=float(-kl_data_model - kl_posterior - log_n),
        kl_aggregate=float(means[0]),
        conditional_kl=float(means[1]),
        eq21=float(-means[0] - means[1] - log_n),
        eq21_se=_standard_error(terms[:, 0] + terms[:, 1]),
        kl_prior=float(kl_prior),
        mutual_information=float(means[2]),
        kl_split_se=_standard_error(terms[:, 0] + terms[:, 2]),
    )
