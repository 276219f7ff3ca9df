r"""ELBO estimators by name (``--elbo``: what is estimated), and the test ELBO.

The ELBO of one data point (eq. 11) is

.. math::

    \mathcal L(x) = \mathbb E_{q_\phi(z|x)}[\log p_\theta(x|z)] - \mathrm{KL}(q_\phi(z|x)\,\|\,p(z))
        \le \log p_\theta(x).

``trace`` (:class:`~pyrovae.infer.lean_elbo.LeanTrace_ELBO`, a :class:`pyro.infer.Trace_ELBO`)
estimates both terms by Monte Carlo, :math:`\log p_\theta(x|z) + \log p(z) - \log q_\phi(z|x)` at
:math:`z \sim q`; ``meanfield`` (:class:`~pyrovae.infer.lean_elbo.LeanTraceMeanField_ELBO`, a
:class:`pyro.infer.TraceMeanField_ELBO`) uses the prior's closed-form KL (eq. 18 / 16) where it
has one and Monte Carlo for the rest. Both are unbiased for the same :math:`\mathcal L`, give
Pyro's numbers on the same draws, and work in stock :class:`pyro.infer.SVI`. The same two classes
optimise the ELBO with a weighted KL when given ``beta``, ``kl_warmup`` or ``free_bits``
(:mod:`~pyrovae.infer.kl_weighting`, eq. 26-27): one code path whatever the weight.

Objectives other than the ELBO: ``iwae`` (:class:`~pyrovae.infer.iwae.IWAE_ELBO`, the
importance-weighted bound of eq. 23 with standard or DReG gradients) and ``infovae``
(:class:`~pyrovae.infer.infovae.InfoVAE_ELBO`, eq. 28). :func:`make_elbo` builds each from the
options of :class:`~pyrovae.infer.options.ObjectiveOptions`.

How a step runs (eagerly, compiled, traced) is a separate choice, the engine
(:mod:`pyrovae.train.engines`). The names of pyrovae 0.1 that named both at once
(``compiled-meanfield``, ``jit-trace``, ...) still work, with a :class:`FutureWarning`
(:data:`DEPRECATED_ELBOS`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pyro
import torch
from pyro.infer import ELBO, TraceMeanField_ELBO

from ..errors import ConfigError, positive_int
from ..models.base import LatentVariableModel
from ..spec.names import OBJECTIVES, register_name
from ..spec.run import objective_options
from ..spec.sections import NoOptions, register_objective_options
from .infovae import InfoVAE_ELBO
from .iwae import IWAE_ELBO
from .lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from .options import ObjectiveOptions

__all__ = [
    "ELBOS",
    "DEPRECATED_ELBOS",
    "make_elbo",
    "split_elbo_name",
    "estimate_elbo",
    "kl_modes",
    "register_objective",
    "registered_objective",
]

#: ``--elbo`` names: what is estimated, each a :class:`pyro.infer.ELBO` class.
ELBOS: dict[str, type[ELBO]] = {
    "meanfield": LeanTraceMeanField_ELBO,
    "trace": LeanTrace_ELBO,
    "iwae": IWAE_ELBO,
    "infovae": InfoVAE_ELBO,
}

#: pyrovae 0.1's names for an estimator and an engine in one string -> ``(elbo, engine)``
DEPRECATED_ELBOS: dict[str, tuple[str, str]] = {
    "compiled-meanfield": ("meanfield", "compiled"),
    "compiled-trace": ("trace", "compiled"),
    "jit-meanfield": ("meanfield", "jit"),
    "jit-trace": ("trace", "jit"),
}


def register_objective(name: str, objective: type[ELBO], options: type | None = None) -> type[ELBO]:
    """Make ``--elbo NAME`` train with ``objective(num_particles=K, **options)``: ``objective`` is a
    Pyro :class:`~pyro.infer.ELBO` class with a ``differentiable_loss`` (a subclass of
    :class:`~pyro.infer.Trace_ELBO`, say), ``options`` the dataclass of its options (each with a
    default; ``None``: it takes none), set in a run file's ``[objective.NAME]`` section or by
    ``--objective-option KEY=VALUE``. Returns ``objective``. A name already taken is refused."""
    if not (isinstance(objective, type) and callable(getattr(objective, "differentiable_loss", None))):
        raise ConfigError(f"register_objective takes an ELBO class with a differentiable_loss, got {objective!r}")
    register_name("objective", name, objective.__module__)
    register_objective_options(name, options or NoOptions)
    ELBOS[name] = objective
    return objective


def registered_objective(name: object) -> bool:
    """Whether ``name`` is an objective that :func:`register_objective` added (not a built-in one)."""
    return isinstance(name, str) and name in ELBOS and name not in OBJECTIVES


def split_elbo_name(name: str) -> tuple[str, str | None]:
    """``(elbo, engine)`` for an ``--elbo`` name: the engine is ``None`` unless ``name`` is one of
    :data:`DEPRECATED_ELBOS`, which also warns (:class:`FutureWarning`) with the new spelling."""
    if name in ELBOS:
        return name, None
    if name in DEPRECATED_ELBOS:
        elbo, engine = DEPRECATED_ELBOS[name]
        warnings.warn(
            f"--elbo {name} is deprecated and will be removed: use --elbo {elbo} --engine {engine} "
            f"(FitOptions(elbo={elbo!r}, engine={engine!r}))",
            FutureWarning,
            stacklevel=3,
        )
        return elbo, engine
    raise ConfigError(f"elbo must be one of {', '.join(ELBOS)}, got {name!r}")


def make_elbo(name: str = "meanfield", num_particles: int = 1, **options: Any) -> ELBO:
    """The estimator called ``name`` (one of :data:`ELBOS`): a :class:`pyro.infer.ELBO` with
    ``num_particles`` vectorised particles (one batched pass) and one plate (the data).

    ``options`` are :class:`~pyrovae.infer.options.ObjectiveOptions` fields (``beta``,
    ``kl_warmup``, ``free_bits`` for ``meanfield`` and ``trace``; ``iwae_grad`` for ``iwae``;
    ``infovae_alpha``, ``infovae_lambda``, ``mmd_kernel`` for ``infovae``); one that does not
    apply to ``name`` must keep its default; an objective of :func:`register_objective` takes the
    fields of its own options class. ``meanfield`` and ``trace`` are the ELBO estimators of
    :data:`ELBOS` whatever their options: ``beta``, ``kl_warmup`` and ``free_bits`` weight their KL
    term (:mod:`~pyrovae.infer.kl_weighting`), and at their defaults the estimate is the ELBO's.
    """
    elbo, _ = split_elbo_name(name)
    positive_int("num_particles", num_particles)
    if registered_objective(elbo):
        return ELBOS[elbo](num_particles=num_particles, **dataclasses.asdict(objective_options(elbo, options)))
    unknown = sorted(set(options) - set(ObjectiveOptions.field_names()))
    if unknown:
        raise ConfigError(f"make_elbo got unknown options {unknown}; expected some of {ObjectiveOptions.field_names()}")
    chosen = ObjectiveOptions(**options).check_for(elbo)
    if elbo == "iwae":
        return IWAE_ELBO(num_particles, grad=chosen.iwae_grad)
    if elbo == "infovae":
        return InfoVAE_ELBO(num_particles, chosen.infovae_alpha, chosen.infovae_lambda, chosen.mmd_kernel)
    return ELBOS[elbo](
        num_particles=num_particles,
        max_plate_nesting=1,
        vectorize_particles=num_particles > 1,
        beta=chosen.beta,
        kl_warmup=chosen.kl_warmup,
        free_bits=chosen.free_bits,
    )


@torch.no_grad()
def kl_modes(vae: LatentVariableModel, elbo: str | ELBO = "meanfield") -> dict[str, str]:
    """How the ELBO ``elbo`` (a name or an instance) treats the KL of each latent site: ``{site: mode}``,
    ``{"z": mode}`` for a one-level VAE, ``{"z2": ..., "z1": ...}`` for the two-level one.

    ``trace`` ELBOs (anything but a ``TraceMeanField_ELBO``) estimate every KL by Monte Carlo;
    ``meanfield`` ELBOs use the closed form exactly where the model says it has one
    (:meth:`pyrovae.models.LatentVariableModel.meanfield_kl_modes`: for the VAE, the prior's
    :meth:`~pyrovae.models.Prior.kl_mode`, which agrees with the ``kl_divergence`` registry that
    Pyro's ``TraceMeanField_ELBO`` consults at run time).
    """
    cls = type(elbo) if isinstance(elbo, ELBO) else ELBOS[split_elbo_name(elbo)[0]]
    if not issubclass(cls, TraceMeanField_ELBO):
        return {site: "monte-carlo" for site in vae.latent_sites}
    return vae.meanfield_kl_modes()


@torch.no_grad()
def estimate_elbo(vae: torch.nn.Module, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1024) -> float:
    """Mean ELBO per data point of ``x`` (nats), by Pyro's ``TraceMeanField_ELBO``.

    The KL is analytic where ``kl_divergence`` is registered for (guide, prior), else Monte
    Carlo, exactly as in training with ``meanfield``. ``x`` is processed in chunks of
    ``batch_size`` rows so memory stays bounded.
    """
    if x.shape[0] == 0:
        raise ConfigError("x is empty: expected at least one data point")
    elbo = make_elbo("meanfield", num_particles)
    total = 0.0
    with pyro.validation_enabled(False):
        for chunk in x.split(batch_size):
            total -= elbo.loss(vae.model, vae.guide, chunk)
    return total / x.shape[0]
