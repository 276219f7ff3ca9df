r"""ELBO estimators: Pyro's by name, and the hand-written closed form that checks them.

The ELBO of one data point (eq. 11) is

.. math::

    \mathcal L(x) = \mathbb E_{q_\phi(z|x)}[\log p_\theta(x|z)] - \mathrm{KL}(q_\phi(z|x)\,\|\,p(z))
        \le \log p_\theta(x).

``trace`` (:class:`~pyro.infer.Trace_ELBO`) estimates both terms by Monte Carlo,
:math:`\log p_\theta(x|z) + \log p(z) - \log q_\phi(z|x)` at :math:`z \sim q`;
``meanfield`` (:class:`~pyro.infer.TraceMeanField_ELBO`) uses the analytic KL (eq. 18) and
Monte Carlo only for the reconstruction term. Both are unbiased for the same :math:`\mathcal L`.

The names map to :class:`~pyrovae.infer.lean_elbo.LeanTrace_ELBO` and
:class:`~pyrovae.infer.lean_elbo.LeanTraceMeanField_ELBO`: subclasses of those two that give the same
numbers on the same draws but compute each log-density once, only where it is used (Pyro's own
code runs under validation); ``compiled-meanfield`` and ``compiled-trace``
(:mod:`pyrovae.infer.compiled`) are those two with loss and gradient compiled into one graph per batch
shape (same draws, same numbers, a few seconds of compiling first); ``jit-trace`` and
``jit-meanfield`` are Pyro's JIT-compiled twins.
"""

from __future__ import annotations

import pyro
import torch
from pyro.infer import ELBO, JitTrace_ELBO, JitTraceMeanField_ELBO, TraceMeanField_ELBO

from ..errors import positive_int
from ..models.kl import kl_mode
from .compiled import CompiledTrace_ELBO, CompiledTraceMeanField_ELBO
from .lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO

__all__ = ["ELBOS", "make_elbo", "estimate_elbo", "kl_modes", "JitTraceMeanFieldELBO"]


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


@torch.no_grad()
def kl_modes(vae: torch.nn.Module, elbo: str | ELBO = "meanfield") -> dict[str, str]:
    """How the ELBO ``elbo`` (a name or an instance) treats the KL of each latent site: ``{"z": mode}``.

    ``trace`` ELBOs (anything but a ``TraceMeanField_ELBO``) estimate it by Monte Carlo;
    ``meanfield`` ELBOs use the closed form exactly where ``kl_divergence(q(z|x), p(z))`` is
    registered (:func:`pyrovae.models.kl.kl_mode`), which is what Pyro's ``TraceMeanField_ELBO`` does at
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
