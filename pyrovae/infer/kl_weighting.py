r"""The ELBO with a weighted KL: :math:`\beta`, a linear KL warm-up and free bits (eq. 26-27).

``--elbo meanfield`` and ``--elbo trace`` optimise the ELBO (eq. 11). With ``--beta``,
``--kl-warmup`` or ``--free-bits`` they optimise instead, per minibatch of :math:`B` rows
scaled to :math:`N` and averaged over :math:`K` particles,

.. math::

    \frac NB \sum_{b=1}^B \frac1K \sum_{k=1}^K \log p_\theta(x_b|z_{kb})
        - \beta_t \, \frac NB \, \mathcal R(x_{1:B}), \qquad
    \beta_t = \beta \min(1, t/T) \quad\text{(eq. 26)},

with :math:`t` the number of steps already taken and :math:`T` the warm-up length
(:math:`\beta_t = \beta` without one). The KL part :math:`\mathcal R` is
:math:`\sum_b \mathrm{KL}(q_\phi(z|x_b)\,\|\,p(z))`, and with free bits :math:`\lambda` (nats per
latent coordinate :math:`j`, Kingma et al. 2016) each coordinate's KL is averaged over the batch
and never counted below :math:`\lambda` (eq. 27):

.. math::

    \mathcal R = B \sum_j \max\Big(\lambda,\ \frac1{BK} \sum_{b,k} \mathrm{KL}_j(x_b)\Big),

so a coordinate whose batch-average KL is under :math:`\lambda` gets no gradient pushing it to the
prior. ``meanfield`` (:class:`KLWeightedMeanField_ELBO`) takes each KL in closed form where
``kl_divergence`` is registered (else :math:`\log q - \log p` at the draw, as
``TraceMeanField_ELBO`` does); ``trace`` (:class:`KLWeightedTrace_ELBO`) always uses
:math:`\log q_\phi(z|x) - \log p(z)` at the draw. Free bits need the KL per coordinate: a guide and a
prior that are both products over coordinates (the diagonal Gaussian guide with the ``normal`` or
``gaussian`` prior).

The weight :math:`\beta_t` is a buffer of the estimator (a :class:`torch.nn.Module`), which the
training loop sets before every step (:meth:`~KLWeightedMeanField_ELBO.set_step`): a step recorded
by the compiled or jit engine reads it as an input, never as a constant frozen into its graph, and
inside :class:`~pyrovae.infer.objective.Objective` it is one of the objective's buffers.

With :math:`\beta = 1`, no warm-up and no free bits these are the ELBO estimators themselves, and
:func:`pyrovae.infer.make_elbo` then returns the plain ``meanfield`` / ``trace`` classes.
``pyrovae.infer.closed_form_objectives.closed_form_weighted_elbo`` is the hand-written version.

References: I. Higgins et al., *beta-VAE*, ICLR 2017. S. Bowman et al., *Generating sentences
from a continuous space*, CoNLL 2016 (KL annealing). D. P. Kingma et al., *Improved variational
inference with inverse autoregressive flow*, NeurIPS 2016 (free bits).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from .kl_term import coordinate_kl, site_kl
from .module_elbo import ModuleELBO
from .options import ObjectiveOptions
from .traces import LocalTraces, site_log_prob

__all__ = ["KLWeightedMeanField_ELBO", "KLWeightedTrace_ELBO"]


class _KLWeighted(ModuleELBO):
    """:math:`\\sum_b` of eq. 26 (with eq. 27's free bits): the ``meanfield`` and ``trace`` versions
    differ only in :attr:`analytic`."""

    #: the KL in closed form where ``kl_divergence`` has one (``meanfield``), or at the draw (``trace``)
    analytic: ClassVar[bool]

    def __init__(
        self,
        num_particles: int = 1,
        beta: float = ObjectiveOptions.beta,
        kl_warmup: int = ObjectiveOptions.kl_warmup,
        free_bits: float = ObjectiveOptions.free_bits,
    ) -> None:
        options = ObjectiveOptions(beta=beta, kl_warmup=kl_warmup, free_bits=free_bits)
        super().__init__(num_particles)
        self.beta, self.kl_warmup, self.free_bits = float(options.beta), options.kl_warmup, float(options.free_bits)
        #: :math:`\beta_t`, set by :meth:`set_step` (float64; cast to the model's dtype when used)
        self.register_buffer("kl_weight", torch.tensor(self.weight_at(0), dtype=torch.float64))
        self._weight_set = self.weight_at(0)  # what kl_weight holds: set_step writes only a new value

    def weight_at(self, step: int) -> float:
        """:math:`\\beta_t = \\beta \\min(1, t/T)` after ``step`` steps (eq. 26; :math:`\\beta` without warm-up)."""
        return self.beta * min(1.0, step / self.kl_warmup) if self.kl_warmup else self.beta

    def set_step(self, step: int) -> None:
        """Set the KL weight for the step that follows ``step`` steps (in place: no new tensor; no
        operation at all where the weight stays what it was, as it does without a warm-up)."""
        weight = self.weight_at(step)
        if weight != self._weight_set:
            self.kl_weight.fill_(weight)
            self._weight_set = weight

    def reconstruction(self, traces: LocalTraces) -> torch.Tensor:
        """:math:`\\sum_{x\\text{ sites}} \\log p_\\theta(x|z)` per particle and data point, shape ``(K, B)``."""
        return sum(site_log_prob(site) for site in traces.observed)

    def kl(self, guide_site: dict[str, Any], model_site: dict[str, Any]) -> torch.Tensor:
        """The site's :math:`\\mathrm{KL}(q\\,\\|\\,p)` per particle and data point, shape ``(K, B)``
        (:func:`~pyrovae.infer.kl_term.site_kl`)."""
        return site_kl(guide_site, model_site, self.analytic).values()

    def coordinate_kl(self, name: str, guide_site: dict[str, Any], model_site: dict[str, Any]) -> torch.Tensor:
        """The site's KL per coordinate, shape ``(K, B, d)`` (:func:`~pyrovae.infer.kl_term.coordinate_kl`)."""
        return coordinate_kl(name, guide_site, model_site, self.analytic)

    def penalty(self, traces: LocalTraces) -> torch.Tensor:
        """:math:`\\beta_t\\,\\mathcal R` of eq. 26-27, summed over the minibatch."""
        total: Any = 0.0
        for name, guide_site, model_site in traces.latent:
            if self.free_bits > 0:
                kl = self.coordinate_kl(name, guide_site, model_site)
                rows = kl.shape[1]
                total = total + rows * kl.mean((0, 1)).clamp_min(self.free_bits).sum()
            else:
                total = total + self.kl(guide_site, model_site).mean(0).sum()
        if not torch.is_tensor(total):
            return torch.zeros(())
        return self.kl_weight.to(dtype=total.dtype, device=total.device) * total

    def objective_sum(self, traces: LocalTraces) -> torch.Tensor:
        return self.reconstruction(traces).mean(0).sum() - self.penalty(traces)

    def describe(self) -> str:
        kl = "closed-form KL where the prior has one" if self.analytic else "Monte Carlo KL"
        parts = [f"E_q[log p(x|z)] - {self.beta:g} * KL(q(z|x) || p(z)) ({kl})"]
        if self.kl_warmup:
            parts.append(f"KL weight rising linearly from 0 to {self.beta:g} over {self.kl_warmup} steps")
        if self.free_bits:
            parts.append(f"free bits {self.free_bits:g} nats per latent coordinate")
        return ", ".join(parts) + " (eq. 26-27; not the ELBO)"


class KLWeightedMeanField_ELBO(_KLWeighted, TraceMeanField_ELBO):  # noqa: N801 (named after Pyro's class)
    """``--elbo meanfield`` with ``--beta``, ``--kl-warmup`` or ``--free-bits``: the KL in closed form
    where the prior has one (see :mod:`pyrovae.infer.kl_weighting`)."""

    elbo_name = "meanfield"
    analytic = True


class KLWeightedTrace_ELBO(_KLWeighted, Trace_ELBO):  # noqa: N801 (named after Pyro's class)
    """``--elbo trace`` with ``--beta``, ``--kl-warmup`` or ``--free-bits``: the KL as
    :math:`\\log q - \\log p` at the draw (see :mod:`pyrovae.infer.kl_weighting`)."""

    elbo_name = "trace"
    analytic = False
