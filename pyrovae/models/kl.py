"""Closed-form Kullback-Leibler divergences between Gaussians (eq. 16-18).

These are the hand-written KLs used by :func:`pyrovae.closed_form_elbo`. Pyro's
``TraceMeanField_ELBO`` computes the same quantities through
``torch.distributions.kl_divergence``; the tests check that both agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch.distributions import Distribution, kl_divergence

from ..errors import ConfigError

__all__ = [
    "kl_diag_gaussians",
    "kl_diag_gaussian_std_normal",
    "kl_gaussians",
    "kl_mode",
    "registered_kl",
    "shared_kl",
    "KL_MODES",
]

#: how an ELBO treats KL(q || p) of a latent site
KL_MODES = ("analytic", "monte-carlo")


def kl_diag_gaussians(
    loc_q: torch.Tensor,
    scale_q: torch.Tensor,
    loc_p: torch.Tensor,
    scale_p: torch.Tensor,
) -> torch.Tensor:
    r"""KL divergence between two diagonal Gaussians, eq. 16.

    .. math::

        \mathrm{KL}(q \,\|\, p) = \tfrac12 \Big[ \log\frac{|\Sigma_2|}{|\Sigma_1|} - d
            + \mathrm{tr}(\Sigma_2^{-1}\Sigma_1)
            + (\mu_2 - \mu_1)^\top \Sigma_2^{-1} (\mu_2 - \mu_1) \Big]

    with :math:`\Sigma_1 = \mathrm{diag}(\sigma_q^2)`, :math:`\Sigma_2 = \mathrm{diag}(\sigma_p^2)`,
    which for diagonal covariances is a sum over the :math:`d` coordinates.

    :param torch.Tensor loc_q: mean :math:`\mu_1` of q, shape ``(..., d)``.
    :param torch.Tensor scale_q: standard deviations of q (not variances), shape ``(..., d)``.
    :param torch.Tensor loc_p: mean :math:`\mu_2` of p, broadcastable to ``(..., d)``.
    :param torch.Tensor scale_p: standard deviations of p, broadcastable to ``(..., d)``.
    :returns: the KL in nats, shape ``(...)`` (the last dimension is summed).
    """
    var_ratio = (scale_q / scale_p) ** 2
    mahalanobis = ((loc_p - loc_q) / scale_p) ** 2
    # log|Sigma_2| - log|Sigma_1| = sum(log sigma_p^2) - sum(log sigma_q^2) = -sum(log var_ratio)
    return 0.5 * (-torch.log(var_ratio) - 1.0 + var_ratio + mahalanobis).sum(-1)


def kl_diag_gaussian_std_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""KL divergence from :math:`\mathcal N(\mu, \mathrm{diag}(\sigma^2))` to :math:`\mathcal N(0, I)`, eq. 18.

    .. math::

        \mathrm{KL}(q_\phi(z|x) \,\|\, p(z)) = \tfrac12 \Big[ -\sum_i \log \sigma_i^2 - d
            + \sum_i \sigma_i^2 + \sum_i \mu_i^2 \Big]

    :param torch.Tensor loc: :math:`\mu`, shape ``(..., d)``.
    :param torch.Tensor scale: :math:`\sigma` (standard deviations), shape ``(..., d)``.
    :returns: the KL in nats, shape ``(...)``.
    """
    var = scale**2
    return 0.5 * (-torch.log(var) - 1.0 + var + loc**2).sum(-1)


