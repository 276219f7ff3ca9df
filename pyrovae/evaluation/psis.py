r"""The Pareto :math:`\hat k` diagnostic of importance weights (PSIS, Vehtari et al. 2024).

PSIS fits a generalised Pareto distribution to the largest importance weights; its shape
:math:`\hat k` says how heavy the tail of :math:`w` is. Below 0.5 the weights have finite variance
and the IWAE estimate converges at the usual :math:`1/\sqrt K` rate; above 0.7 the estimate is
unreliable for any practical :math:`K`, i.e. :math:`q_\phi(z|x)` misses much of
:math:`p_\theta(z|x)`.

The estimate is computed here, with NumPy only, rather than by ArviZ: ArviZ's two lines disagree
on the size of the tail (ArviZ 0.x, like R's ``loo``, fits :math:`\lceil \min(S/5, 3\sqrt S)\rceil`
weights; arviz-stats 1.x fits :math:`\lfloor\cdot\rfloor` of the same and reads its argument as a
log-likelihood, i.e. negated log weights), so the same weights would give a different
:math:`\hat k` depending on the Python version a user installed. The tests check this module
against both lines where their tails coincide.

References:

- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry, *Pareto smoothed importance sampling*,
  JMLR 25(72), 2024 (tail size, the weakly informative prior on :math:`k`).
- J. Zhang, M. A. Stephens, *A new and efficient estimation method for the generalized Pareto
  distribution*, Technometrics 51(3), 2009 (the fit).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["psis_khat", "psis_khat_from_largest", "gpd_shape", "psis_tail_length", "KHAT_THRESHOLD", "PSIS_MIN_DRAWS"]

#: Pareto k-hat above which importance sampling is unreliable (Vehtari et al. 2024)
KHAT_THRESHOLD = 0.7
#: PSIS fits the tail to ceil(min(S/5, 3 sqrt(S))) draws and needs at least 5 of them
PSIS_MIN_DRAWS = 21
#: the prior on k: worth this many tail draws, centred at 0.5 (Vehtari et al. 2024, appendix)
_PRIOR_DRAWS, _PRIOR_K = 10, 0.5


def psis_tail_length(draws: int) -> int:
    r"""How many of the largest weights PSIS fits: :math:`M = \lceil \min(S/5,\ 3\sqrt{S}) \rceil`
    for :math:`S` independent draws (relative efficiency 1)."""
    return math.ceil(min(draws / 5, 3 * math.sqrt(draws)))


def gpd_shape(exceedances: np.ndarray) -> float:
    r"""Shape :math:`k` of a generalised Pareto distribution fitted to positive ``exceedances``.

    The fit of Zhang & Stephens (2009): with :math:`\theta = -k/\sigma`, the shape that maximises
    the likelihood for a fixed :math:`\theta` is :math:`k(\theta) = \frac1n \sum_i \log(1 - \theta
    y_i)`, and the profile log-likelihood is :math:`\ell(\theta) = n[\log(-\theta/k(\theta)) -
    k(\theta) - 1]`. :math:`\theta` is averaged over the grid

    .. math::

        \theta_j = \frac1{y_{(n)}} + \frac{1 - \sqrt{m/(j - \frac12)}}{3\, y_{(\lfloor n/4 + 1/2
        \rfloor)}}, \qquad j = 1, \dots, m = 30 + \lfloor\sqrt n\rfloor,

    with weights proportional to :math:`e^{\ell(\theta_j)}`, and :math:`\hat k = k(\hat\theta)` is
    then pulled towards 0.5 as by 10 prior draws: :math:`(n \hat k + 10 \cdot 0.5) / (n + 10)`
    (Vehtari et al. 2024).

    :param exceedances: 1-d, the :math:`n \ge 5` tail weights minus the threshold, all positive.
    """
    y = np.sort(np.asarray(exceedances, dtype=np.float64))
    n = y.size
    m = 30 + math.isqrt(n)
    grid = 1 / y[-1] + (1 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))) / (3 * y[int(n / 4 + 0.5) - 1])
    shapes = np.log1p(-grid[:, None] * y).mean(axis=1)
    profile = n * (np.log(-grid / shapes) - shapes - 1)
    weights = 1 / np.exp(profile[None, :] - profile[:, None]).sum(axis=1)
    theta = np.sum(grid * weights) / np.sum(weights)
    k = np.log1p(-theta * y).mean()
    return float((n * k + _PRIOR_DRAWS * _PRIOR_K) / (n + _PRIOR_DRAWS))


def _khat_of_row(log_weights: np.ndarray, tail_length: int) -> float:
    """k-hat of one row: the weights above the (M+1)-th largest, minus it, fitted by gpd_shape."""
    shifted = log_weights - log_weights.max()
    threshold = max(np.sort(shifted)[-(tail_length + 1)], math.log(np.finfo(np.float64).tiny))
    tail = shifted[shifted > threshold]
    if tail.size < 5:  # ties or zero weights leave too few points to fit
        return math.inf
    return gpd_shape(np.exp(tail) - math.exp(threshold))


def psis_khat(log_weights: torch.Tensor | np.ndarray, constant_atol: float = 1e-6) -> np.ndarray:
    r"""Pareto :math:`\hat k` of importance weights, one per row.

    For each row of :math:`S` log weights, the :math:`M` (:func:`psis_tail_length`) largest
    weights above the next largest one, :math:`w_{(S-M)}`, are fitted by a generalised Pareto
    distribution (:func:`gpd_shape` of :math:`w - w_{(S-M)}`); the draws are independent, so the
    relative efficiency is 1. A row with fewer than 5 weights strictly above the threshold (ties)
    gets :math:`+\infty`. Rows whose log weights all lie within ``constant_atol`` of each other
    (:math:`q \propto p(x, z)` up to rounding, e.g. :math:`q` is the exact posterior) get
    :math:`\hat k = -\infty`: the weights are bounded, and the importance-sampling estimate has a
    relative error below ``constant_atol`` whatever the tail, whereas a fit would report the
    :math:`\hat k` of the rounding noise. NumPy's overflow warnings from fitting very heavy tails
    are silenced: a large :math:`\hat k` is the answer, not an error.

    :param log_weights: shape ``(..., S)`` with :math:`S \ge 21` draws per row.
    :param float constant_atol: spread of log weights (nats) below which a row counts as constant.
    :returns: float64 array of shape ``(...)``.
    """
    if torch.is_tensor(log_weights):
        log_weights = log_weights.detach().cpu().double().numpy()
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim == 0 or lw.shape[-1] < PSIS_MIN_DRAWS:
        raise ConfigError(
            f"PSIS needs at least {PSIS_MIN_DRAWS} draws per row (the last dimension) to fit the Pareto tail, "
            f"got shape {lw.shape}"
        )
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ConfigError("log weights must be finite or -inf, got NaN or +inf")
    flat = lw.reshape(-1, lw.shape[-1])
    if np.isneginf(flat.max(-1)).any():
        raise ConfigError("a row of log weights is all -inf (every importance weight is zero)")
    tail_length = psis_tail_length(flat.shape[-1])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        khat = np.array([_khat_of_row(row, tail_length) for row in flat], dtype=np.float64)
    khat[flat.max(-1) - flat.min(-1) <= constant_atol] = -np.inf
    return khat.reshape(lw.shape[:-1])


def psis_khat_from_largest(
    largest: torch.Tensor | np.ndarray,
    draws: int,
    smallest: torch.Tensor | np.ndarray,
    constant_atol: float = 1e-6,
) -> np.ndarray:
    r"""Pareto :math:`\hat k` of ``draws`` log weights per row from their largest ones alone, equal to
    :func:`psis_khat` of all of them.

    PSIS uses only the :math:`M` largest weights (:func:`psis_tail_length`) and the next one below
    them (the threshold of the tail), so a streaming evaluation needs to keep just those
    :math:`M + 1 = O(\sqrt S)` numbers per row, not all :math:`S`; the fit then sees the same
    threshold and tail as with all :math:`S` weights (``tests/test_evaluate.py`` checks the two agree).

    :param largest: shape ``(..., L)``: at least the :math:`M + 1` largest log weights of each row
        (all of them when ``L == draws``), in any order.
    :param int draws: :math:`S`, how many log weights each row had.
    :param smallest: shape ``(...)``: the smallest log weight of each row (for the constant-row rule
        of :func:`psis_khat`).
    """
    if torch.is_tensor(largest):
        largest = largest.detach().cpu().double().numpy()
    if torch.is_tensor(smallest):
        smallest = smallest.detach().cpu().double().numpy()
    lw = np.asarray(largest, dtype=np.float64)
    if lw.shape[-1] >= draws:
        return psis_khat(lw, constant_atol)
    m = psis_tail_length(draws)
    if draws < PSIS_MIN_DRAWS or lw.shape[-1] < m + 1:
        raise ConfigError(
            f"PSIS of {draws} draws needs the {m + 1} largest log weights of each row, got {lw.shape[-1]}"
        )
    top = np.sort(lw, axis=-1)[..., -(m + 1) :]
    flat = top.reshape(-1, m + 1)
    if np.isnan(flat).any() or np.isposinf(flat).any():
        raise ConfigError("log weights must be finite or -inf, got NaN or +inf")
    if np.isneginf(flat[:, -1]).any():
        raise ConfigError("a row of log weights is all -inf (every importance weight is zero)")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        khat = np.array([_khat_of_row(row, m) for row in flat], dtype=np.float64)
    spread = flat[:, -1] - np.asarray(smallest, dtype=np.float64).reshape(-1)
    khat[spread <= constant_atol] = -np.inf
    return khat.reshape(top.shape[:-1])
