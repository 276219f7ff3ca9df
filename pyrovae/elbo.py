r"""ELBO estimators: Pyro's by name, and the hand-written closed form that checks them.

The ELBO of one data point (seed eq. 11) is

.. math::

    \mathcal L(x) = \mathbb E_{q_\phi(z|x)}[\log p_\theta(x|z)] - \mathrm{KL}(q_\phi(z|x)\,\|\,p(z))
        \le \log p_\theta(x).

``trace`` (:class:`~pyro.infer.Trace_ELBO`) estimates both terms by Monte Carlo,
:math:`\log p_\theta(x|z) + \log p(z) - \log q_\phi(z|x)` at :math:`z \sim q`;
``meanfield`` (:class:`~pyro.infer.TraceMeanField_ELBO`) uses the analytic KL (eq. 18) and
Monte Carlo only for the reconstruction term. Both are unbiased for the same :math:`\mathcal L`.

The names map to :class:`~pyrovae.lean_elbo.LeanTrace_ELBO` and
:class:`~pyrovae.lean_elbo.LeanTraceMeanField_ELBO`: subclasses of those two that give the same
numbers on the same draws but compute each log-density once, only where it is used (Pyro's own
code runs under validation); ``compiled-meanfield`` and ``compiled-trace``
(:mod:`pyrovae.compiled_elbo`) are those two with loss and gradient compiled into one graph per batch
shape (same draws, same numbers, a few seconds of compiling first); ``jit-trace`` and
``jit-meanfield`` are Pyro's JIT-compiled twins.
"""

from __future__ import annotations

from typing import NamedTuple

import pyro
import torch
from pyro.infer import ELBO, JitTrace_ELBO, JitTraceMeanField_ELBO, TraceMeanField_ELBO

from .checks import positive_int
from .compiled_elbo import CompiledTrace_ELBO, CompiledTraceMeanField_ELBO
from .kl import kl_diag_gaussian_std_normal, kl_diag_gaussians, kl_mode
from .lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from .priors import LearnedGaussianPrior, StandardNormalPrior

__all__ = ["ELBOS", "make_elbo", "ElboTerms", "closed_form_elbo", "estimate_elbo", "kl_modes", "JitTraceMeanFieldELBO"]


class JitTraceMeanFieldELBO(JitTraceMeanField_ELBO):
    """Pyro's :class:`~pyro.infer.JitTraceMeanField_ELBO`, compiled once rather than on every call.

    In pyro-ppl 1.9.2, ``JitTraceMeanField_ELBO.differentiable_loss`` looks for the attribute
    ``_loss_and_surrogate_loss`` before it builds its compiled loss, but stores that loss as
    ``_differentiable_loss``; so every call builds a new one and traces model and guide again with
    ``torch.jit.trace`` (``Trace_ELBO``'s JIT twin, which stores what it looks for, compiles once).
    This subclass sets the attribute looked for after the first call, so later calls with the same
    model, guide and keyword arguments reuse the compiled loss; ``tests/test_elbo.py`` counts the
    traces.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        if getattr(self, "_loss_and_surrogate_loss", None) is None:
            self._loss_and_surrogate_loss = self._differentiable_loss
        return loss


#: ELBO names accepted by :func:`make_elbo`, ``pyrovae fit --elbo`` and :func:`pyrovae.fit`.
ELBOS: dict[str, type[ELBO]] = {
    "meanfield": LeanTraceMeanField_ELBO,
    "trace": LeanTrace_ELBO,
    "compiled-meanfield": CompiledTraceMeanField_ELBO,
    "compiled-trace": CompiledTrace_ELBO,
    "jit-meanfield": JitTraceMeanFieldELBO,
    "jit-trace": JitTrace_ELBO,
}


def make_elbo(name: str, num_particles: int = 1) -> ELBO:
    """The Pyro ELBO called ``name``; particles are vectorised (one batched pass)."""
    if name not in ELBOS:
        raise ValueError(f"elbo must be one of {sorted(ELBOS)}, got {name!r}")
    positive_int("num_particles", num_particles)
    options = {"num_particles": num_particles, "max_plate_nesting": 1, "vectorize_particles": num_particles > 1}
    if name.startswith("jit-"):
        options["ignore_jit_warnings"] = True
    return ELBOS[name](**options)


class ElboTerms(NamedTuple):
    """Per-data-point ELBO (eq. 11) and its two terms, in nats, each of shape ``(B,)``."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


