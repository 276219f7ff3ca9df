"""What :func:`pyrovae.evaluate` measured (:class:`Evaluation`): per point and summarised, as a report,
as the JSON of ``evaluation.json``, and as ArviZ data (:class:`Draws`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from . import arviz_compat
from .active_units import ActiveUnits
from .psis import KHAT_THRESHOLD, PSIS_MIN_DRAWS

__all__ = ["Evaluation", "Draws"]


@dataclass
class Draws:
    r"""The draws :math:`z_s \sim q_\phi(z|x)` and their log weights for the first data points.

    :ivar z: shape ``(K, P, z_dim)``. :ivar log_weight: shape ``(K, P)``.
    :ivar x: the ``P`` data points, shape ``(P, x_dim)``. :ivar index: their row numbers.
    """

    z: torch.Tensor
    log_weight: torch.Tensor
    x: torch.Tensor
    index: torch.Tensor


def _number(value: float) -> float | None:
    """A JSON-safe float: ``None`` for nan and infinities."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Evaluation:
    r"""What :func:`evaluate` measured; per-data-point tensors have shape ``(N,)``, in nats.

    :ivar log_px: the IWAE estimate :math:`\hat{\mathcal L}_K(x)` of :math:`\log p_\theta(x)`.
    :ivar log_px_se: its delta-method Monte Carlo standard error (trust it where ``khat < 0.5``).
    :ivar elbo: the ELBO (eq. 11) estimated from the same K draws, :math:`\frac1K\sum_s \log w_s`
        (so ``log_px >= elbo`` holds exactly, by Jensen's inequality on those draws), which equals
        ``reconstruction - kl``.
    :ivar reconstruction: :math:`\mathbb E_q[\log p_\theta(x|z)]`, the mean over the K draws.
    :ivar kl: :math:`\mathrm{KL}(q_\phi(z|x)\,\|\,p(z))`, the mean of :math:`\log q - \log p(z)`
        over the K draws (Monte Carlo).
    :ivar kl_analytic: the same KL in closed form where the prior has one (its ``analytic_kl``: eq. 18
        for :math:`\mathcal N(0, I)`, eq. 16 for the learned Gaussian),
        else ``None``; its difference from ``kl`` is the Monte Carlo error of the K draws.
    :ivar khat: Pareto :math:`\hat k` per data point (``None`` when ``K < 21`` or PSIS was off).
    :ivar active: :class:`ActiveUnits` over every latent coordinate (both levels' of a two-level VAE).
    :ivar z_dim: latent coordinates in all (``2 * z_dim`` for a two-level VAE).
    :ivar draws: :class:`Draws` of the first data points, if asked for (``keep_draws``).
    :ivar active_by_site: for a two-level VAE, :class:`ActiveUnits` per site. A unit of ``z2`` is
        active when the guide's mean :math:`\mu_\phi(x)` moves with :math:`x`; a unit of ``z1`` when
        its posterior mean :math:`\mathbb E_{q_\phi(z_1|x)}[z_1] = \mathbb E_{q_\phi(z_2|x)}[\mu_\phi(x,
        z_2)]`, estimated by the mean over the K draws of :math:`z_2`, does.
    :ivar discrete_dims: the data dimension :math:`D` where the likelihood is a probability of discrete
        values (Bernoulli, discretized logistic): the summary then turns :math:`-\log p(x)` in nats into
        bits per dimension, :math:`-\log p(x) / (D \ln 2)` (eq. 35). ``None`` for a density (Gaussian),
        whose value depends on the units of :math:`x`.
    """

    k: int
    log_px: torch.Tensor
    log_px_se: torch.Tensor
    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    kl_analytic: torch.Tensor | None
    khat: np.ndarray | None
    active: ActiveUnits
    z_dim: int
    batch_size: int
    chunk_size: int
    seed: int | None
    device: str
    dtype: str
    seconds: float
    draws: Draws | None = None
    active_by_site: dict[str, ActiveUnits] | None = None
    discrete_dims: int | None = None

    @property
    def n(self) -> int:
        return int(self.elbo.shape[0])

    def bits_per_dim(self) -> torch.Tensor:
        """:math:`-\\log_2 p(x) / D` per data point, from the IWAE estimate (eq. 35); a likelihood of
        discrete values only."""
        if self.discrete_dims is None:
            raise ConfigError("bits per dimension need a likelihood of discrete values; this one is a density")
        return -self.log_px / (self.discrete_dims * math.log(2))

    def summary(self) -> dict[str, Any]:
        """Means over the data points, their standard errors over the data points, diagnostics."""
        n = self.n

        def se(values: torch.Tensor) -> float | None:
            return _number(values.std() / math.sqrt(n)) if n > 1 else None

        out: dict[str, Any] = {
            "n": n,
            "k": self.k,
            "elbo": _number(self.elbo.mean()),
            "elbo_se": se(self.elbo),
            "reconstruction": _number(self.reconstruction.mean()),
            "kl": _number(self.kl.mean()),
            "kl_analytic": None if self.kl_analytic is None else _number(self.kl_analytic.mean()),
            "log_px": _number(self.log_px.mean()),
            "log_px_se": se(self.log_px),
            "log_px_mc_se": _number(self.log_px_se.pow(2).sum().sqrt() / n) if self.k > 1 else None,
            "gap": _number((self.log_px - self.elbo).mean()),
            "active_units": self.active.count,
            "z_dim": self.z_dim,
            "active_threshold": self.active.threshold,
            "bits_per_dim": None if self.discrete_dims is None else _number(self.bits_per_dim().mean()),
        }
        if self.active_by_site is not None:
            out["active_units_by_site"] = {site: units.count for site, units in self.active_by_site.items()}
        if self.khat is not None:
            out.update(
                khat_median=_number(np.median(self.khat)),
                khat_max=_number(np.max(self.khat)),
                khat_fraction_above_threshold=float(np.mean(self.khat > KHAT_THRESHOLD)),
                khat_threshold=KHAT_THRESHOLD,
            )
        else:
            out.update(khat_median=None, khat_max=None, khat_fraction_above_threshold=None)
        out.update(
            seed=self.seed,
            device=self.device,
            dtype=self.dtype,
            batch_size=self.batch_size,
            chunk_size=self.chunk_size,
            seconds=self.seconds,
        )
        return out

    def report(self) -> str:
        """A few lines of text: every number is one this evaluation computed."""
        s = self.summary()

        def pm(key: str) -> str:
            return f" ± {s[key + '_se']:.3f}" if s[key + "_se"] is not None else ""

        kl_analytic = f"; closed-form KL {s['kl_analytic']:.3f}" if s["kl_analytic"] is not None else ""
        mc = f"; Monte Carlo s.e. {s['log_px_mc_se']:.4f}" if s["log_px_mc_se"] is not None else ""
        lines = [
            f"ELBO            {s['elbo']:.3f}{pm('elbo')} nats  "
            f"(reconstruction {s['reconstruction']:.3f}, KL {s['kl']:.3f}{kl_analytic})",
            f"log p(x), IWAE  {s['log_px']:.3f}{pm('log_px')} nats  (k={self.k}{mc})",
            f"IWAE - ELBO     {s['gap']:.3f} nats  (a lower bound on the mean KL(q(z|x) || p(z|x)), eq. 20)",
            f"active units    {s['active_units']} of {s['z_dim']}  (Cov_x E_q[z_j] > {s['active_threshold']:g})"
            + (
                "; " + ", ".join(f"{site}: {n}" for site, n in s["active_units_by_site"].items())
                if "active_units_by_site" in s
                else ""
            ),
        ]
        if s["bits_per_dim"] is not None:
            dims = f"-log2 p(x) / {self.discrete_dims} dims, eq. 35"
            lines.insert(2, f"bits per dim    {s['bits_per_dim']:.4f}  ({dims})")
        if self.khat is not None:
            median = "-inf" if s["khat_median"] is None else f"{s['khat_median']:.2f}"
            largest = "-inf" if s["khat_max"] is None else f"{s['khat_max']:.2f}"
            lines.append(
                f"PSIS k-hat      median {median}, max {largest}; "
                f"{100 * s['khat_fraction_above_threshold']:.1f}% of points above {KHAT_THRESHOLD}"
            )
        elif self.k < PSIS_MIN_DRAWS:
            lines.append(
                f"PSIS k-hat      not computed: it needs k >= {PSIS_MIN_DRAWS} draws per point, so how far the "
                f"IWAE estimate of k={self.k} can be trusted is unchecked"
            )
        if self.n > 1:
            lines.append(f"(± is the standard error over the {self.n} data points)")
        return "\n".join(lines)

    def to_dict(self, per_point: bool = True) -> dict[str, Any]:
        """JSON-ready: ``{"summary": ..., "per_point": {name: list}}`` (non-finite numbers as null)."""
        out: dict[str, Any] = {"summary": self.summary()}
        if per_point:
            columns = {
                "elbo": self.elbo,
                "reconstruction": self.reconstruction,
                "kl": self.kl,
                **({} if self.kl_analytic is None else {"kl_analytic": self.kl_analytic}),
                "log_px": self.log_px,
                "log_px_se": self.log_px_se,
            }
            out["per_point"] = {name: [_number(v) for v in values.tolist()] for name, values in columns.items()}
            out["per_point"]["khat"] = None if self.khat is None else [_number(v) for v in self.khat.tolist()]
        return out

    def to_inference_data(self) -> Any:
        r"""The kept draws as ArviZ data; save it with ``.to_netcdf(path)``.

        An ``arviz.InferenceData`` with ArviZ 0.x, an ``xarray.DataTree`` with ArviZ >= 1 (see
        :mod:`pyrovae.evaluation.arviz_compat`); the groups are the same. ``posterior`` with ``z``
        (dims ``chain=1, draw=K, point, z_dim``): draws from :math:`q_\phi(z|x)`, *not* from
        :math:`p_\theta(z|x)`; ``sample_stats`` with ``log_weight`` (``chain, draw, point``), the
        log importance weights that turn them into weighted draws of :math:`p_\theta(z|x)`;
        ``observed_data`` with ``x`` (``point, x_dim``). The ``point`` coordinate holds the row
        numbers of the data points.
        """
        if self.draws is None:
            raise ConfigError("no draws were kept: call evaluate(..., keep_draws=P) with P > 0")
        d = self.draws
        idata = arviz_compat.from_dict(
            {
                "posterior": {"z": d.z.detach().cpu().double().numpy()[None]},
                "sample_stats": {"log_weight": d.log_weight.detach().cpu().double().numpy()[None]},
                "observed_data": {"x": d.x.detach().cpu().double().numpy()},
            },
            coords={
                "point": d.index.tolist(),
                "z_dim": list(range(d.z.shape[-1])),
                "x_dim": list(range(d.x.shape[-1])),
            },
            dims={"z": ["point", "z_dim"], "log_weight": ["point"], "x": ["point", "x_dim"]},
        )
        idata.posterior.attrs.update(
            description="z ~ q(z|x), the encoder's approximate posterior; weight by exp(log_weight) for p(z|x)",
            k=self.k,
        )
        idata.sample_stats.attrs.update(
            description="log w = log p(x|z) + log p(z) - log q(z|x), nats; pyrovae.psis_khat over draws gives khat"
        )
        return idata


# -- the estimator ---------------------------------------------------------------------------------
