r"""The Pareto :math:`\hat k` diagnostic of importance weights (PSIS, Vehtari et al. 2024).

PSIS fits a generalised Pareto distribution to the largest importance weights; its shape
:math:`\hat k` says how heavy the tail of :math:`w` is. Below 0.5 the weights have finite variance
and the IWAE estimate converges at the usual :math:`1/\sqrt K` rate; above 0.7 the estimate is
unreliable for any practical :math:`K`, i.e. :math:`q_\phi(z|x)` misses much of
:math:`p_\theta(z|x)`.

Reference: A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry, *Pareto smoothed importance
sampling*, JMLR 25(72), 2024.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["psis_khat", "psis_khat_from_largest", "tail_length", "KHAT_THRESHOLD", "PSIS_MIN_DRAWS"]

#: Pareto k-hat above which importance sampling is unreliable (Vehtari et al. 2024)
KHAT_THRESHOLD = 0.7
#: PSIS fits the tail to ceil(min(S/5, 3 sqrt(S))) draws and needs at least 5 of them
PSIS_MIN_DRAWS = 21


def tail_length(draws: int) -> int:
    r"""How many of the largest of ``draws`` independent weights PSIS fits:
    :math:`M = \lceil \min(S/5,\, 3\sqrt S) \rceil` (Vehtari et al. 2024, with relative efficiency 1)."""
    return math.ceil(min(draws / 5.0, 3 * math.sqrt(draws)))


def import_arviz() -> Any:
    with warnings.catch_warnings():  # arviz 0.2x announces its refactor with a FutureWarning on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


def psis_khat(log_weights: torch.Tensor | np.ndarray, constant_atol: float = 1e-6) -> np.ndarray:
    r"""Pareto :math:`\hat k` of importance weights, one per row, by ArviZ's ``psislw``.

    ``arviz.psislw(log_weights, reff=1.0)`` returns the smoothed log weights and :math:`\hat k`
    for each row (its last dimension is the draws); ``reff = 1`` because the draws from
    :math:`q_\phi(z|x)` are independent. Rows whose log weights all lie within ``constant_atol``
    of each other (:math:`q \propto p(x, z)` up to rounding, e.g. :math:`q` is the exact
    posterior) get :math:`\hat k = -\infty`: the weights are bounded, and the importance-sampling
    estimate has a relative error below ``constant_atol`` whatever the tail, whereas ``psislw``
    reports :math:`+\infty` for exactly equal weights (it finds no tail to fit) and a :math:`\hat k`
    of the rounding noise for nearly equal ones. NumPy's overflow warnings from fitting very heavy
    tails are silenced: a large :math:`\hat k` is the answer, not an error.

    :param log_weights: shape ``(..., S)`` with :math:`S \ge 21` draws per row.
    :param float constant_atol: spread of log weights (nats) below which a row counts as constant.
    :returns: float64 array of shape ``(...)``.
    """
    if torch.is_tensor(log_weights):
        log_weights = log_weights.detach().cpu().double().numpy()
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim == 0 or lw.shape[-1] < PSIS_MIN_DRAWS:
        raise ValueError(
            f"PSIS needs at least {PSIS_MIN_DRAWS} draws per row (the last dimension) to fit the Pareto tail, "
            f"got shape {lw.shape}"
        )
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError("log weights must be finite or -inf, got NaN or +inf")
    flat = lw.reshape(-1, lw.shape[-1])
    if np.isneginf(flat.max(-1)).any():
        raise ValueError("a row of log weights is all -inf (every importance weight is zero)")
    az = import_arviz()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        _, khat = az.psislw(flat, reff=1.0)
    khat = np.array(khat, dtype=np.float64).reshape(flat.shape[0])
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

    PSIS uses only the :math:`M` largest weights (:func:`tail_length`) and the next one below them
    (the threshold of the tail), so a streaming evaluation needs to keep just those
    :math:`M + 1 = O(\sqrt S)` numbers per row, not all :math:`S`. They are handed to ArviZ's
    ``psislw`` padded with :math:`-\infty` to :math:`5M` columns, with the relative efficiency
    ``reff`` that makes its tail length for :math:`5M` draws equal to :math:`M`:
    :math:`3\sqrt{5M / r} = M - \tfrac12`, which rounds up to :math:`M`. The fit then sees the
    same threshold and tail as with all :math:`S` weights (``tests/test_evaluate.py`` checks the
    two agree).

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
    m = tail_length(draws)
    if draws < PSIS_MIN_DRAWS or lw.shape[-1] < m + 1:
        raise ValueError(f"PSIS of {draws} draws needs the {m + 1} largest log weights of each row, got {lw.shape[-1]}")
    top = np.sort(lw, axis=-1)[..., -(m + 1) :]
    padded = np.full((*top.shape[:-1], 5 * m), -np.inf)
    padded[..., -(m + 1) :] = top
    flat = padded.reshape(-1, 5 * m)
    if np.isnan(flat).any() or np.isposinf(flat).any():
        raise ValueError("log weights must be finite or -inf, got NaN or +inf")
    if np.isneginf(flat[:, -1]).any():
        raise ValueError("a row of log weights is all -inf (every importance weight is zero)")
    az = import_arviz()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        _, khat = az.psislw(flat, reff=9 * 5 * m / (m - 0.5) ** 2)
    khat = np.array(khat, dtype=np.float64).reshape(flat.shape[0])
    spread = flat[:, -1] - np.asarray(smallest, dtype=np.float64).reshape(-1)
    khat[spread <= constant_atol] = -np.inf
    return khat.reshape(top.shape[:-1])
