"""A mixture of diagonal Gaussians as a Pyro distribution (the ``mog`` and ``vamp`` priors' density)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch

from .._compat import extended_shape, validate_sample

__all__ = ["DiagonalGaussianMixture"]

Shape = torch.Size | tuple[int, ...]


class DiagonalGaussianMixture(dist.TorchDistribution):
    r""":math:`\sum_{k=1}^K \pi_k \mathcal N(z; \mu_k, \mathrm{diag}\,\sigma_k^2)` with ``softmax(logits)`` weights,
    the distribution of the ``mog`` and ``vamp`` priors.

    ``log_prob`` writes each component's quadratic form out as matrix products over the draws,

    .. math::

        \log \mathcal N(z; \mu_k, \sigma_k^2) = -\tfrac12 \sum_j \frac{z_j^2}{\sigma_{kj}^2}
            + \sum_j \frac{z_j \mu_{kj}}{\sigma_{kj}^2} - \tfrac12 \sum_j \frac{\mu_{kj}^2}{\sigma_{kj}^2}
            - \sum_j \log \sigma_{kj} - \frac d2 \log 2\pi,

    so that :math:`N` draws against :math:`K` components cost two :math:`(N \times d)(d \times K)` products
    instead of :math:`N K d` elementwise terms held in memory (what makes a VampPrior of 500 components
    affordable in an evaluation with thousands of draws per point). The products are taken in float64,
    where the cancellation between the three sums costs nothing that float32 would see; the result is
    returned in the dtype of ``z``. Equal to :class:`pyro.distributions.MixtureSameFamily` of the same
    components to rounding (``tests/test_priors.py``).

    :param logits: ``(K,)``. :param locs: ``(K, d)``. :param scales: ``(K, d)``, positive.
    :param batch_shape: the batch shape the distribution is expanded to (its parameters are not).
    """

    arg_constraints = {}
    support = dist.constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        locs: torch.Tensor,
        scales: torch.Tensor,
        batch_shape: Shape = (),
        validate_args: bool | None = None,
    ):
        self.logits, self.locs, self.scales = logits, locs, scales
        super().__init__(torch.Size(batch_shape), locs.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: Shape, _instance: DiagonalGaussianMixture | None = None) -> DiagonalGaussianMixture:
        return DiagonalGaussianMixture(self.logits, self.locs, self.scales, batch_shape, validate_args=False)

    def component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`\log \mathcal N(z; \mu_k, \sigma_k^2)` for every component: shape ``value.shape[:-1] + (K,)``."""
        d = value.shape[-1]
        flat = value.reshape(-1, d).double()
        locs, scales = self.locs.double(), self.scales.double()
        precision = scales.pow(-2)
        weighted_loc = locs * precision
        constant = -0.5 * (locs * weighted_loc).sum(-1) - scales.log().sum(-1)
        quadratic = -0.5 * flat.pow(2) @ precision.mT + flat @ weighted_loc.mT
        log_p = quadratic + constant - 0.5 * d * math.log(2 * math.pi)
        return log_p.to(value.dtype).reshape(*value.shape[:-1], -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            validate_sample(self, value)
        log_weights = torch.log_softmax(self.logits, -1).to(value.dtype)
        log_p = torch.logsumexp(self.component_log_prob(value) + log_weights, -1)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def sample(self, sample_shape: Shape = ()) -> torch.Tensor:
        shape = extended_shape(self, torch.Size(sample_shape))
        with torch.no_grad():
            component = dist.Categorical(logits=self.logits).sample(shape[:-1])
            noise = torch.randn(shape, dtype=self.locs.dtype, device=self.locs.device)
            return self.locs[component] + self.scales[component] * noise

    @property
    def mean(self) -> torch.Tensor:
        weights = torch.softmax(self.logits, -1)
        return (weights.unsqueeze(-1) * self.locs).sum(-2).expand(self.batch_shape + self.event_shape)
