r"""Evaluation: the importance-weighted estimate of :math:`\log p_\theta(x)`, the ELBO and its terms,
active latent units, and the Pareto :math:`\hat k` diagnostic of :math:`q_\phi(z|x)`.

For one data point and :math:`z_1, \dots, z_K \sim q_\phi(z|x)`, the importance weights are

.. math::

    \log w_s = \log p_\theta(x|z_s) + \log p(z_s) - \log q_\phi(z_s|x),

which the model computes (:meth:`pyrovae.models.LatentVariableModel.log_weights`; for the VAE,
:math:`\log p_\theta(x|z)` by the hand-written eq. 13 / 14, :math:`\log p(z)` from the prior module
and :math:`\log q_\phi(z|x)` written out with the noise that drew :math:`z = \mu + \sigma \odot
\varepsilon`).
Eq. 7 writes :math:`\log p_\theta(x) = \log \mathbb E_q[w]`; its Monte Carlo estimate is the
IWAE bound of Burda et al. (2015),

.. math::

    \hat{\mathcal L}_K(x) = \log \frac1K \sum_{s=1}^K w_s, \qquad
    \mathbb E[\hat{\mathcal L}_1] = \mathcal L_{\mathrm{ELBO}}(x) \le \mathbb E[\hat{\mathcal L}_K]
    \le \mathbb E[\hat{\mathcal L}_{K+1}] \le \log p_\theta(x),

which tends to :math:`\log p_\theta(x)` as :math:`K \to \infty`. The first inequality is eq. 8
(Jensen); the gap :math:`\log p_\theta(x) - \mathcal L_{\mathrm{ELBO}}(x)` is
:math:`\mathrm{KL}(q_\phi(z|x)\,\|\,p_\theta(z|x))` (eq. 20, per data point).

The ELBO is estimated from the same draws, :math:`\frac1K \sum_s \log w_s` (the mean of
:math:`K` one-sample estimates), split into :math:`\frac1K\sum_s \log p_\theta(x|z_s)` and
:math:`\frac1K\sum_s [\log q_\phi(z_s|x) - \log p(z_s)]`; so :math:`\hat{\mathcal L}_K \ge` the
ELBO estimate on every data point (Jensen on the draws themselves), and where :math:`q` is the
exact posterior both equal :math:`\log p_\theta(x)` with no Monte Carlo error. The closed-form KL
(the model's :meth:`~pyrovae.models.LatentVariableModel.analytic_kl`: the prior's eq. 18 or eq. 16 for
the VAE) is reported beside the Monte Carlo one where the model has one.

The :math:`K` draws are made in chunks of ``chunk_size`` for ``batch_size`` data points at a
time, and the log-mean-exp is accumulated as a running maximum and a rescaled running sum
(:class:`LogMeanExp`); for PSIS only the :math:`M + 1 \approx 3\sqrt K` largest log weights of each
point are kept, merged chunk by chunk (:func:`~pyrovae.evaluation.psis.psis_khat_from_largest`). So
memory is bounded by ``batch_size * chunk_size`` decoder outputs plus ``batch_size * (M + 1)``
numbers, whatever :math:`K` and the data set size (``batch_size`` is lowered for a very large
:math:`K` to keep the second part under :data:`TAIL_ELEMENTS`); only ``keep_draws`` keeps all
:math:`K` draws, of the points it names.

PSIS (Vehtari et al. 2024) fits a generalised Pareto distribution to the largest weights; its shape
:math:`\hat k` says how heavy the tail of :math:`w` is. Below 0.5 the weights have finite variance
and the IWAE estimate converges at the usual :math:`1/\sqrt K` rate; above 0.7 the estimate is
unreliable for any practical :math:`K`, i.e. :math:`q_\phi(z|x)` misses much of
:math:`p_\theta(z|x)`.

References:

- Y. Burda, R. Grosse, R. Salakhutdinov, *Importance weighted autoencoders*, ICLR 2016
  (arXiv:1509.00519): the bound and section 5.2 (active units).
- A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry, *Pareto smoothed importance sampling*,
  JMLR 25(72), 2024.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import NamedTuple

import numpy as np
import pyro
import torch

from ..data import Dataset
from ..errors import ConfigError, positive_int
from ..models import LatentVariableModel
from .active_units import active_units_from_locs, evaluation_input
from .psis import PSIS_MIN_DRAWS, psis_khat_from_largest, psis_tail_length
from .report import Draws, Evaluation

__all__ = ["evaluate", "Evaluation", "Draws", "iwae_log_likelihood", "LogMeanExp"]  # (Evaluation, Draws: report.py)

#: size of the widest activation of one pass when ``chunk_size`` is not given (64 MiB in float32)
CHUNK_ELEMENTS = 2**24
#: most largest-weights kept for PSIS at once, over the points of one pass (16 MiB in float64)
TAIL_ELEMENTS = 2**21


# -- streaming log-mean-exp -----------------------------------------------------------------
class LogMeanExp:
    r"""Streaming :math:`\log \frac1K \sum_s e^{\ell_s}` over chunks of log weights, in float64.

    Keeps the running maximum :math:`m`, :math:`S_1 = \sum_s e^{\ell_s - m}` and
    :math:`S_2 = \sum_s e^{2(\ell_s - m)}`; a chunk with a larger maximum rescales both sums. The
    result equals ``torch.logsumexp(all, 0) - log K`` and never overflows.
    """

    def __init__(self) -> None:
        self.count = 0
        self.max: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.sum_sq: torch.Tensor | None = None

    def update(self, log_weights: torch.Tensor) -> None:
        """Add a chunk of shape ``(chunk, ...)``: draws along the first dimension."""
        lw = log_weights.detach().to(torch.float64)
        if torch.isnan(lw).any() or (lw == math.inf).any():
            raise ConfigError("log weights must be finite or -inf, got NaN or +inf")
        chunk_max = lw.amax(0)
        new_max = chunk_max if self.max is None else torch.maximum(self.max, chunk_max)
        new_max = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))  # all -inf so far
        scaled = torch.exp(lw - new_max)
        if self.max is None:
            self.sum, self.sum_sq = scaled.sum(0), scaled.pow(2).sum(0)
        else:
            factor = torch.exp(self.max - new_max)
            self.sum = self.sum * factor + scaled.sum(0)
            self.sum_sq = self.sum_sq * factor**2 + scaled.pow(2).sum(0)
        self.max = new_max
        self.count += lw.shape[0]

    def log_mean_exp(self) -> torch.Tensor:
        r""":math:`\log \frac1K \sum_s e^{\ell_s}` (float64)."""
        if self.max is None:
            raise ConfigError("no log weights were added")
        return self.max + torch.log(self.sum) - math.log(self.count)

    def std_error(self) -> torch.Tensor:
        r"""Delta-method Monte Carlo standard error of :meth:`log_mean_exp`:
        :math:`\widehat{\mathrm{sd}}(w) / (\sqrt K\, \bar w)`. Meaningful only where the weights have
        finite variance (:math:`\hat k < 0.5`); ``nan`` for :math:`K = 1`.
        """
        if self.max is None:
            raise ConfigError("no log weights were added")
        n = self.count
        if n < 2:
            return torch.full_like(self.sum, math.nan)
        mean, mean_sq = self.sum / n, self.sum_sq / n
        variance = ((mean_sq - mean**2) * n / (n - 1)).clamp(min=0)
        return torch.sqrt(variance / n) / mean


# -- results -----------------------------------------------------------------------------------
def _default_chunk_size(vae: LatentVariableModel, k: int, batch_size: int) -> int:
    width = vae.activation_sizes().widest
    return max(1, min(k, CHUNK_ELEMENTS // (batch_size * width)))


class _Batch(NamedTuple):
    log_px: torch.Tensor
    log_px_se: torch.Tensor
    elbo: torch.Tensor
    reconstruction: torch.Tensor
    means: dict[str, torch.Tensor]  # per site, (b, dim): E_q[z_site | x], for active units
    kl_analytic: torch.Tensor | None  # (b,): the model's closed-form KL, where it has one
    largest: torch.Tensor | None  # (m, b): the m largest log weights of each point, float64, for PSIS
    smallest: torch.Tensor | None  # (b,): the smallest log weight of each point, for PSIS
    log_weight: torch.Tensor | None  # (k, keep), float64 on the CPU, when asked for
    z: torch.Tensor | None  # (k, keep, latent dims) on the CPU, when asked for


def _weigh_batch(
    vae: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    chunk_size: int,
    generator: torch.Generator | None,
    psis: bool,
    keep: int,
) -> _Batch:
    """All k importance weights of the rows of ``x`` (:meth:`~pyrovae.models.LatentVariableModel.log_weights`),
    chunk by chunk; only sums, the largest weights (for PSIS) and the draws of the first ``keep`` rows
    cross chunks."""
    b = x.shape[0]
    fixed_means: dict[str, torch.Tensor] = {}
    accumulator = LogMeanExp()
    sum_lw = torch.zeros(b, dtype=torch.float64, device=x.device)
    sum_lik = torch.zeros(b, dtype=torch.float64, device=x.device)
    mean_sums: dict[str, torch.Tensor] = {}
    weights: list[torch.Tensor] = []
    draws: list[torch.Tensor] = []
    m = min(k, psis_tail_length(k) + 1)
    largest = smallest = None
    for done in range(0, k, chunk_size):
        chunk = vae.log_weights(x, min(chunk_size, k - done), generator)
        log_weight = chunk.log_weight
        accumulator.update(log_weight)
        sum_lw += log_weight.double().sum(0)
        sum_lik += chunk.log_lik.double().sum(0)
        for site, mean in chunk.means.items():
            if mean.dim() == 2:  # the guide's mean given x alone: the same in every chunk
                fixed_means[site] = mean
                continue
            total = mean.sum(0)  # given the draws above: averaged over all k draws
            mean_sums[site] = mean_sums[site] + total if site in mean_sums else total
        if psis:
            lw = log_weight.double()
            pool = lw if largest is None else torch.cat([largest, lw])
            largest = pool.topk(min(m, pool.shape[0]), dim=0).values
            low = lw.amin(0)
            smallest = low if smallest is None else torch.minimum(smallest, low)
        if keep:
            weights.append(log_weight[:, :keep].double().cpu())
            draws.append(chunk.z[:, :keep].cpu())
    means = {**fixed_means, **{site: total / k for site, total in mean_sums.items()}}
    return _Batch(
        accumulator.log_mean_exp(),
        accumulator.std_error(),
        sum_lw / k,
        sum_lik / k,
        means,
        vae.analytic_kl(x),
        largest,
        smallest,
        torch.cat(weights) if keep else None,
        torch.cat(draws) if keep else None,
    )


@torch.no_grad()
def evaluate(
    vae: LatentVariableModel,
    x: torch.Tensor | Dataset,
    k: int = 5000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    seed: int | None = None,
    psis: bool = True,
    active_threshold: float = 0.01,
    keep_draws: int = 0,
    progress: bool = False,
) -> Evaluation:
    r"""Evaluate ``vae`` on ``x``: IWAE :math:`\log p_\theta(x)`, ELBO and its terms, active units, PSIS :math:`\hat k`.

    Everything runs under ``torch.no_grad()`` on the model's device and in its dtype (the
    log-mean-exp accumulates in float64).

    :param vae: a :class:`~pyrovae.models.LatentVariableModel`: a :class:`~pyrovae.VAE`, a two-level
        VAE, or a model of yours (its :meth:`~pyrovae.models.LatentVariableModel.log_weights`).
    :param x: data, shape ``(N, x_dim)``, or a :class:`~pyrovae.data.Dataset` (its test set).
    :param int k: importance samples per data point; 5000 as in Burda et al. (2015).
    :param int batch_size: data points per pass (lowered where ``batch_size * (M + 1)`` largest
        weights kept for PSIS would exceed :data:`TAIL_ELEMENTS`; the one used is reported).
    :param chunk_size: draws per pass; default: as many as keep one pass under
        :data:`CHUNK_ELEMENTS` activations (``chunk_size * batch_size * widest``, the model's widest
        activation, :meth:`~pyrovae.models.LatentVariableModel.activation_sizes`).
    :param seed: seeds a private ``torch.Generator`` (the global RNG is untouched); ``None`` uses
        the global RNG.
    :param bool psis: compute :math:`\hat k` (needs ``k >= 21``; skipped with a warning otherwise).
    :param float active_threshold: :math:`\delta` of :func:`active_units`.
    :param int keep_draws: keep the draws and log weights of the first ``keep_draws`` data points
        (for :meth:`Evaluation.to_inference_data`); costs ``k * keep_draws * z_dim`` numbers.
    :param bool progress: show a progress bar over data points (tqdm, on stderr).
    """
    start = time.perf_counter()
    x = evaluation_input(vae, x)
    positive_int("k", k)
    positive_int("batch_size", batch_size)
    if psis and k >= PSIS_MIN_DRAWS:
        batch_size = min(batch_size, max(1, TAIL_ELEMENTS // (psis_tail_length(k) + 1)))
    chunk_size = (
        _default_chunk_size(vae, k, batch_size) if chunk_size is None else positive_int("chunk_size", chunk_size)
    )
    positive_int("keep_draws", keep_draws, minimum=0)
    if psis and k < PSIS_MIN_DRAWS:
        warnings.warn(f"PSIS k-hat needs k >= {PSIS_MIN_DRAWS} draws per data point, got k={k}: skipped", stacklevel=2)
        psis = False
    generator = None
    if seed is not None:
        generator = torch.Generator(device=vae.device)
        generator.manual_seed(seed)
    one_level = len(vae.latent_sites) == 1
    n = x.shape[0]
    batches: list[_Batch] = []
    khats: list[np.ndarray] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"evaluate k={k}", unit="point", leave=False)
    was_training = vae.training
    vae.eval()
    try:
        with pyro.validation_enabled(False):  # x was validated above, and z is real by construction
            for first in range(0, n, batch_size):
                xb = x[first : first + batch_size]
                keep = max(0, min(keep_draws - first, xb.shape[0]))
                batch = _weigh_batch(vae, xb, k, chunk_size, generator, psis, keep)
                if psis:
                    khats.append(psis_khat_from_largest(batch.largest.mT, k, batch.smallest))
                batches.append(batch._replace(largest=None, smallest=None))
                if bar is not None:
                    bar.update(xb.shape[0])
    finally:
        vae.train(was_training)
        if bar is not None:
            bar.close()

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(batch, name) for batch in batches]).cpu()

    elbo, reconstruction = cat("elbo"), cat("reconstruction")
    draws = None
    if keep_draws:
        kept = [batch for batch in batches if batch.z is not None]
        z, log_weight = torch.cat([b.z for b in kept], 1), torch.cat([b.log_weight for b in kept], 1)
        draws = Draws(z, log_weight, x[: z.shape[1]].cpu(), torch.arange(z.shape[1]))
    kl_analytic = None
    if all(b.kl_analytic is not None for b in batches):
        kl_analytic = torch.cat([b.kl_analytic for b in batches]).double().cpu()
    means = {site: torch.cat([b.means[site] for b in batches]).cpu() for site in batches[0].means}
    # per level for the two-level VAE; one level's units are the whole count
    by_site = None if one_level else {site: active_units_from_locs(m, active_threshold) for site, m in means.items()}
    return Evaluation(
        k=k,
        log_px=cat("log_px"),
        log_px_se=cat("log_px_se"),
        elbo=elbo,
        reconstruction=reconstruction,
        kl=reconstruction - elbo,
        kl_analytic=kl_analytic,
        khat=np.concatenate(khats) if psis else None,
        active=active_units_from_locs(torch.cat(list(means.values()), 1), active_threshold),
        z_dim=sum(m.shape[-1] for m in means.values()),
        batch_size=batch_size,
        chunk_size=chunk_size,
        seed=seed,
        device=str(x.device),
        dtype=str(x.dtype).replace("torch.", ""),
        seconds=time.perf_counter() - start,
        draws=draws,
        active_by_site=by_site,
        discrete_dims=vae.x_dim if vae.likelihood.discrete else None,
    )


def iwae_log_likelihood(
    vae: LatentVariableModel,
    x: torch.Tensor | Dataset,
    k: int = 5000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    r"""The IWAE estimate :math:`\log \frac1K \sum_s w_s` of :math:`\log p_\theta(x)` per data point.

    Same estimator and arguments as :func:`evaluate` (which also returns the ELBO, active units and
    PSIS :math:`\hat k` from the same draws at almost no extra cost); returns shape ``(N,)``,
    float64, nats.
    """
    return evaluate(vae, x, k=k, batch_size=batch_size, chunk_size=chunk_size, seed=seed, psis=False).log_px
