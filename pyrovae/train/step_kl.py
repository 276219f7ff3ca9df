r"""The training set's reconstruction and KL terms, read off the steps themselves (no extra pass).

Where the objective is the ELBO (``--elbo meanfield`` or ``trace``), the loss of a step on a
minibatch of :math:`B` rows out of :math:`N` is :math:`-\frac NB \sum_b \hat{\mathcal L}(x_b)`
(eq. 12), and eq. 11 splits each point's ELBO into a reconstruction term and the KL of every latent
site. :class:`KLRecorder` wraps the objective module and, while the step's model and guide run,
pairs each latent site of the guide with the model's site of the same name and computes

.. math::

    \overline{\mathrm{KL}}_s = \frac1B \sum_{b=1}^B \mathrm{KL}(q_\phi(z_s|x_b)\,\|\,p(z_s)),

in closed form where the prior has one (eq. 16-18) and as :math:`\log q - \log p` at the step's
draw otherwise — the rule of the test KL (``eval_kl_mode``) — averaged over the particles. Its
value is written in place into a buffer of the wrapper (so the compiled, jit and cudagraph engines
record the write into their graphs and replay it), and the training loop adds that buffer to an
epoch sum on the device after every step (:class:`TrainTerms`): nothing is read on the host until
the epoch's record is written, as for ``grad_norm``. The record's fields are then

- ``train_kl``: the mean over the epoch's steps of :math:`\sum_s \overline{\mathrm{KL}}_s`, and
  ``train_kl_sites`` per site;
- ``train_reconstruction``: ``train_elbo + train_kl``, the mean over the steps of the
  reconstruction term that the step's ELBO estimate holds (for ``meanfield`` exactly
  :math:`\frac1B\sum_b \log p_\theta(x_b|z_b)` at the step's draw; for ``trace``, whose estimate
  takes the KL at the draw, an unbiased estimate of the same term).

Where the objective is not the ELBO (``iwae``, ``infovae``, a weighted KL), the loop already
estimates the training ELBO at the epoch's end on the first training rows, and takes both terms
from that one pass instead (:func:`pyrovae.train.epoch_fields.held_out_fields`).

Over several processes each rank's record is weighted as its loss is (so that the mean over the
ranks is the global batch's) and the epoch's sums are averaged over the ranks (as is the sum a
checkpoint carries, so a run resumes on another number of processes). A prior with no
closed-form KL under the ``compiled`` or ``jit`` engine: the first step of each recorded graph
writes the KL of the recording's own draw (the graph is recorded on the step's batch with the
random generators forked), not of the step's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._compat import Messenger, site_is_subsample
from ..infer.kl_term import site_kl
from ..infer.module_elbo import optimises_the_elbo
from ..models.kl import shared_kl

__all__ = ["KLRecorder", "TrainTerms", "record_train_terms"]


class _PairSites(Messenger):
    """Pairs each latent guide site with the model's site of the same name (the guide runs first,
    the model is replayed on its draw) and keeps each pair's scaled KL sum."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = list(names)
        self.guide: dict[str, dict[str, Any]] = {}
        self.pairs: dict[str, list[torch.Tensor]] = {}

    def _pyro_post_sample(self, msg: dict[str, Any]) -> None:  # Pyro's messenger protocol
        if msg["is_observed"] or site_is_subsample(msg) or msg["name"] not in self.names:
            return
        name = msg["name"]
        guide_site = self.guide.pop(name, None)
        if guide_site is None:  # the guide's draw: the model's site comes next
            self.guide[name] = msg
            return
        kl = site_kl(guide_site, msg)  # (with its gradient: under shared_kl the loss reuses this closed form)
        with torch.no_grad():
            self.pairs.setdefault(name, []).append(-kl.subtract_from(0.0))


