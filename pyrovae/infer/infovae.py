r"""InfoVAE with the MMD divergence (``--elbo infovae``), eq. 28.

Zhao, Song and Ermon start from the third form of the ELBO (eq. 21) and weight its two parts, and
a mutual-information term, separately. With the divergence :math:`D` the squared MMD between the
aggregate posterior :math:`q_\phi(z)` and the prior, their objective per data point is

.. math::

    \mathbb E_{q_\phi(z|x)}[\log p_\theta(x|z)] - (1 - \alpha)\,\mathrm{KL}(q_\phi(z|x)\,\|\,p(z))
        - (\alpha + \lambda - 1)\, D(q_\phi(z)\,\|\,p(z)).

Per minibatch of :math:`B` rows (scaled to :math:`N`) and :math:`K` particles, the first two terms
are those of ``meanfield`` with the KL weighted by :math:`1 - \alpha` (closed form where the prior
has one), and :math:`D` is the unbiased MMD estimate (eq. 29, kernel eq. 30) between the
:math:`KB` codes the guide drew for the batch, which are draws from the batch's aggregate posterior,
and :math:`KB` fresh draws from the prior (``rsample`` where the prior has one, so a learned prior
gets the MMD's gradient); it enters the loss once per minibatch, multiplied by :math:`N`.

Special cases (``tests/test_objectives.py`` checks each on the same draws):

- :math:`\alpha = 0, \lambda = 1`: :math:`D`'s weight is 0 and the KL's 1: the ELBO, equal to
  ``meanfield``'s loss (no prior draws are made when :math:`D`'s weight is 0);
- :math:`\alpha + \lambda = 1`: :math:`D`'s weight is 0 and the KL's :math:`1 - \alpha`:
  ``meanfield --beta`` :math:`1-\alpha` (the :math:`\beta`-VAE);
- :math:`\alpha = 1, \lambda = 1`: no per-point KL at all, reconstruction minus MMD (the "MMD-VAE");
- :math:`\alpha = 1, \lambda = 0`: the reconstruction term alone (an autoencoder with noisy codes).

:math:`\alpha + \lambda < 1` (a negative weight on :math:`D`) and :math:`\alpha > 1` (a negative
weight on the KL, unbounded above) are refused (:class:`~pyrovae.infer.options.ObjectiveOptions`).

Reference: S. Zhao, J. Song, S. Ermon, *InfoVAE: balancing learning and inference in variational
autoencoders*, AAAI 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pyro.infer import TraceMeanField_ELBO

from ..models.mmd import MMD_SCALES, mmd
from .lean_elbo import LeanTraceMeanField_ELBO
from .module_elbo import ModuleELBO
from .options import ObjectiveOptions
from .traces import LocalTraces

__all__ = ["InfoVAE_ELBO"]


class InfoVAE_ELBO(ModuleELBO, TraceMeanField_ELBO):  # noqa: N801 (named after Pyro's classes)
    r"""``--elbo infovae``: eq. 28 with :math:`D` the squared MMD (see :mod:`pyrovae.infer.infovae`).

    A composition: the first two terms are :attr:`weighted`, the ``meanfield`` estimator with the KL
    weighted by :math:`1 - \alpha` (:class:`~pyrovae.infer.lean_elbo.LeanTraceMeanField_ELBO` with
    ``beta`` :math:`1 - \alpha`, closed-form KL where the prior has one, hence a
    ``TraceMeanField_ELBO`` for :func:`~pyrovae.infer.kl_modes`) on this estimator's draw, and
    :meth:`mmd_sum` is the MMD term.

    :param int num_particles: :math:`K` draws per data point.
    :param float alpha: :math:`\alpha \le 1` (``--infovae-alpha``).
    :param float lam: :math:`\lambda`, with :math:`\alpha + \lambda \ge 1` (``--infovae-lambda``).
    :param str kernel: ``"imq"`` or ``"rbf"`` (``--mmd-kernel``).
    :param scales: the kernel's bandwidth multipliers (eq. 30).
    """

    elbo_name = "infovae"

    def __init__(
        self,
        num_particles: int = 1,
        alpha: float = ObjectiveOptions.infovae_alpha,
        lam: float = ObjectiveOptions.infovae_lambda,
        kernel: str = ObjectiveOptions.mmd_kernel,
        scales: Sequence[float] = MMD_SCALES,
    ) -> None:
        options = ObjectiveOptions(infovae_alpha=alpha, infovae_lambda=lam, mmd_kernel=kernel)
        super().__init__(num_particles)
        #: :math:`\mathbb E_q[\log p_\theta(x|z)] - (1 - \alpha)\,\mathrm{KL}`, the first two terms of eq. 28
        self.weighted = LeanTraceMeanField_ELBO(
            num_particles, max_plate_nesting=1, vectorize_particles=True, beta=1.0 - options.infovae_alpha
        )
        self.alpha, self.lam, self.kernel = options.infovae_alpha, options.infovae_lambda, options.mmd_kernel
        self.scales = tuple(float(s) for s in scales)
        #: :math:`\alpha + \lambda - 1`, the weight of :math:`D`
        self.mmd_weight = self.alpha + self.lam - 1.0

    def prior_samples(self, traces: LocalTraces) -> list[torch.Tensor]:
        """One prior draw per code the guide drew, for every latent site (in the order of
        ``traces.latent``), each of the site's shape ``(K, B, ...)``."""
        fns = [site["fn"] for _, _, site in traces.latent]
        return [fn.rsample() if fn.has_rsample else fn.sample().detach() for fn in fns]

    def mmd_sum(self, traces: LocalTraces, prior: list[torch.Tensor] | None = None) -> torch.Tensor:
        """:math:`B \\sum_{\\text{sites}} D`: the MMD between the batch's codes and prior draws
        (``prior``, default :meth:`prior_samples`), times the batch size."""
        prior = self.prior_samples(traces) if prior is None else prior
        total: Any = 0.0
        for (_, guide_site, _), samples in zip(traces.latent, prior, strict=True):
            codes = guide_site["value"]
            rows = codes.shape[1]
            flat = codes.reshape(codes.shape[0] * rows, -1)
            total = total + rows * mmd(flat, samples.reshape(flat.shape), self.kernel, self.scales)
        return total

    def traces_loss(self, traces: LocalTraces) -> torch.Tensor:
        """Minus eq. 28 summed over the minibatch times :math:`N/B`: the weighted ``meanfield`` loss of
        the draw (every site scaled as Pyro scales it) plus the MMD term."""
        loss = -self.weighted.elbo_of(traces.model, traces.guide) / self.num_particles
        if self.mmd_weight == 0:
            return loss
        return loss + traces.scale * (self.mmd_weight * self.mmd_sum(traces))

    def describe(self) -> str:
        return (
            f"InfoVAE: E_q[log p(x|z)] - (1 - alpha) * KL(q(z|x) || p(z)) - (alpha + lambda - 1) * MMD^2(q(z), p(z)) "
            f"with alpha={self.alpha:g}, lambda={self.lam:g} (KL weight {1 - self.alpha:g}, MMD weight "
            f"{self.mmd_weight:g}), {self.kernel} kernel (eq. 28-30; not the ELBO)"
        )

    def is_elbo(self) -> bool:
        return self.alpha == 0 and self.mmd_weight == 0