@torch.no_grad()
def kl_modes(vae: torch.nn.Module, elbo: str | ELBO = "meanfield") -> dict[str, str]:
    """How the ELBO ``elbo`` (a name or an instance) treats the KL of each latent site: ``{"z": mode}``.

    ``trace`` ELBOs (anything but a ``TraceMeanField_ELBO``) estimate it by Monte Carlo;
    ``meanfield`` ELBOs use the closed form exactly where ``kl_divergence(q(z|x), p(z))`` is
    registered (:func:`pyrovae.kl.kl_mode`), which is what Pyro's ``TraceMeanField_ELBO`` does at
    run time.
    """
    if isinstance(elbo, ELBO):
        cls = type(elbo)
    elif elbo in ELBOS:
        cls = ELBOS[elbo]
    else:
        raise ValueError(f"elbo must be one of {sorted(ELBOS)} or a pyro.infer.ELBO, got {elbo!r}")
    if not issubclass(cls, TraceMeanField_ELBO):
        return {"z": "monte-carlo"}
    probe = torch.zeros(1, vae.x_dim, device=vae.device, dtype=vae.dtype)
    return {"z": kl_mode(vae.posterior(probe), vae.prior((1,)))}


def _analytic_kl(prior: torch.nn.Module, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    if isinstance(prior, StandardNormalPrior):
        return kl_diag_gaussian_std_normal(loc, scale)  # eq. 18
    if isinstance(prior, LearnedGaussianPrior):
        return kl_diag_gaussians(loc, scale, prior.loc, prior.scale)  # eq. 16
    raise ValueError(
        f"closed_form_elbo has no closed-form KL for the prior {type(prior).__name__}; expected "
        "StandardNormalPrior or LearnedGaussianPrior (for other priors use estimate_elbo, whose KL is Monte Carlo)"
    )


def closed_form_elbo(
    vae: torch.nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
) -> ElboTerms:
    r"""The ELBO of seed eq. 11, written out in torch without ``torch.distributions``.

    .. math::

        \mathcal L(x) \approx \frac1S \sum_{s=1}^S \log p_\theta(x|z_s)
            - \mathrm{KL}(q_\phi(z|x)\,\|\,p(z)), \qquad z_s = \mu_\phi(x) + \sigma_\phi(x)\odot\varepsilon_s

    with the reconstruction term by eq. 13 (Bernoulli) or eq. 14 (Gaussian) and the KL by
    eq. 18 (prior :math:`\mathcal N(0, I)`) or eq. 16 (learned Gaussian prior). Give ``eps`` (or
    ``z``) to evaluate it on the same draw another estimator used.

    :param vae: a :class:`pyrovae.VAE`.
    :param torch.Tensor x: data, shape ``(B, x_dim)``.
    :param eps: standard-normal noise, shape ``(S, B, z_dim)`` or ``(B, z_dim)``; gradients flow
        through :math:`z = \mu + \sigma\varepsilon` (the reparameterisation trick).
    :param z: latent samples, same shapes as ``eps``, used as given (no gradient to the encoder
        through them). Mutually exclusive with ``eps``. When neither is given, ``eps`` is drawn.
    :returns: :class:`ElboTerms` with ``elbo = reconstruction - kl``, each shape ``(B,)``; the
        reconstruction term is averaged over the ``S`` draws.
    """
    if eps is not None and z is not None:
        raise ValueError("give at most one of eps and z, got both")
    loc, scale = vae.encoder(x)
    if z is None:
        if eps is None:
            eps = torch.randn_like(loc)
        if eps.shape[-2:] != loc.shape:
            raise ValueError(f"eps must end in shape {tuple(loc.shape)}, got {tuple(eps.shape)}")
        z = loc + scale * eps
    elif z.shape[-2:] != loc.shape:
        raise ValueError(f"z must end in shape {tuple(loc.shape)}, got {tuple(z.shape)}")
    reconstruction = vae.likelihood.log_prob(x, vae.decoder(z))
    if reconstruction.dim() > 1:
        reconstruction = reconstruction.reshape(-1, x.shape[0]).mean(0)
    kl = _analytic_kl(vae.prior, loc, scale)
    return ElboTerms(reconstruction - kl, reconstruction, kl)


@torch.no_grad()
def estimate_elbo(vae: torch.nn.Module, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1024) -> float:
    """Mean ELBO per data point of ``x`` (nats), by Pyro's ``TraceMeanField_ELBO``.

    The KL is analytic where ``kl_divergence`` is registered for (guide, prior), else Monte
    Carlo, exactly as in training with ``meanfield``. ``x`` is processed in chunks of
    ``batch_size`` rows so memory stays bounded.
    """
    if x.shape[0] == 0:
        raise ValueError("x is empty: expected at least one data point")
    elbo = make_elbo("meanfield", num_particles)
    total = 0.0
    with pyro.validation_enabled(False):
        for chunk in x.split(batch_size):
            total -= elbo.loss(vae.model, vae.guide, chunk)
    return total / x.shape[0]