class KLRecorder(nn.Module):
    """``objective(*args)``, with the step's KL per latent site written into the buffer :attr:`last`
    (one entry per name of ``sites``: the KL summed over the particles and the rows, scaled by
    :math:`N/B`, so that divided by the particles and :math:`N` it is the mean per data point; see
    :mod:`pyrovae.train.step_kl`).

    :param objective: the objective module (:class:`~pyrovae.infer.objective.Objective`).
    :param sites: the model's latent sites, in order.
    :param int num_data: :math:`N`, the rows the sites' scale :math:`N/B` refers to.
    :param int particles: the estimator's particles; :param bool vectorized: whether it draws them in one pass.
    """

    def __init__(self, objective: nn.Module, sites: Sequence[str], num_data: int, particles: int, vectorized: bool):
        super().__init__()
        self.objective = objective
        self.sites, self.num_data = tuple(sites), int(num_data)
        self.particles = int(particles)
        #: the pairs of one call that belong to its loss: a fallback to Pyro's own estimator draws
        #: the traces again, and the last draws are the ones its loss is made of
        self.draws = 1 if vectorized else self.particles
        device = next((p.device for p in objective.parameters()), torch.device("cpu"))
        self.register_buffer("last", torch.zeros(len(self.sites), dtype=torch.float64, device=device))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with shared_kl(), _PairSites(self.sites) as pairs:
            loss = self.objective(*args, **kwargs)
        with torch.no_grad():
            values = []
            for name in self.sites:
                drawn = pairs.pairs.get(name, [])[-self.draws :]
                if len(drawn) != self.draws:  # (a program that does not pair this site: no number for it)
                    values.append(torch.full((), float("nan"), device=self.last.device))
                else:
                    values.append(drawn[0] if self.draws == 1 else torch.stack(drawn).sum())
            self.last.copy_(torch.stack(values).detach())  # the scaled sums (divided by particles and N per epoch)
        return loss

    def weigh(self, weight: float) -> None:
        """Weigh the step's record as a rank's loss is weighed (:class:`~pyrovae.train.sharding.ShardedObjective`)."""
        with torch.no_grad():
            self.last.mul_(weight)


class TrainTerms:
    """The epoch's sum of the steps' :attr:`KLRecorder.last`, on the device, and the record's fields.

    :param recorder: the wrapped objective, or ``None`` where the objective is not the ELBO (no fields).
    """

    def __init__(self, recorder: KLRecorder | None):
        self.recorder = recorder
        self.total = None if recorder is None else torch.zeros_like(recorder.last)

    def add(self) -> None:
        """After a step: add its KL to the epoch's sum (on the device, no synchronisation)."""
        if self.recorder is not None:
            self.total.add_(self.recorder.last)

    def carried(self, world: Any) -> list[float]:
        """The epoch's sum so far, per site, over the ranks of ``world`` (every rank calls it; a
        synchronisation), for the resume state: a run resumed on any number of processes goes on from it."""
        if self.total is None:
            return []
        sums = self.total.tolist()
        if world.launched:  # (each rank's steps weighted as their losses: the mean over ranks is the global batch's)
            sums = [world.sum(value) / world.size for value in sums]
        return sums

    def start(self, carried: Sequence[float] = ()) -> None:
        """Start an epoch's sum at ``carried`` (a resumed epoch's) or at 0."""
        if self.total is None:
            return
        if len(carried) == self.total.numel():
            self.total.copy_(torch.tensor(list(carried), dtype=torch.float64))
        else:  # (a new epoch; or a resume state written before this sum existed: the steps after it count)
            self.total.zero_()

    def fields(self, world: Any, train_elbo: float, steps: int) -> dict[str, Any]:
        """``train_reconstruction``, ``train_kl`` and ``train_kl_sites`` of an epoch of ``steps`` steps
        whose ``train_elbo`` is given; the sum starts again at 0. Empty where there is no number."""
        if self.total is None:
            return {}
        sums = self.carried(world)
        self.total.zero_()
        per_point = steps * self.recorder.particles * self.recorder.num_data
        sites = {name: value / per_point for name, value in zip(self.recorder.sites, sums, strict=True)}
        if not all(v == v for v in sites.values()):  # a NaN: a site the program did not pair
            return {}
        kl = sum(sites.values())
        return {"train_reconstruction": train_elbo + kl, "train_kl": kl, "train_kl_sites": sites}


def record_train_terms(
    objective: nn.Module, vae: Any, estimator: Any, num_data: int, resume: Any = None
) -> tuple[nn.Module, TrainTerms]:
    """The module a step calls and the epoch's :class:`TrainTerms` (starting from the sum a resume
    state carries): ``objective`` wrapped by a :class:`KLRecorder` where ``estimator`` optimises the
    ELBO, else ``objective`` itself (no fields)."""
    if not optimises_the_elbo(estimator):
        return objective, TrainTerms(None)
    sites = getattr(vae, "latent_sites", ("z",))
    recorder = KLRecorder(objective, sites, num_data, estimator.num_particles, bool(estimator.vectorize_particles))
    terms = TrainTerms(recorder)
    terms.start(() if resume is None else resume.train_kl)
    return recorder, terms
