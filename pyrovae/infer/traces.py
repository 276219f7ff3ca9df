r"""The traces every estimator reads: sample sites, their log-densities, vectorised particles.

Pyro's ELBOs run the guide under :func:`~pyro.poutine.trace`, replay the model against that trace
and add up log-densities of the sites. The estimators of :mod:`pyrovae.infer` do the same through
the helpers here, which use public Pyro interfaces only:

- :func:`sample_sites` and :func:`fully_reparameterized` select the sites and say whether a guide
  site's draw carries its gradient (an ``rsample`` with Pyro's default score parts);
- :func:`log_prob_sum` is a site's log-density as ``Trace.compute_log_prob`` defines its
  ``log_prob_sum`` (scaled, masked, summed); :func:`site_log_prob` keeps one value per particle and
  data point and leaves the scale out, for objectives that are not a sum over data points of
  one-draw terms (the IWAE bound takes a log-mean-exp over particles first);
- :func:`vectorized` puts the plate over particles around a program, as Pyro's vectorised ELBOs do;
  :func:`local_traces` draws all particles of a model and guide whose sites are local to one plate
  over the data (a VAE's), with particles in dimension -2 and data points in dimension -1;
- :func:`common_scale` is the one scale (``N/B`` under ``num_data=N``) such an objective multiplies
  by, and :func:`check_traces` runs Pyro's own checks of model/guide agreement where validation is on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.distributions.distribution import Distribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.poutine.trace_struct import Trace

from .._compat import (
    check_model_guide_match,
    check_site_shape,
    is_validation_enabled,
    scale_and_mask,
    site_is_subsample,
)
from ..errors import ConfigError

__all__ = [
    "sample_sites",
    "fully_reparameterized",
    "log_prob_sum",
    "site_log_prob",
    "vectorized",
    "LocalTraces",
    "local_traces",
    "replay_model",
    "common_scale",
    "check_traces",
    "PARTICLE_DIM",
]

_WRAPPERS = (Independent, MaskedDistribution, ExpandedDistribution)

#: where :func:`local_traces` puts the particles; the data plate is dimension -1
PARTICLE_DIM = -2


def sample_sites(trace: Trace) -> Iterator[tuple[str, dict[str, Any]]]:
    """The sample sites of ``trace`` (a plate's subsample sites left out)."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            yield name, site


def fully_reparameterized(site: dict[str, Any]) -> bool:
    """Whether a guide site's score parts are ``(log q, 0, log q)``: an ``rsample`` draw whose
    distribution keeps Pyro's default ``score_parts`` (partially reparameterised ones override it)."""
    if site["infer"].get("enumerate"):
        return False
    fn = site["fn"]
    while isinstance(fn, _WRAPPERS):
        fn = fn.base_dist
    return bool(fn.has_rsample) and type(fn).score_parts is Distribution.score_parts


def log_prob_sum(site: dict[str, Any]) -> torch.Tensor:
    """``site["log_prob_sum"]`` as ``Trace.compute_log_prob`` defines it: scaled, masked, summed."""
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, site["scale"], site["mask"]).sum()


def site_log_prob(site: dict[str, Any], value: torch.Tensor | None = None) -> torch.Tensor:
    """The site's log-density at ``value`` (default: its own), masked but not scaled, one value per
    batch element (shape: the distribution's batch shape)."""
    value = site["value"] if value is None else value
    log_p = site["fn"].log_prob(value, *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, 1.0, site["mask"])


def vectorized(fn: Callable, num_particles: int, dim: int) -> Callable:
    """``fn`` inside the plate over particles that Pyro's vectorised ELBOs put around it."""

    def vectorized(*args: Any, **kwargs: Any) -> Any:
        with pyro.plate("num_particles_vectorized", num_particles, dim=dim):
            return fn(*args, **kwargs)

    return vectorized


class LocalTraces(NamedTuple):
    """One vectorised draw of every particle: the guide's trace and the model's, replayed on it.

    :ivar latent: ``[(name, guide site, model site)]`` for every latent site.
    :ivar observed: the model's observed sites.
    :ivar scale: :func:`common_scale` of the sites.
    """

    model: Trace
    guide: Trace
    latent: list[tuple[str, dict[str, Any], dict[str, Any]]]
    observed: list[dict[str, Any]]
    scale: Any


