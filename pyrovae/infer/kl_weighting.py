r"""The KL's weight in the ELBO estimators: :math:`\beta`, a linear KL warm-up and free bits (eq. 26-27).

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
prior. Free bits need the KL per coordinate: a guide and a prior that are both products over
coordinates (the diagonal Gaussian guide with the ``normal`` or ``gaussian`` prior).

There is one estimator per ``--elbo`` name whatever these options are:
:class:`~pyrovae.infer.lean_elbo.LeanTraceMeanField_ELBO` (``meanfield``: the KL in closed form
where ``kl_divergence`` is registered, else :math:`\log q - \log p` at the draw) and
:class:`~pyrovae.infer.lean_elbo.LeanTrace_ELBO` (``trace``: :math:`\log q_\phi(z|x) - \log p(z)`
at the draw) are :class:`KLWeighting` modules, and each latent site's KL term passes through
:meth:`KLWeighting.subtract_kl`. With :math:`\beta = 1` and no warm-up the weight is the number 1,
which that method applies by not multiplying at all, so the loss and its gradients are the ELBO
estimator's to the last bit (Pyro's numbers on the same draws).

The weight :math:`\beta_t` is a buffer of the estimator (a :class:`torch.nn.Module`), which the
training loop sets before every step (:meth:`KLWeighting.set_step`): a step recorded by the compiled
or jit engine reads it as an input, never as a constant frozen into its graph, and inside
:class:`~pyrovae.infer.objective.Objective` it is one of the objective's buffers.
``pyrovae.infer.closed_form_objectives.closed_form_weighted_elbo`` is the hand-written version.

References: I. Higgins et al., *beta-VAE*, ICLR 2017. S. Bowman et al., *Generating sentences
from a continuous space*, CoNLL 2016 (KL annealing). D. P. Kingma et al., *Improved variational
inference with inverse autoregressive flow*, NeurIPS 2016 (free bits).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._compat import scale_and_mask
from .kl_term import coordinate_kl, site_kl
from .module_elbo import DescribedObjective
from .options import ObjectiveOptions

__all__ = ["KLWeighting"]


class KLWeighting(nn.Module, DescribedObjective):
    """The KL weight of an ELBO estimator: :math:`\\beta`, the warm-up, free bits and the buffer
    :attr:`kl_weight` (see :mod:`pyrovae.infer.kl_weighting`). :meth:`set_kl_options` must be
    called once, after ``nn.Module.__init__``."""

    #: the KL in closed form where ``kl_divergence`` has one (``meanfield``), or at the draw (``trace``)
    analytic_kl: bool = True

    def set_kl_options(
        self,
        beta: float = ObjectiveOptions.beta,
        kl_warmup: int = ObjectiveOptions.kl_warmup,
        free_bits: float = ObjectiveOptions.free_bits,
    ) -> None:
        """Check and keep the options (:class:`~pyrovae.infer.options.ObjectiveOptions`' checks)."""
        options = ObjectiveOptions(beta=beta, kl_warmup=kl_warmup, free_bits=free_bits)
        self.beta, self.kl_warmup, self.free_bits = float(options.beta), options.kl_warmup, float(options.free_bits)
        #: whether the objective is something other than the ELBO itself (eq. 26-27 with a weight)
        self.weighs_kl = options.weights_kl
        #: :math:`\beta_t` is the number 1 at every step (no multiplication is made)
        self.unit_weight = self.beta == 1.0 and not self.kl_warmup
        #: :math:`\beta_t`, set by :meth:`set_step` (float64; cast to the model's dtype when used);
        #: ``None`` where it is the number 1 (the objective then has no buffer, as Pyro's ELBOs have none)
        weight = None if self.unit_weight else torch.tensor(self.weight_at(0), dtype=torch.float64)
        self.register_buffer("kl_weight", weight)
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

    def weight_like(self, value: Any) -> torch.Tensor | None:
        """:math:`\\beta_t` in ``value``'s dtype and device, or ``None`` where it is the number 1."""
        if self.unit_weight:
            return None
        if torch.is_tensor(value):
            return self.kl_weight.to(dtype=value.dtype, device=value.device)
        return self.kl_weight.to(dtype=torch.get_default_dtype())

    def subtract_kl(
        self, elbo: Any, name: str, guide_site: dict[str, Any], model_site: dict[str, Any], analytic: bool
    ) -> torch.Tensor:
        """``elbo`` minus :math:`\\beta_t` times the site's KL term, scaled as Pyro scales the site
        (:math:`N/B`): its KL summed over the batch, or with free bits eq. 27's :math:`\\mathcal R`
        of the site. With :math:`\\beta_t = 1` and no free bits exactly
        :meth:`~pyrovae.infer.kl_term.SiteKL.subtract_from`, the ELBO estimator's own sum."""
        if self.free_bits > 0:
            return elbo - self._weighted(self._free_bits_term(name, guide_site, model_site, analytic))
        kl = site_kl(guide_site, model_site, analytic)
        return kl.subtract_from(elbo, self.weight_like(kl.analytic if kl.analytic is not None else kl.log_q))

    def _free_bits_term(
        self, name: str, guide_site: dict[str, Any], model_site: dict[str, Any], analytic: bool
    ) -> torch.Tensor:
        # the site's KL per coordinate, batch shape + (d,), averaged over every batch element of the
        # draw (data points and vectorised particles), clamped, times the number of elements: the
        # draw's share of n * sum_j max(lambda, mean KL_j), scaled as the guide site is
        kl = coordinate_kl(name, guide_site, model_site, analytic)
        elements = kl[..., 0].numel()
        term = elements * kl.reshape(elements, -1).mean(0).clamp_min(self.free_bits).sum()
        return scale_and_mask(term, guide_site["scale"])

    def _weighted(self, term: torch.Tensor) -> torch.Tensor:
        weight = self.weight_like(term)
        return term if weight is None else weight * term

    def is_elbo(self) -> bool:
        """Whether the objective is the ELBO (eq. 11) itself: no weight, no warm-up, no free bits."""
        return not self.weighs_kl

    def describe(self) -> str:
        if not self.weighs_kl:
            return "the ELBO (eq. 11)"
        kl = "closed-form KL where the prior has one" if self.analytic_kl else "Monte Carlo KL"
        parts = [f"E_q[log p(x|z)] - {self.beta:g} * KL(q(z|x) || p(z)) ({kl})"]
        if self.kl_warmup:
            parts.append(f"KL weight rising linearly from 0 to {self.beta:g} over {self.kl_warmup} steps")
        if self.free_bits:
            parts.append(f"free bits {self.free_bits:g} nats per latent coordinate")
        return ", ".join(parts) + " (eq. 26-27; not the ELBO)"
