r"""The ELBO of held-out points and its two terms, on the same draws (eq. 11):

.. math::

    \mathcal L(x) = \underbrace{\mathbb E_{q_\phi(z|x)}[\log p_\theta(x|z)]}_{\text{reconstruction}}
        - \sum_{\text{latent sites}} \mathrm{KL}(q_\phi(z|x)\,\|\,p(z)).

:func:`estimate_elbo_terms` draws the guide and replays the model once per chunk of rows, exactly
as :func:`pyrovae.infer.estimate_elbo` does (the ``meanfield`` estimator,
:class:`~pyrovae.infer.lean_elbo.LeanTraceMeanField_ELBO`), and adds up the terms of that one pass
three ways: into the ELBO, in the estimator's own order (so it is :func:`estimate_elbo`'s number
bit for bit), into the reconstruction term (the observed sites' :math:`\log p_\theta(x|z)`) and
into each latent site's KL (:func:`~pyrovae.infer.kl_term.site_kl`: in closed form where
``kl_divergence`` has one, eq. 16-18, else :math:`\log q_\phi(z|x) - \log p(z)` at the draw; the
mode of each site is reported). The reconstruction minus the KLs is the ELBO up to rounding.

Where that pass does not apply (a guide site that is not fully reparameterised, or one the model
lacks), the chunk's ELBO is Pyro's own, on the same draws as before, and the terms are not
reported (``None``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pyro
import torch

from .._compat import torch_item
from ..errors import ConfigError
from ..rng import GeneratorStates
from .elbo import make_elbo
from .kl_term import site_kl
from .traces import fully_reparameterized, log_prob_sum, sample_sites

__all__ = ["ELBOTerms", "estimate_elbo_terms"]


class ELBOTerms(NamedTuple):
    """Means per data point, in nats.

    :ivar elbo: the ELBO (eq. 11), :func:`~pyrovae.infer.estimate_elbo`'s number.
    :ivar reconstruction: :math:`\\mathbb E_q[\\log p_\\theta(x|z)]`, or ``None`` (see the module).
    :ivar kl: the KL summed over the latent sites, or ``None``.
    :ivar kl_sites: the KL of each latent site, or ``None``.
    :ivar kl_mode: ``{site: "analytic" | "monte-carlo"}``: how each site's KL was computed.
    """

    elbo: float
    reconstruction: float | None
    kl: float | None
    kl_sites: dict[str, float] | None
    kl_mode: dict[str, str]


class _Sums:
    """The chunks' term sums, kept on the device (read once, at the end)."""

    def __init__(self) -> None:
        self.terms: dict[str, torch.Tensor] = {}
        self.modes: dict[str, str] = {}
        self.complete = True

    def add(self, name: str, value: Any) -> None:
        value = torch.as_tensor(value, dtype=torch.float64)
        self.terms[name] = self.terms[name] + value if name in self.terms else value

    def means(self, rows: int) -> tuple[float | None, dict[str, float] | None]:
        if not self.complete or "" not in self.terms:
            return None, None
        names = list(self.terms)
        values = torch.stack([self.terms[n].to(self.terms[""].device) for n in names]).tolist()
        means = {n: v / rows for n, v in zip(names, values, strict=True)}
        return means.pop(""), means


def _chunk(estimator: Any, vae: torch.nn.Module, chunk: torch.Tensor, sums: _Sums) -> float | None:
    """The chunk's loss as :meth:`LeanTraceMeanField_ELBO.loss` computes it, its terms added to
    ``sums`` (the reconstruction under the name ``""``); ``None`` where the pass does not apply."""
    particles = estimator.num_particles
    loss: Any = 0.0
    found: list[tuple[str, Any]] = []
    modes: dict[str, str] = {}
    for model_trace, guide_trace in estimator.particle_traces(vae.model, vae.guide, chunk):
        elbo: Any = 0.0
        latent = 0
        for name, site in sample_sites(model_trace):
            if site["is_observed"]:
                term = log_prob_sum(site)
                elbo = elbo + term
                found.append(("", term / particles))
                continue
            guide_site = guide_trace.nodes.get(name)
            if guide_site is None or not fully_reparameterized(guide_site):
                return None
            latent += 1
            kl = site_kl(guide_site, site)
            elbo = kl.subtract_from(elbo)  # (the estimator's own order: its number bit for bit)
            found.append((name, -kl.subtract_from(0.0) / particles))
            modes[name] = "analytic" if kl.analytic is not None else "monte-carlo"
        if latent != sum(1 for _ in sample_sites(guide_trace)) or not torch.is_tensor(elbo):
            return None
        loss = loss - elbo / particles
    for name, value in found:
        sums.add(name, value)
    sums.modes.update(modes)
    return torch_item(loss)


@torch.no_grad()
def estimate_elbo_terms(
    vae: torch.nn.Module, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1024
) -> ELBOTerms:
    """The mean ELBO per data point of ``x`` and its reconstruction and KL terms, on the same draws
    (see :mod:`pyrovae.infer.elbo_terms`); ``x`` is processed in chunks of ``batch_size`` rows.

    :param vae: a :class:`~pyrovae.models.LatentVariableModel`.
    :param x: data, shape ``(N, x_dim)``. :param int num_particles: draws of :math:`z` per row.
    """
    if x.shape[0] == 0:
        raise ConfigError("x is empty: expected at least one data point")
    estimator = make_elbo("meanfield", num_particles)
    sums = _Sums()
    total = 0.0
    with pyro.validation_enabled(False):
        for chunk in x.split(batch_size):
            states = GeneratorStates.capture()
            loss = _chunk(estimator, vae, chunk, sums)
            if loss is None:  # Pyro's own estimator, on the same draws
                states.restore()
                sums.complete = False
                loss = estimator.loss(vae.model, vae.guide, chunk)
            total -= loss
    reconstruction, kl_sites = sums.means(x.shape[0])
    kl = None if kl_sites is None else sum(kl_sites.values())
    return ELBOTerms(total / x.shape[0], reconstruction, kl, kl_sites, sums.modes if sums.complete else {})
