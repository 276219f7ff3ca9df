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

The same classes are ``--elbo meanfield`` and ``--elbo trace`` with a weighted KL (``beta``,
``kl_warmup``, ``free_bits``, eq. 26-27): each is a :class:`~pyrovae.infer.kl_weighting.KLWeighting`
module, and every latent site's KL term above passes through
:meth:`~pyrovae.infer.kl_weighting.KLWeighting.subtract_kl`, which multiplies it by
:math:`\beta_t` (a buffer) or replaces it by eq. 27's free-bits term. With :math:`\beta = 1`, no
warm-up and no free bits (the defaults) nothing is multiplied and the sums are the ones above, bit
for bit. A weighted KL has no Pyro counterpart to fall back to: where the shortcut does not apply
the estimator refuses in one line (a :class:`~pyrovae.errors.ConfigError`), and under validation it
runs Pyro's checks of the traces (:func:`~pyrovae.infer.traces.check_traces`) and its own sums.

``tests/test_lean_elbo.py`` checks losses and gradients against Pyro's classes on the same draws
for every prior, likelihood and particle setting pyrovae offers; ``tests/test_objectives.py`` the
weighted KL against its hand-written version.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.trace_struct import Trace
from torch import nn

from .._compat import is_validation_enabled, torch_item, warn_if_nan
from ..errors import ConfigError
from ..rng import GeneratorStates
from .kl_weighting import KLWeighting
from .options import ObjectiveOptions
from .traces import check_traces
from .traces import fully_reparameterized as _fully_reparameterized
from .traces import log_prob_sum as _log_prob_sum
from .traces import sample_sites as _sample_sites
from .traces import vectorized as _vectorized

__all__ = ["LeanTrace_ELBO", "LeanTraceMeanField_ELBO", "KLWeightedMeanField_ELBO", "KLWeightedTrace_ELBO"]


class _ParentNeededError(Exception):
    """A particle's traces need the parent class's own estimator."""


