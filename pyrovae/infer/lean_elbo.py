r"""Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` without the work a VAE step does not need.

For one particle, Pyro's trace ELBOs run the guide under :func:`~pyro.poutine.trace`, replay the
model against that trace, and then, in ``get_importance_trace``, prune the plates' subsample
sites, compute ``log_prob`` at *every* sample site of the model and ``score_parts`` at every
sample site of the guide, and only then add up the terms. ``TraceMeanField_ELBO`` uses none of the
latent sites' log-densities when the KL has a closed form, so with a Gaussian prior it computes
:math:`\log p(z)` and :math:`\log q(z|x)` every step only to drop them.

The two classes here run the same two traces (model and guide stay ordinary Pyro programs, and
the classes are :class:`pyro.infer.ELBO` instances that :class:`pyro.infer.SVI` accepts) and add
up the same terms, computing each density once, only where the estimator uses it:

.. math::

    \texttt{LeanTraceMeanField\_ELBO}:\quad \hat{\mathcal L} = \sum_{x\text{ sites}} \log p_\theta(x|z)
        - \sum_{z\text{ sites}} \mathrm{KL}(q_\phi(z|x)\,\|\,p(z)) \quad\text{(eq. 11, 18)}

    \texttt{LeanTrace\_ELBO}:\quad \hat{\mathcal L} = \sum_{\text{model sites}} \log p
        - \sum_{\text{guide sites}} \log q \quad\text{at } z \sim q_\phi(z|x)\ \text{(eq. 12)}

each site scaled and masked as Pyro scales and masks it (``poutine.scale``, ``num_data``), and a
KL without a registered closed form estimated as :math:`\log p(z) - \log q(z|x)` at the sampled
:math:`z`, as in Pyro. The gradient is that of :math:`-\hat{\mathcal L}` (every guide site is
reparameterised, so the surrogate is the loss itself).

Pyro's own code runs instead, unchanged, whenever the shortcut does not apply:

- with validation on (``pyro.validation_enabled()``): Pyro's checks of model/guide agreement, site
  shapes, supports and NaNs then all run, exactly as in the parent class;
- on traces with a guide site that is not fully reparameterised (score-function terms), that is
  enumerated, or that the model does not have (auxiliary sites): the random generators are set
  back to their state before the call and the parent's public method runs, so the same draws give
  Pyro's result;
- where ``max_plate_nesting`` is not given and particles are vectorised (Pyro guesses it).

Only public Pyro and torch interfaces are used: the traces come from :func:`~pyro.poutine.trace`
and :func:`~pyro.poutine.replay`, vectorised particles from a :class:`~pyro.plate` around model
and guide in dimension ``-max_plate_nesting`` (none for one particle), as Pyro draws them.

``tests/test_lean_elbo.py`` checks losses and gradients against Pyro's classes on the same draws
for every prior, likelihood and particle setting pyrovae offers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.trace_struct import Trace

from .._compat import is_validation_enabled, torch_item, warn_if_nan
from ..errors import ConfigError
from ..rng import GeneratorStates
from .kl_term import site_kl
from .traces import fully_reparameterized as _fully_reparameterized
from .traces import log_prob_sum as _log_prob_sum
from .traces import sample_sites as _sample_sites
from .traces import vectorized as _vectorized

__all__ = ["LeanTrace_ELBO", "LeanTraceMeanField_ELBO"]


class _ParentNeededError(Exception):
    """A particle's traces need the parent class's own estimator."""


class _LeanMixin(ABC):
    """The shared loop: traces drawn as Pyro draws them, terms added by ``_lean_elbo``."""

    @abstractmethod
    def _lean_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor | None:
        """The ELBO estimate of one particle, or ``None`` where the traces need Pyro's own code."""

    def _lean_traces(
        self, model: Callable, guide: Callable, args: tuple, kwargs: dict
    ) -> Iterator[tuple[Trace, Trace]]:
        # what Pyro's ELBOs draw per particle, without computing any log-density. Vectorised
        # particles, as in Pyro: ``max_plate_nesting`` already counts the particle plate (ELBO's
        # constructor, or its guess, added one for more than one particle), so the plate is the
        # outermost dimension it allows, -max_plate_nesting; one particle gets no plate at all.
        if self.vectorize_particles:
            if self.num_particles > 1:
                dim = -int(self.max_plate_nesting)
                model = _vectorized(model, self.num_particles, dim)
                guide = _vectorized(guide, self.num_particles, dim)
            draws = 1
        else:
            draws = self.num_particles
        for _ in range(draws):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            yield model_trace, guide_trace

    def particle_traces(
        self, model: Callable, guide: Callable, *args: Any, **kwargs: Any
    ) -> Iterator[tuple[Trace, Trace]]:
        """``(model trace, guide trace)`` of each draw, drawn as :meth:`lean_loss` draws them (the
        particles vectorised in one pair where the estimator vectorises them); no density computed."""
        return self._lean_traces(model, guide, args, kwargs)

    def lean_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The negative ELBO estimate (mean over particles) as a differentiable tensor, computed
        only where the shortcut applies; :class:`_ParentNeededError` otherwise (nothing else raised)."""
        loss: Any = 0.0
        for model_trace, guide_trace in self._lean_traces(model, guide, args, kwargs):
            elbo = self._lean_elbo(model_trace, guide_trace)
            if elbo is None:
                raise _ParentNeededError
            loss = loss - elbo / self.num_particles
        return loss

    def _lean_applies(self, guide: Callable) -> bool:
        return (
            not is_validation_enabled()
            and not isinstance(poutine.unwrap(guide), poutine.messenger.Messenger)
            and not (self.vectorize_particles and self.max_plate_nesting == float("inf"))
        )

    def _try_lean(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """``lean_loss``, or ``None`` with the random generators set back where the parent's code must
        run (so that it draws what the lean loop drew)."""
        if not self._lean_applies(guide):
            return None
        # (a CUDA graph being recorded cannot read the generators: there the shortcut must apply)
        states = None if _recording_a_cuda_graph() else GeneratorStates.capture()
        try:
            return self.lean_loss(model, guide, *args, **kwargs)
        except _ParentNeededError:
            if states is None:
                raise ConfigError(
                    f"{type(self).__name__} cannot be recorded in a CUDA graph for this model and guide (its "
                    "shortcut does not apply, and Pyro's own code would read the random generators): use "
                    "--engine compiled"
                ) from None
            states.restore()
            return None

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The ELBO estimate's negative, a float (no gradients are taken)."""
        with torch.no_grad():
            loss = self._try_lean(model, guide, args, kwargs)
        if loss is None:
            return super().loss(model, guide, *args, **kwargs)
        loss = torch_item(loss)
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The loss as a tensor whose gradient is the estimator's (value: the loss)."""
        loss = self._try_lean(model, guide, args, kwargs)
        return super().differentiable_loss(model, guide, *args, **kwargs) if loss is None else loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss as a float; its gradient is accumulated into the parameters' ``.grad``.

        Unlike Pyro's classes, the backward pass does not wait for ``param`` sites in the traces:
        it runs whenever the loss has a gradient (so model and guide need not call ``pyro.module``
        on every step when the caller optimises the module's parameters itself).
        """
        loss = self._try_lean(model, guide, args, kwargs)
        if loss is None:
            return super().loss_and_grads(model, guide, *args, **kwargs)
        if getattr(loss, "requires_grad", False):
            loss.backward(retain_graph=self.retain_graph)
        loss = torch_item(loss)
        warn_if_nan(loss, "loss")
        return loss


def _recording_a_cuda_graph() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()


class LeanTrace_ELBO(_LeanMixin, Trace_ELBO):  # noqa: N801 (named after Pyro's class)
    r""":class:`~pyro.infer.Trace_ELBO` (Monte Carlo KL) computing each log-density once.

    Per particle, :math:`\sum \log p - \sum \log q` over the sample sites of the model and of the
    guide, at the guide's draw. Falls back to Pyro's code under validation and for guide sites
    that are not fully reparameterised (see :mod:`pyrovae.infer.lean_elbo`).
    """

    def _lean_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor | None:
        elbo: Any = 0.0
        for _, site in _sample_sites(guide_trace):
            if not _fully_reparameterized(site):
                return None
            elbo = elbo - _log_prob_sum(site)
        for _, site in _sample_sites(model_trace):
            elbo = elbo + _log_prob_sum(site)
        return elbo if torch.is_tensor(elbo) else None


class LeanTraceMeanField_ELBO(_LeanMixin, TraceMeanField_ELBO):  # noqa: N801 (named after Pyro's class)
    r""":class:`~pyro.infer.TraceMeanField_ELBO` (analytic KL) without the unused log-densities.

    Per particle, :math:`\sum_x \log p_\theta(x|z) - \sum_z \mathrm{KL}(q\,\|\,p)`, the KL in closed
    form where ``kl_divergence`` is registered and :math:`\log p(z) - \log q(z|x)` at the draw
    otherwise. :math:`\log p(z)` and :math:`\log q(z|x)` are not computed where the KL is analytic.
    Falls back to Pyro's code under validation, for guide sites that are not fully
    reparameterised and for guide-only (auxiliary) sites (see :mod:`pyrovae.infer.lean_elbo`).
    """

    def _lean_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor | None:
        elbo: Any = 0.0
        latent = 0
        for name, site in _sample_sites(model_trace):
            if site["is_observed"]:
                elbo = elbo + _log_prob_sum(site)
                continue
            guide_site = guide_trace.nodes.get(name)
            if guide_site is None or not _fully_reparameterized(guide_site):
                return None
            latent += 1
            elbo = site_kl(guide_site, site).subtract_from(elbo)
        if latent != sum(1 for _ in _sample_sites(guide_trace)):
            return None  # guide-only (auxiliary) sites: Pyro's code handles and checks them
        return elbo if torch.is_tensor(elbo) else None