def kl_gaussians(loc_q: torch.Tensor, cov_q: torch.Tensor, loc_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    r"""KL divergence between two Gaussians with full covariance matrices, eq. 16.

    .. math::

        \mathrm{KL}(q \,\|\, p) = \tfrac12 \Big[ \log\frac{|\Sigma_2|}{|\Sigma_1|} - d
            + \mathrm{tr}(\Sigma_2^{-1}\Sigma_1)
            + (\mu_2 - \mu_1)^\top \Sigma_2^{-1} (\mu_2 - \mu_1) \Big]

    with :math:`q = \mathcal N(\mu_1, \Sigma_1)` and :math:`p = \mathcal N(\mu_2, \Sigma_2)`.
    Determinants, the trace and the quadratic form are computed from Cholesky factors (no explicit
    inverse). Used by the exact checks of :mod:`pyrovae.models.linear_gaussian`, where posteriors have
    full covariance.

    :param torch.Tensor loc_q: :math:`\mu_1`, shape ``(..., d)``.
    :param torch.Tensor cov_q: :math:`\Sigma_1`, symmetric positive definite, shape ``(..., d, d)``.
    :param torch.Tensor loc_p: :math:`\mu_2`, broadcastable to ``(..., d)``.
    :param torch.Tensor cov_p: :math:`\Sigma_2`, broadcastable to ``(..., d, d)``.
    :returns: the KL in nats, shape ``(...)``.
    """
    d = loc_q.shape[-1]
    for name, cov in (("cov_q", cov_q), ("cov_p", cov_p)):
        if cov.dim() < 2 or cov.shape[-2:] != (d, d):
            raise ConfigError(f"{name} must end in shape ({d}, {d}) to match the mean, got {tuple(cov.shape)}")
    batch = torch.broadcast_shapes(loc_q.shape[:-1], loc_p.shape[:-1], cov_q.shape[:-2], cov_p.shape[:-2])
    chol_q = torch.linalg.cholesky(cov_q).expand(*batch, d, d)
    chol_p = torch.linalg.cholesky(cov_p).expand(*batch, d, d)
    log_det_q = 2 * torch.log(torch.diagonal(chol_q, dim1=-2, dim2=-1)).sum(-1)
    log_det_p = 2 * torch.log(torch.diagonal(chol_p, dim1=-2, dim2=-1)).sum(-1)
    # tr(Sigma_2^-1 Sigma_1) = ||L_2^-1 L_1||_F^2 and the quadratic form = ||L_2^-1 (mu_2 - mu_1)||^2
    trace = torch.linalg.solve_triangular(chol_p, chol_q, upper=False).pow(2).sum((-2, -1))
    diff = (loc_p - loc_q).expand(*batch, d).unsqueeze(-1)
    mahalanobis = torch.linalg.solve_triangular(chol_p, diff, upper=False).pow(2).sum((-2, -1))
    return 0.5 * (log_det_p - log_det_q - d + trace + mahalanobis)


def registered_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    r""":math:`\mathrm{KL}(q\,\|\,p)` by torch's ``kl_divergence`` where a closed form is registered for
    the pair, else ``None``: the one test of whether a KL is analytic, which Pyro's
    ``TraceMeanField_ELBO`` makes at each latent site (where there is none it takes
    :math:`\log q(z) - \log p(z)` at the draw: :mod:`pyrovae.infer.kl_term`).

    Inside :func:`shared_kl`, a pair of distribution objects asked for again gets the tensor computed
    the first time (the same value, with the same gradient)."""
    memo = _SHARED.get()
    if memo is not None and (id(q), id(p)) in memo:
        return memo[id(q), id(p)][2]
    try:
        kl = kl_divergence(q, p)
    except NotImplementedError:
        kl = None
    if memo is not None:
        memo[id(q), id(p)] = (q, p, kl)  # (holding q and p keeps their ids from being reused)
    return kl


_SHARED: ContextVar[dict[tuple[int, int], tuple[Any, Any, Any]] | None] = ContextVar("pyrovae_shared_kl", default=None)


@contextmanager
def shared_kl() -> Iterator[None]:
    """Within this context :func:`registered_kl` computes the KL of each pair of distribution objects
    once: a step that reads the KL of its latent sites for its record and for its loss pays for one."""
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def kl_mode(q: Distribution, p: Distribution) -> str:
    r"""``"analytic"`` if ``kl_divergence(q, p)`` has a registered closed form, else ``"monte-carlo"``.

    This is the test Pyro's ``TraceMeanField_ELBO`` makes at each latent site: where it raises
    :class:`NotImplementedError` the ELBO falls back to :math:`\log q(z) - \log p(z)` at the
    sampled :math:`z`.
    """
    return "monte-carlo" if registered_kl(q, p) is None else "analytic"
