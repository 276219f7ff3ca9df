r"""The base of pyrovae's objectives beyond the plain ELBO: a Pyro ELBO that is a torch module.

:class:`ModuleELBO` subclasses compute one thing, :meth:`ModuleELBO.objective_sum` (the objective
summed over a minibatch, from one vectorised draw of every particle; or the loss of the draw,
:meth:`ModuleELBO.traces_loss`), and get from it Pyro's three methods: ``differentiable_loss`` (what
:class:`~pyrovae.infer.objective.Objective` and every engine call), ``loss`` and ``loss_and_grads``
(what :class:`pyro.infer.SVI` calls). Being a :class:`torch.nn.Module` lets an estimator hold state
that changes during training as a buffer (a weight that changes with the step, as InfoVAE's KL
weight, held by its ``meanfield`` part): inside an ``Objective`` it is then one of the objective's
buffers, which the compiled and jit engines read as an input of their graphs on every call.
(``meanfield`` and ``trace``, with or without a KL weight, are not :class:`ModuleELBO` objectives:
they are Pyro's own ELBO classes made lean, :mod:`pyrovae.infer.lean_elbo`; both kinds say what they
optimise through :class:`DescribedObjective`.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from pyro.infer import ELBO, Trace_ELBO
from torch import nn

from .._compat import torch_item, warn_if_nan
from ..errors import positive_int
from .traces import LocalTraces, local_traces

__all__ = ["DescribedObjective", "ModuleELBO", "describe_objective", "optimises_the_elbo"]


class DescribedObjective(ABC):
    """An estimator that says whether it optimises the ELBO and what it optimises, in words (the
    :class:`ModuleELBO` objectives and the ELBO estimators with a KL weight)."""

    def is_elbo(self) -> bool:
        """Whether the objective is the ELBO (eq. 11) itself."""
        return False

    @abstractmethod
    def describe(self) -> str:
        """What the objective is, in words (the start line of a run prints it)."""


class ModuleELBO(Trace_ELBO, nn.Module, DescribedObjective):
    """What the objectives of this package share: a :class:`pyro.infer.Trace_ELBO` (whose traces
    it draws, but whose public methods it replaces) that is also a
    :class:`torch.nn.Module` (so its buffers travel with the :class:`~pyrovae.infer.objective.Objective`
    that holds it, as submodules do), with Pyro's three ELBO methods all computed from
    :meth:`objective_sum`, the objective summed over the minibatch before the ``N/B`` scale (or
    from :meth:`traces_loss`, where a subclass scales its terms itself).
    Calling one is Pyro's ``elbo(model, guide)`` (an ``ELBOModule``), not a module's forward."""

    #: the ``--elbo`` name, for messages
    elbo_name: ClassVar[str] = ""

    def __init__(self, num_particles: int) -> None:
        nn.Module.__init__(self)
        # particles are drawn in one vectorised pass (traces.local_traces), whatever their number
        ELBO.__init__(self, num_particles=positive_int("num_particles", num_particles), max_plate_nesting=1)

    def objective_sum(self, traces: LocalTraces) -> torch.Tensor:
        """The objective summed over the minibatch (a tensor with the estimator's gradient); a
        subclass defines it, or :meth:`traces_loss` instead."""
        raise NotImplementedError(f"{type(self).__name__} defines neither objective_sum nor traces_loss")

    def traces_loss(self, traces: LocalTraces) -> torch.Tensor:
        """The loss of one draw: :math:`-\\frac NB` times :meth:`objective_sum`."""
        return -traces.scale * self.objective_sum(traces)

    def draw(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> LocalTraces:
        """One vectorised draw of every particle (:func:`~pyrovae.infer.traces.local_traces`)."""
        return local_traces(model, guide, args, kwargs, self.num_particles, f"--elbo {self.elbo_name}")

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """:meth:`traces_loss` of one draw: the loss a step minimises."""
        return self.traces_loss(self.draw(model, guide, *args, **kwargs))

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            loss = torch_item(self.differentiable_loss(model, guide, *args, **kwargs))
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        loss = torch_item(loss)
        warn_if_nan(loss, "loss")
        return loss


def optimises_the_elbo(elbo: ELBO) -> bool:
    """Whether ``elbo``'s loss is an estimate of the ELBO (eq. 11) itself: true for every Pyro ELBO
    but the :class:`DescribedObjective` estimators that say otherwise."""
    return elbo.is_elbo() if isinstance(elbo, DescribedObjective) else True


def describe_objective(elbo: ELBO) -> str:
    """What a step with ``elbo`` optimises, in words, for the start line of a run."""
    return elbo.describe() if isinstance(elbo, DescribedObjective) else "the ELBO (eq. 11)"
