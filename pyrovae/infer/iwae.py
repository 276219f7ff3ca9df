r"""The importance-weighted bound as a training objective (``--elbo iwae``), with standard or doubly
reparameterised (DReG) gradients.

For one data point and :math:`K` draws :math:`z_k = \mu_\phi(x) + \sigma_\phi(x) \odot
\varepsilon_k` from the guide, with :math:`\log w_k = \log p_\theta(x, z_k) - \log q_\phi(z_k|x)`,
the objective is eq. 23,

.. math::

    \hat{\mathcal L}_K(x) = \log \frac1K \sum_{k=1}^K w_k \ \le\ \log p_\theta(x)\ \text{in expectation},

taken per data point (the log-mean-exp over the particles of *each* row; Pyro's ``RenyiELBO`` with
:math:`\alpha = 0` takes it over the particles of the whole minibatch's sum instead, a looser bound
for a VAE's local latents) and scaled by :math:`N/B` like the other estimators. With
:math:`K = 1` it is the ``trace`` ELBO on the same draw.

Its gradient (``--iwae-grad standard``) is :math:`\sum_k \tilde w_k \nabla \log w_k`,
:math:`\tilde w_k = w_k / \sum_j w_j` (eq. 24), whose encoder part gets noisier as :math:`K` grows
(Rainforth et al. 2018). ``--iwae-grad dreg`` (Tucker et al. 2019) keeps the decoder's gradient
and replaces the encoder's by eq. 25,

.. math::

    \nabla_\phi = \sum_k \tilde w_k^2\ \frac{\partial \log w_k}{\partial z_k}\frac{\partial z_k}{\partial \phi}
    \quad (\log q_\phi \text{'s parameters held fixed in } \partial \log w_k / \partial z_k),

which has the same expectation (the score terms it drops average to zero) and a lower variance.
It is computed as one loss with one backward pass: the weights :math:`\tilde w` come from a first
replay of the model without gradients; each draw is then passed on as
:math:`z_k' = \bar z_k + \tilde w_k (z_k - \bar z_k)` (:math:`\bar z` the draw without its
gradient: the same value, its path to :math:`\phi` scaled by :math:`\tilde w_k`); the model is
replayed at :math:`z'` and :math:`\log q` evaluated there with its own parameters held fixed
(:math:`\log q_\phi(z') - \log q_\phi(\bar z') + \overline{\log q_\phi(\bar z')}`); and the loss is
:math:`-\sum_k \tilde w_k \log w_k'`, shifted by a constant so that its value is
:math:`-\hat{\mathcal L}_K`. Its decoder gradient is :math:`\sum_k \tilde w_k \nabla_\theta
\log p_\theta(x, z_k)` and its encoder gradient eq. 25. A DReG step runs the model twice (once
without gradients), and needs one latent site whose distribution's parameters depend on ``x`` only
(a guide with several dependent sites would need the path through each site's parameters too).

Every operation is a tensor operation, so the compiled and jit engines record the step as it is;
``pyrovae.infer.closed_form_objectives.closed_form_iwae`` is the hand-written version, which
computes eq. 25 the other way (two losses, each differentiated for its own parameters).

References: Y. Burda, R. Grosse, R. Salakhutdinov, *Importance weighted autoencoders*, ICLR 2016.
G. Tucker, D. Lawson, S. Gu, C. Maddison, *Doubly reparameterized gradient estimators for Monte
Carlo objectives*, ICLR 2019. T. Rainforth et al., *Tighter variational bounds are not necessarily
better*, ICML 2018.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .module_elbo import ModuleELBO
from .options import ObjectiveOptions
from .traces import LocalTraces, local_traces, replay_model, sample_sites, site_log_prob

__all__ = ["IWAE_ELBO", "log_weights"]


def log_weights(traces: LocalTraces) -> torch.Tensor:
    r""":math:`\log w_{kb} = \log p_\theta(x_b, z_{kb}) - \log q_\phi(z_{kb}|x_b)`, shape ``(K, B)``
    (unscaled: the :math:`N/B` scale multiplies the bound, not the weights)."""
    log_p = sum(site_log_prob(site) for _, site in sample_sites(traces.model))
    log_q = sum(site_log_prob(guide_site) for _, guide_site, _ in traces.latent)
    return log_p - log_q


class IWAE_ELBO(ModuleELBO):  # noqa: N801 (named after Pyro's classes)
    r"""``--elbo iwae``: :math:`\sum_b \log \frac1K \sum_k w_{kb}` (eq. 23), ``grad`` ``standard``
    (eq. 24) or ``dreg`` (eq. 25); see :mod:`pyrovae.infer.iwae`.

    :param int num_particles: :math:`K` (``--particles``).
    :param str grad: ``"standard"`` or ``"dreg"`` (``--iwae-grad``).
    """

    elbo_name = "iwae"

    def __init__(self, num_particles: int = 1, grad: str = ObjectiveOptions.iwae_grad) -> None:
        super().__init__(num_particles)
        self.grad = ObjectiveOptions(iwae_grad=grad).iwae_grad

    def bound(self, traces: LocalTraces) -> torch.Tensor:
        """:math:`\\hat{\\mathcal L}_K` of every data point, shape ``(B,)``."""
        return self.bound_of(log_weights(traces))

    def bound_of(self, log_w: torch.Tensor) -> torch.Tensor:
        """:math:`\\hat{\\mathcal L}_K` from the log-weights ``(K, B)`` of the particles, shape ``(B,)``."""
        return torch.logsumexp(log_w, 0) - math.log(self.num_particles)

    def objective_sum(self, traces: LocalTraces) -> torch.Tensor:
        """The bound summed over the minibatch, with the standard gradient (eq. 24)."""
        return self.bound(traces).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """:math:`-\\frac NB \\sum_b \\hat{\\mathcal L}_K(x_b)`, with the gradient ``grad`` names."""
        if self.grad == "standard" or not torch.is_grad_enabled():
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return self._dreg_loss(model, guide, args, kwargs)

    def _dreg_loss(self, model, guide, args: tuple, kwargs: dict) -> torch.Tensor:
        # the weights are constants of the loss: the first replay of the model needs no gradients
        what = f"--elbo {self.elbo_name}"
        traces = local_traces(model, guide, args, kwargs, self.num_particles, what, model_grad=False)
        if len(traces.latent) != 1:
            raise ConfigError(
                f"--iwae-grad dreg needs a guide with one latent site, found {len(traces.latent)} "
                f"({', '.join(name for name, _, _ in traces.latent)}): use --iwae-grad standard"
            )
        name, guide_site, _ = traces.latent[0]
        log_w = log_weights(traces).detach()
        bound = self.bound_of(log_w).sum()
        weights = torch.softmax(log_w, 0)  # normalised over the particles of each row
        value = guide_site["value"]
        fixed = value.detach()
        scaled = fixed + weights.reshape(weights.shape + (1,) * (value.dim() - weights.dim())) * (value - fixed)
        replay = traces.guide.copy()  # (its node dicts are shared: the site is replaced, not changed)
        replay.nodes[name] = {**guide_site, "value": scaled}
        model_trace = replay_model(model, replay, args, kwargs, self.num_particles)
        log_p = sum(site_log_prob(site) for _, site in sample_sites(model_trace))
        # log q at z' with q's parameters held fixed: the path through z' only, the value log q(z)
        at_fixed = site_log_prob(guide_site, scaled.detach())
        log_q = site_log_prob(guide_site, scaled) - at_fixed + at_fixed.detach()
        surrogate = (weights * (log_p - log_q)).sum()
        return -traces.scale * (surrogate - surrogate.detach() + bound)

    def is_elbo(self) -> bool:
        return self.num_particles == 1

    def describe(self) -> str:
        k = self.num_particles
        what = f"the IWAE bound log (1/K) sum_k p(x,z_k)/q(z_k|x), K={k} (eq. 23), {self.grad} gradients"
        return what + (" (with K=1: the ELBO)" if k == 1 else " (not the ELBO: a tighter bound)")