def replay_model(model: Callable, guide_trace: Trace, args: tuple, kwargs: dict[str, Any], num_particles: int) -> Trace:
    """The model's trace, its latent sites taking the values of ``guide_trace`` (particles vectorised
    as :func:`local_traces` draws them)."""
    return poutine.trace(poutine.replay(vectorized(model, num_particles, PARTICLE_DIM), trace=guide_trace)).get_trace(
        *args, **kwargs
    )


def local_traces(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: dict[str, Any],
    num_particles: int,
    what: str,
    model_grad: bool = True,
) -> LocalTraces:
    """Draw ``num_particles`` particles at once (a plate in dimension -2) and replay the model on them
    (without gradients when ``model_grad`` is false: for weights that are used as constants).

    Every site must be local to the data: inside a plate in dimension -1, with batch shape
    ``(num_particles, B)``, every guide site fully reparameterised and in the model too, and one
    scale shared by all sites; ``what`` (the estimator's name) is named in the error otherwise.
    """
    guide_trace = poutine.trace(vectorized(guide, num_particles, PARTICLE_DIM)).get_trace(*args, **kwargs)
    with torch.set_grad_enabled(torch.is_grad_enabled() and model_grad):
        model_trace = replay_model(model, guide_trace, args, kwargs, num_particles)
    check_traces(model_trace, guide_trace, -PARTICLE_DIM)  # the data plate (-1) and the particles (-2)
    latent, observed = [], []
    for name, site in sample_sites(model_trace):
        _check_local(name, site, num_particles, what)
        if site["is_observed"]:
            observed.append(site)
            continue
        guide_site = guide_trace.nodes.get(name)
        if guide_site is None or not fully_reparameterized(guide_site):
            raise ConfigError(
                f"{what} needs every latent site drawn by the guide with a reparameterised sample; site {name!r} is "
                "not: use --elbo trace or meanfield"
            )
        latent.append((name, guide_site, site))
    extra = [name for name, _ in sample_sites(guide_trace) if name not in model_trace.nodes]
    if extra:
        raise ConfigError(f"{what} needs every guide site in the model too; {extra} are only in the guide")
    sites = [site for _, site, _ in latent] + [site for _, _, site in latent] + observed
    return LocalTraces(model_trace, guide_trace, latent, observed, common_scale(sites, what))


def _check_local(name: str, site: dict[str, Any], num_particles: int, what: str) -> None:
    if not any(frame.dim == -1 for frame in site["cond_indep_stack"]):
        raise ConfigError(
            f"{what} is a bound per data point: every site must be inside a plate over the data in dimension -1, "
            f"site {name!r} is not (a global latent has no per-point bound): use --elbo trace or meanfield"
        )
    shape = tuple(site["fn"].batch_shape)
    if len(shape) != 2 or shape[0] != num_particles:
        raise ConfigError(
            f"{what} expects site {name!r} to have batch shape ({num_particles}, data points) inside the particle "
            f"plate, found {shape}: nest no further plates inside the data plate"
        )


def common_scale(sites: list[dict[str, Any]], what: str) -> Any:
    """The scale every site shares (``N/B`` under ``num_data=N``; 1.0 without); a :class:`ConfigError`
    where sites are scaled differently, which a per-point objective cannot combine."""
    scales = [site["scale"] for site in sites]
    first = scales[0] if scales else 1.0
    for scale in scales[1:]:
        if scale is first or torch.jit.is_tracing():  # (a traced program's scales are tensors of the shapes)
            continue
        if torch.is_tensor(scale) or torch.is_tensor(first):
            same = bool(torch.as_tensor(scale == first).all())
        else:
            same = float(scale) == float(first)
        if not same:
            raise ConfigError(f"{what} needs one scale for every site (poutine.scale), found {first!r} and {scale!r}")
    return first


def check_traces(model_trace: Trace, guide_trace: Trace, max_plate_nesting: int) -> None:
    """Pyro's checks that model and guide agree and that every site's shape fits the plates, where
    validation is on (``pyro.validation_enabled()``); nothing otherwise."""
    if not is_validation_enabled():
        return
    check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
    for trace in (model_trace, guide_trace):
        trace.compute_log_prob()  # (check_site_shape reads each site's log_prob)
        for _, site in sample_sites(trace):
            check_site_shape(site, max_plate_nesting)