class _LeanMixin:
    """The shared loop: traces drawn as Pyro draws them, terms added by ``_lean_elbo``; a class
    using it lists it first, then Pyro's ELBO class, then :class:`KLWeighting` (so that calling the
    estimator is Pyro's ``elbo(model, guide)``, not a module's forward).

    The constructor takes Pyro's arguments (``num_particles``, ``max_plate_nesting``,
    ``vectorize_particles``, ...) and, by keyword only, the KL weight's options ``beta``,
    ``kl_warmup`` and ``free_bits`` (:mod:`pyrovae.infer.kl_weighting`; defaults: the ELBO).
    """

    def __init__(
        self,
        *args: Any,
        beta: float = ObjectiveOptions.beta,
        kl_warmup: int = ObjectiveOptions.kl_warmup,
        free_bits: float = ObjectiveOptions.free_bits,
        **kwargs: Any,
    ) -> None:
        nn.Module.__init__(self)
        super().__init__(*args, **kwargs)  # Pyro's ELBO (which calls no further __init__)
        self.set_kl_options(beta, kl_warmup, free_bits)

    @abstractmethod
    def _lean_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor | None:
        """The ELBO estimate of one particle, or ``None`` where the traces need Pyro's own code."""

    def elbo_of(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        """The estimate of one draw (its vectorised particles summed), each site scaled as Pyro
        scales it, with the weighted KL; a :class:`~pyrovae.errors.ConfigError` where only Pyro's
        own code could compute it."""
        elbo = self._lean_elbo(model_trace, guide_trace)
        if elbo is None:
            raise self._no_shortcut()
        return elbo

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
        checks = self.weighs_kl and is_validation_enabled()
        for model_trace, guide_trace in self._lean_traces(model, guide, args, kwargs):
            if checks:
                check_traces(model_trace, guide_trace, self.max_plate_nesting)
            elbo = self._lean_elbo(model_trace, guide_trace)
            if elbo is None:
                raise _ParentNeededError
            loss = loss - elbo / self.num_particles
        return loss

    def _drawable(self, guide: Callable) -> bool:
        """Whether :meth:`_lean_traces` can draw this guide's particles (a guide that is a program,
        not a messenger; ``max_plate_nesting`` known where particles are vectorised)."""
        return not isinstance(poutine.unwrap(guide), poutine.messenger.Messenger) and not (
            self.vectorize_particles and self.max_plate_nesting == float("inf")
        )

    def _no_shortcut(self) -> ConfigError:
        return ConfigError(
            f"{type(self).__name__} with a weighted KL (beta={self.beta:g}, kl_warmup={self.kl_warmup}, "
            f"free_bits={self.free_bits:g}) needs a guide program whose latent sites are all drawn by a "
            "reparameterised sample and all in the model, and max_plate_nesting given where particles are "
            "vectorised; Pyro's own estimator, which handles the rest, has no KL weight: use --elbo "
            "meanfield or trace with the default beta=1, kl_warmup=0, free_bits=0 for this model"
        )

    def _try_lean(self, model: Callable, guide: Callable, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """``lean_loss``, or ``None`` with the random generators set back where the parent's code must
        run (so that it draws what the lean loop drew)."""
        if self.weighs_kl:  # no parent's code to fall back to: the lean sums, or a refusal
            if not self._drawable(guide):
                raise self._no_shortcut()
            try:
                return self.lean_loss(model, guide, *args, **kwargs)
            except _ParentNeededError:
                raise self._no_shortcut() from None
        if is_validation_enabled() or not self._drawable(guide):
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


class LeanTrace_ELBO(_LeanMixin, Trace_ELBO, KLWeighting):  # noqa: N801 (named after Pyro's class)
    r""":class:`~pyro.infer.Trace_ELBO` (Monte Carlo KL) computing each log-density once.

    Per particle, :math:`\sum \log p - \sum \log q` over the sample sites of the model and of the
    guide, at the guide's draw. Falls back to Pyro's code under validation and for guide sites
    that are not fully reparameterised (see :mod:`pyrovae.infer.lean_elbo`).

    With a KL weight (``beta``, ``kl_warmup``) every :math:`\log q` and every latent site's
    :math:`\log p` are multiplied by :math:`\beta_t`; with free bits each latent site's
    :math:`\log q - \log p` is replaced by eq. 27's term (:mod:`pyrovae.infer.kl_weighting`).
    """

    analytic_kl = False

    def _lean_elbo(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor | None:
        elbo: Any = 0.0
        free_bits = self.free_bits > 0
        for _, site in _sample_sites(guide_trace):
            if not _fully_reparameterized(site):
                return None
            if not free_bits:  # (with free bits, counted with the model's site below)
                elbo = elbo - self._weighted(_log_prob_sum(site))
        paired = 0
        for name, site in _sample_sites(model_trace):
            if site["is_observed"]:
                elbo = elbo + _log_prob_sum(site)
            elif not free_bits:
                elbo = elbo + self._weighted(_log_prob_sum(site))
            elif name in guide_trace.nodes:
                paired += 1
                elbo = self.subtract_kl(elbo, name, guide_trace.nodes[name], site, analytic=False)
            else:
                return None
        if free_bits and paired != sum(1 for _ in _sample_sites(guide_trace)):
            return None  # guide-only sites have no per-coordinate KL
        return elbo if torch.is_tensor(elbo) else None


class LeanTraceMeanField_ELBO(_LeanMixin, TraceMeanField_ELBO, KLWeighting):  # noqa: N801 (named after Pyro's class)
    r""":class:`~pyro.infer.TraceMeanField_ELBO` (analytic KL) without the unused log-densities.

    Per particle, :math:`\sum_x \log p_\theta(x|z) - \sum_z \mathrm{KL}(q\,\|\,p)`, the KL in closed
    form where ``kl_divergence`` is registered and :math:`\log p(z) - \log q(z|x)` at the draw
    otherwise. :math:`\log p(z)` and :math:`\log q(z|x)` are not computed where the KL is analytic.
    Falls back to Pyro's code under validation, for guide sites that are not fully
    reparameterised and for guide-only (auxiliary) sites (see :mod:`pyrovae.infer.lean_elbo`).

    With ``beta``, ``kl_warmup`` or ``free_bits`` each site's KL is weighted or replaced by eq. 27's
    term (:mod:`pyrovae.infer.kl_weighting`).
    """

    analytic_kl = True

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
            elbo = self.subtract_kl(elbo, name, guide_site, site, analytic=True)
        if latent != sum(1 for _ in _sample_sites(guide_trace)):
            return None  # guide-only (auxiliary) sites: Pyro's code handles and checks them
        return elbo if torch.is_tensor(elbo) else None


class _PositionalKLOptions:
    """pyrovae 0.1's constructor of the weighted-KL classes: ``(num_particles, beta, kl_warmup,
    free_bits)``, one plate over the data, particles vectorised (as :func:`~pyrovae.infer.make_elbo`
    builds the estimator); deprecated."""

    def __init__(
        self,
        num_particles: int = 1,
        beta: float = ObjectiveOptions.beta,
        kl_warmup: int = ObjectiveOptions.kl_warmup,
        free_bits: float = ObjectiveOptions.free_bits,
    ) -> None:
        plain = next(c for c in type(self).__mro__ if c in (LeanTrace_ELBO, LeanTraceMeanField_ELBO)).__name__
        warnings.warn(
            f"{type(self).__name__} is deprecated and will be removed: it is {plain} (make_elbo(..., beta=, "
            f"kl_warmup=, free_bits=) builds it, or {plain}(num_particles, max_plate_nesting=1, "
            "vectorize_particles=num_particles > 1, beta=..., kl_warmup=..., free_bits=...))",
            FutureWarning,
            stacklevel=2,
        )
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=1,
            vectorize_particles=num_particles > 1,
            beta=beta,
            kl_warmup=kl_warmup,
            free_bits=free_bits,
        )


class KLWeightedMeanField_ELBO(_PositionalKLOptions, LeanTraceMeanField_ELBO):  # noqa: N801 (Pyro's naming)
    """Deprecated: :class:`LeanTraceMeanField_ELBO`, built with the KL options by position."""


class KLWeightedTrace_ELBO(_PositionalKLOptions, LeanTrace_ELBO):  # noqa: N801 (Pyro's naming)
    """Deprecated: :class:`LeanTrace_ELBO`, built with the KL options by position."""
