r"""The KL term of one latent site, :math:`\mathrm{KL}(q_\phi(z|x)\,\|\,p(z))`, in closed form or at the draw.

Every estimator that takes the ELBO's KL part on its own (eq. 11) computes it here, from the guide's
site and the model's site of a latent :math:`z`:

.. math::

    \mathrm{KL}(q\,\|\,p) = \begin{cases}
        \texttt{kl\_divergence}(q, p) & \text{analytic, where torch registers a closed form (eq. 16-18)} \\
        \log q_\phi(z|x) - \log p(z) & \text{at the guide's draw } z \text{ otherwise (a one-draw estimate)}
    \end{cases}

which is the rule of Pyro's ``TraceMeanField_ELBO``; an estimator that wants the Monte Carlo form
everywhere (``trace``) asks with ``analytic=False``. Values are masked as Pyro masks a
log-density (``poutine.mask``) and not scaled (``poutine.scale`` multiplies them where they are
added up): :meth:`SiteKL.values` is one value per batch element, :meth:`SiteKL.subtract_from` adds
the scaled sum to an ELBO in the order Pyro's ``TraceMeanField_ELBO`` adds it, and
:func:`coordinate_kl` is the KL per latent coordinate that free bits need (eq. 27).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

from .._compat import scale_and_mask
from ..errors import ConfigError
from ..models.kl import registered_kl
from .traces import site_log_prob

__all__ = ["SiteKL", "site_kl", "coordinate_kl", "masked"]


def masked(values: torch.Tensor, site: dict[str, Any], event_dims: int = 0) -> torch.Tensor:
    """``values`` (the site's batch shape and ``event_dims`` more) under the site's mask, as Pyro masks
    a log-density (:func:`~pyro.distributions.util.scale_and_mask`)."""
    mask = site["mask"]
    if torch.is_tensor(mask) and event_dims:
        mask = mask.reshape(mask.shape + (1,) * event_dims)
    return scale_and_mask(values, 1.0, mask)


class SiteKL(NamedTuple):
    """One site's KL: ``analytic`` (the closed form, under the guide site's mask) or, where there is
    none, ``log_q`` and ``log_p`` at the draw (each under its own site's mask); each of the site's
    batch shape, unscaled.

    :ivar scale_q: the guide site's scale (``poutine.scale``: :math:`N/B` under ``num_data``), which
        scales ``analytic`` and ``log_q``.
    :ivar scale_p: the model site's scale, which scales ``log_p``.
    :ivar size: the number of elements of the site's batch (a KL that is the number 0, as Pyro's
        ``kl_divergence`` of a site masked out with ``.mask(False)`` is, stands for that many zeros).
    """

    analytic: torch.Tensor | float | None
    log_q: torch.Tensor | None
    log_p: torch.Tensor | None
    scale_q: Any
    scale_p: Any
    size: int

    def values(self) -> torch.Tensor:
        """The KL per batch element, unscaled."""
        return self.analytic if self.analytic is not None else self.log_q - self.log_p

    def subtract_from(self, elbo: Any, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``elbo`` minus the scaled KL summed over the batch (times ``weight``, a KL weight, where one
        is given), added as Pyro's ``TraceMeanField_ELBO`` adds it (``elbo + sum log p - sum log q``
        at the draw): without ``weight`` the numbers are Pyro's."""
        if self.analytic is not None:
            kl = scale_and_mask(self.analytic, self.scale_q)
            kl = kl.sum() if torch.is_tensor(kl) else kl * self.size
            return elbo - (kl if weight is None else weight * kl)
        log_p = scale_and_mask(self.log_p, self.scale_p).sum()
        log_q = scale_and_mask(self.log_q, self.scale_q).sum()
        return elbo + log_p - log_q if weight is None else elbo + weight * log_p - weight * log_q


def site_kl(guide_site: dict[str, Any], model_site: dict[str, Any], analytic: bool = True) -> SiteKL:
    """The KL of a latent site: closed form where ``analytic`` and ``kl_divergence`` has one, else
    :math:`\\log q - \\log p` at the guide's draw (see :mod:`pyrovae.infer.kl_term`)."""
    kl = registered_kl(guide_site["fn"], model_site["fn"]) if analytic else None
    size = torch.Size(guide_site["fn"].batch_shape).numel()
    if kl is not None:
        return SiteKL(masked(kl, guide_site), None, None, guide_site["scale"], model_site["scale"], size)
    value = guide_site["value"]
    log_q, log_p = site_log_prob(guide_site, value), site_log_prob(model_site, value)
    return SiteKL(None, log_q, log_p, guide_site["scale"], model_site["scale"], size)


def _factors(fn: Any) -> Any:
    """The distribution of each coordinate of an ``Independent(..., 1)`` site (its base), or ``None``."""
    while isinstance(fn, (ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    if isinstance(fn, Independent) and fn.reinterpreted_batch_ndims == 1:
        return fn.base_dist
    return None


def coordinate_kl(
    name: str, guide_site: dict[str, Any], model_site: dict[str, Any], analytic: bool = True
) -> torch.Tensor:
    """The site's KL per latent coordinate, shape ``batch + (d,)``, masked and unscaled: closed form of
    the coordinates' distributions where ``analytic`` and registered, else their log-densities at
    the draw. Guide and prior must both be products over the coordinates (``Independent(..., 1)``)."""
    q, p = _factors(guide_site["fn"]), _factors(model_site["fn"])
    if q is None or p is None:
        raise ConfigError(
            f"--free-bits needs guide and prior to be products over the coordinates of site {name!r} "
            f"(Independent(..., 1)); found {type(guide_site['fn']).__name__} and "
            f"{type(model_site['fn']).__name__}: "
            "use the normal or gaussian prior, or drop --free-bits"
        )
    kl = registered_kl(q, p) if analytic else None
    if kl is None:
        value = guide_site["value"]
        kl = q.log_prob(value) - p.log_prob(value)
    return masked(kl, guide_site, 1)
