r"""The latent-variable model protocol: what training, evaluation, checkpoints and the memory
estimate ask of a model, so that none of them needs to know which model it holds.

A model is a Pyro program over the data plate ``"data"`` (dim ``-1``), one row of ``x`` per data
point, with latent sites :attr:`LatentVariableModel.latent_sites` and one observed site:

.. math::

    p_\theta(x, z) = p(z)\, p_\theta(x|z) \quad \text{(eq. 3)}, \qquad q_\phi(z|x) \quad \text{(eq. 4)}.

What the rest of pyrovae asks of it, and who asks:

- :meth:`~LatentVariableModel.model` and :meth:`~LatentVariableModel.guide` (``x``, ``num_data=None``):
  training (:func:`pyrovae.fit`, any :class:`pyro.infer.ELBO`);
- :meth:`~LatentVariableModel.log_weights`: the importance weights
  :math:`\log w = \log p_\theta(x, z) - \log q_\phi(z|x)` of ``k`` draws per point (eq. 7), which
  :func:`pyrovae.evaluate` turns into the IWAE bound, the ELBO, PSIS :math:`\hat k` and active units;
- :meth:`~LatentVariableModel.analytic_kl`: :math:`\mathrm{KL}(q_\phi(z|x)\,\|\,p(z))` in closed form
  where there is one (reported beside the Monte Carlo KL);
- :meth:`~LatentVariableModel.meanfield_kl_modes`: which site's KL ``meanfield`` takes in closed form
  (:func:`pyrovae.infer.kl_modes`);
- :meth:`~LatentVariableModel.activation_sizes`: numbers per data point and per draw, for the memory
  estimate (:func:`pyrovae.memory.fit_memory`) and the evaluation's chunk size;
- :meth:`~LatentVariableModel.initialize_from_data`: data-dependent initialisation before training
  (a VampPrior's pseudo-inputs);
- :attr:`~LatentVariableModel.kind`, :meth:`~LatentVariableModel.hparams` and
  :meth:`~LatentVariableModel.from_hparams`: what a checkpoint records and how it is rebuilt; the
  built-in kinds are the keys of :data:`pyrovae.models.MODELS`, any other class's kind is its class
  path ``package.module:ClassName`` (:mod:`pyrovae.models.model_spec` says when it is imported);
- the attributes ``x_dim``, ``z_dim``, ``likelihood`` (a :class:`~pyrovae.models.likelihoods.Likelihood`:
  its ``name`` picks the data checks, its ``discrete`` flag bits per dimension) and ``prior``, and the
  properties :attr:`~LatentVariableModel.device` and :attr:`~LatentVariableModel.dtype`.

Only :meth:`model`, :meth:`guide` and :meth:`hparams` must be written; every other method has a
default that works from the Pyro program alone (:meth:`log_weights` and :meth:`meanfield_kl_modes`
trace it, as Pyro's own ELBOs do). :class:`~pyrovae.models.vae.VAE` and
:class:`~pyrovae.models.hierarchical.HierarchicalVAE` override them with their hand-written,
faster equivalents, which ``tests/test_models_base.py`` checks against those defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar, NamedTuple

import pyro
import torch
from pyro import poutine
from torch import nn

from ..errors import ModelError
from .class_path import class_path
from .kl import kl_mode

__all__ = ["LatentVariableModel", "ImportanceWeights", "ActivationSizes"]


class ImportanceWeights(NamedTuple):
    r"""``k`` draws :math:`z_s \sim q_\phi(z|x)` per data point and their weights (eq. 7).

    :ivar log_weight: :math:`\log p_\theta(x, z_s) - \log q_\phi(z_s|x)`, shape ``(k, B)``.
    :ivar log_lik: :math:`\log p_\theta(x|z_s)`, the observation's term alone, shape ``(k, B)``.
    :ivar z: the draws, every latent site's flattened and concatenated in :attr:`latent_sites`
        order, shape ``(k, B, latent dims)``.
    :ivar means: per latent site, the guide's mean :math:`\mathbb E_q[z_{site}|x]` for active units:
        shape ``(B, dims)`` where it depends on ``x`` alone, ``(k, B, dims)`` where it depends on the
        draws of the sites above (evaluation then averages it over all the draws).
    """

    log_weight: torch.Tensor
    log_lik: torch.Tensor
    z: torch.Tensor
    means: dict[str, torch.Tensor]


class ActivationSizes(NamedTuple):
    """Numbers a model's passes hold (lower bounds, for memory estimates and chunk sizes).

    :ivar per_point: numbers the guide computes once per data point (the encoder's activations).
    :ivar per_draw: numbers per draw of the latents (decoder, likelihood and prior terms).
    :ivar widest: the widest single activation of one draw, for one data point.
    :ivar prior_points: rows the prior passes through the networks on every step besides the
        data (a VampPrior's pseudo-inputs), or a mixture's components; 0 for most priors.
    """

    per_point: int
    per_draw: int
    widest: int
    prior_points: int = 0


class LatentVariableModel(nn.Module, ABC):
    r"""Base class of pyrovae's models: a Pyro ``model(x)`` and ``guide(x)`` and what the rest of
    pyrovae asks of them (see :mod:`pyrovae.models.base`).

    A subclass sets ``x_dim``, ``z_dim`` (the size of each latent site), ``likelihood`` and
    ``prior`` in its constructor and writes :meth:`model`, :meth:`guide` and :meth:`hparams`.
    Its :attr:`kind` is its class path unless the class body names a built-in kind.

    :cvar latent_sites: the latent sample sites, in the order model and guide sample them.
    :cvar kind: what a checkpoint records to rebuild the class: a key of :data:`pyrovae.models.MODELS`
        or ``package.module:ClassName``.
    """

    latent_sites: ClassVar[tuple[str, ...]] = ("z",)
    kind: ClassVar[str] = "latent-variable-model"
    #: the shape of one data point as an image, for pictures (``None``: a row of ``x_dim``)
    image_shape: tuple[int, ...] | None = None

    x_dim: int
    z_dim: int
    likelihood: nn.Module
    prior: nn.Module

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:  # a subclass of a built-in model is not that model
            cls.kind = class_path(cls)

    # -- the Pyro program ------------------------------------------------------------------------
    @abstractmethod
    def model(self, x: torch.Tensor, num_data: int | None = None) -> Any:
        r""":math:`z \sim p(z)`, :math:`x \sim p_\theta(x|z)` observed at ``x`` (shape ``(B, x_dim)``), in
        ``pyro.plate("data", B, dim=-1)``, scaled by ``num_data / B`` when ``num_data`` is given."""

    @abstractmethod
    def guide(self, x: torch.Tensor, num_data: int | None = None) -> Any:
        r""":math:`z \sim q_\phi(z|x)` at the same latent sites and plate as :meth:`model`."""

    @contextmanager
    def without_param_sites(self) -> Iterator[None]:
        """Run model and guide without ``pyro.module`` calls until the block ends (what
        :class:`pyrovae.infer.Objective` asks); the default has none to skip."""
        yield

    # -- checkpoints ---------------------------------------------------------------------------------
    @abstractmethod
    def hparams(self) -> dict[str, Any]:
        """The constructor's keyword arguments as plain JSON values (numbers, strings, lists, dicts,
        ``None``): with :attr:`kind`, what a checkpoint records; :meth:`from_hparams` rebuilds the
        model from them."""

    @classmethod
    def from_hparams(
        cls,
        hparams: Mapping[str, Any],
        prior: Any = None,
        trust_prior: bool = False,
        source: str = "the checkpoint",
    ) -> LatentVariableModel:
        """The model :meth:`hparams` describes, with fresh parameters: ``cls(**hparams)``.

        ``prior`` and ``trust_prior`` (what a caller of :func:`pyrovae.load_vae` says about a prior
        class of theirs, :mod:`pyrovae.models.prior_spec`) are for models whose prior can be such a
        class; this default takes none. ``source`` names the checkpoint in error messages.
        """
        if prior is not None:
            raise ModelError(f"the model {cls.kind} takes no prior option, but prior={prior!r} was given")
        return cls(**hparams)

    # -- evaluation -----------------------------------------------------------------------------------
    def log_weights(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> ImportanceWeights:
        r""":math:`k` draws :math:`z_s \sim q_\phi(z|x)` per row of ``x`` and their log importance weights
        (eq. 7): :math:`\log w_s = \log p_\theta(x, z_s) - \log q_\phi(z_s|x)`.

        The default traces the guide with ``k`` vectorised particles (a plate at dim ``-2``) and
        replays the model on its draws, as :class:`pyro.infer.Trace_ELBO` does, unscaled. The draws
        come from the global RNG, forked and seeded from ``generator`` when one is given (so the
        global RNG is left as it was). The guide's means are estimated by the draws themselves.

        :param x: data, shape ``(B, x_dim)``. :param int k: draws per data point.
        :param generator: the source of randomness (``None``: the global RNG).
        """
        if generator is None:
            return self._traced_log_weights(x, k)
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        # torch.manual_seed seeds every GPU: fork them all, so that every global RNG is left as it was
        devices = list(range(torch.cuda.device_count())) if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=x.device.type):
            torch.manual_seed(seed)
            return self._traced_log_weights(x, k)

    def _traces(self, x: torch.Tensor, k: int) -> tuple[poutine.Trace, poutine.Trace]:
        with self.without_param_sites(), pyro.plate("particles", k, dim=-2):
            guide = poutine.trace(self.guide).get_trace(x)
            model = poutine.trace(poutine.replay(self.model, trace=guide)).get_trace(x)
        return guide, model

    def _traced_log_weights(self, x: torch.Tensor, k: int) -> ImportanceWeights:
        guide, model = self._traces(x, k)
        shape = (k, x.shape[0])
        log_lik = torch.zeros(shape, dtype=x.dtype, device=x.device)
        log_weight = torch.zeros(shape, dtype=x.dtype, device=x.device)
        for site in model.nodes.values():
            if site["type"] == "sample":
                term = site["fn"].log_prob(site["value"]).expand(shape)
                log_weight = log_weight + term
                if site["is_observed"]:
                    log_lik = log_lik + term
        for site in guide.nodes.values():
            if site["type"] == "sample" and not site["is_observed"]:
                log_weight = log_weight - site["fn"].log_prob(site["value"]).expand(shape)
        draws = {name: guide.nodes[name]["value"].expand(*shape, -1).reshape(*shape, -1) for name in self.latent_sites}
        return ImportanceWeights(log_weight, log_lik, torch.cat(list(draws.values()), -1), draws)

    def analytic_kl(self, x: torch.Tensor) -> torch.Tensor | None:
        r""":math:`\mathrm{KL}(q_\phi(z|x)\,\|\,p(z))` in closed form per row of ``x`` (shape ``(B,)``),
        or ``None`` where the model has none (the default)."""
        return None

    @torch.no_grad()
    def meanfield_kl_modes(self) -> dict[str, str]:
        """How the ``meanfield`` ELBO (:class:`pyro.infer.TraceMeanField_ELBO`) treats each latent
        site's KL: ``"analytic"`` where ``kl_divergence(guide site, model site)`` is registered, else
        ``"monte-carlo"`` (:func:`~pyrovae.models.kl.kl_mode`, the test Pyro makes).

        The default traces guide and model once on a row of zeros and asks at each site.
        """
        probe = torch.zeros(1, self.x_dim, device=self.device, dtype=self.dtype)
        with pyro.validation_enabled(False):
            guide, model = self._traces(probe, 1)
        return {site: kl_mode(guide.nodes[site]["fn"], model.nodes[site]["fn"]) for site in self.latent_sites}

    # -- pictures ------------------------------------------------------------------------------------
    def _observed(self, trace: poutine.Trace) -> dict[str, Any]:
        sites = [
            site
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"] and name not in self.latent_sites
        ]
        if len(sites) != 1:
            raise ModelError(
                f"{self.kind}'s model has {len(sites)} observed sites; pictures of E[x|z] need exactly one (x): "
                "override sample() and reconstruct()"
            )
        return sites[0]

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        r""":math:`E_\theta[x|z]` for ``n`` draws :math:`z \sim p(z)`, shape ``(n, x_dim)`` (the samples
        pictures show).

        The default runs :meth:`model` without a guide, so its latent sites draw from the prior, on a
        batch of ``n`` rows of zeros standing for ``x``, and takes the mean of the observed site's
        distribution."""
        probe = torch.zeros(n, self.x_dim, device=self.device, dtype=self.dtype)
        with self.without_param_sites(), pyro.validation_enabled(False):
            trace = poutine.trace(self.model).get_trace(probe)
        return self._observed(trace)["fn"].mean.reshape(n, self.x_dim)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`E_\theta[x|z]` for given values ``z`` (shape ``(n, z_dim)``) of the first latent site,
        shape ``(n, x_dim)`` (the traversal and interpolation pictures).

        The default runs :meth:`model` with that site held at ``z`` and each later site held at the
        mean of its conditional prior given the sites before it, and takes the mean of the observed
        site's distribution."""
        n = z.shape[0]
        probe = torch.zeros(n, self.x_dim, device=self.device, dtype=self.dtype)
        data = {self.latent_sites[0]: z.to(self.device, self.dtype)}
        with self.without_param_sites(), pyro.validation_enabled(False):
            for site in (*self.latent_sites[1:], None):
                trace = poutine.trace(poutine.condition(self.model, data=dict(data))).get_trace(probe)
                if site is not None:
                    data[site] = trace.nodes[site]["fn"].mean
        return self._observed(trace)["fn"].mean.reshape(n, self.x_dim)

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`E_\phi[z|x]` of the first latent site per row of ``x``, shape ``(B, z_dim)`` (the
        latent scatter). The default traces :meth:`guide` and takes its site's mean."""
        with self.without_param_sites():
            guide = poutine.trace(self.guide).get_trace(x)
        return guide.nodes[self.latent_sites[0]]["fn"].mean.reshape(x.shape[0], -1)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`E_\theta[x|z]` at the guide's means, shape ``(B, x_dim)`` (the reconstructions).

        The default traces :meth:`guide`, takes the mean of each latent site (given the draws of the
        sites before it), and runs :meth:`model` on ``x`` with its latent sites held at those means."""
        with self.without_param_sites(), pyro.validation_enabled(False):
            guide = poutine.trace(self.guide).get_trace(x)
            means = {site: guide.nodes[site]["fn"].mean for site in self.latent_sites}
            trace = poutine.trace(poutine.condition(self.model, data=means)).get_trace(x)
        return self._observed(trace)["fn"].mean.reshape(x.shape[0], self.x_dim)

    # -- resources and initialisation ------------------------------------------------------------
    def activation_sizes(self) -> ActivationSizes:
        """Numbers per data point and per draw that a pass holds at least (for
        :func:`pyrovae.memory.fit_memory` and the evaluation's chunk size).

        The default counts what any model holds: the data, the guide's parameters and the draws of
        every site, and the likelihood's parameters (a model with wide networks should override it)."""
        z = len(self.latent_sites) * self.z_dim
        outputs = self.x_dim * getattr(self.likelihood, "params_per_dim", 1)
        return ActivationSizes(per_point=self.x_dim + 2 * z, per_draw=3 * z + 3 * outputs, widest=max(outputs, z))

    def initialize_from_data(self, x: torch.Tensor) -> None:
        """Set data-dependent parameters from the training rows ``x`` (shape ``(N, x_dim)``, on any
        device) before training starts; the default does nothing."""

    # -- where the parameters live ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
