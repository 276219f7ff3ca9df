"""What a training run measured (:class:`History`) and what its callbacks are handed (:class:`FitState`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..models.base import LatentVariableModel
from ..rng import GeneratorStates
from .selection import ModelSelection
from .state import ResumeState

__all__ = ["History", "FitState", "Callback"]


@dataclass
class History:
    """What :func:`fit` measured.

    :ivar epochs: one record per epoch: ``epoch``, ``step``, ``train_elbo`` (mean of the step
        estimates over the epoch, nats per data point), ``test_elbo`` (if a test set was given),
        ``seconds`` (training time of the epoch), ``eval_seconds``, ``images_per_second``. Where
        the objective is not the ELBO (``iwae``, ``infovae``, a weighted KL), ``train_objective`` is
        the mean of the step estimates of the objective, ``train_elbo`` the ELBO (eq. 11) at the
        end of the epoch on the first :data:`TRAIN_ELBO_ROWS` training rows (``train_elbo_rows``),
        and ``objective`` says what was optimised; ``test_elbo`` is always eq. 11. With a test set,
        ``test_reconstruction`` and ``test_kl`` split it (``test_elbo = test_reconstruction - test_kl``
        on the same draws), ``test_kl_sites`` per latent site, ``eval_kl_mode`` saying how each was
        computed (and ``validation_*`` alike); ``kl_weight`` (eq. 26, absent for ``iwae``), ``lr``
        and ``grad_norm`` (the mean norm of the epoch's gradients before clipping): see
        :mod:`pyrovae.train.epoch_fields`; ``train_reconstruction``, ``train_kl`` and ``train_kl_sites``
        split the training ELBO (:mod:`pyrovae.train.step_kl`).
    :ivar step_elbos: the per-data-point estimate of the objective at every step (the ELBO unless
        the objective is another one).
    :ivar kl_mode: how the training ELBO computed each latent site's KL, ``{"z": "analytic"}`` or
        ``{"z": "monte-carlo"}`` (also in every epoch record); one entry per latent site.
    :ivar best_epoch: with validation rows held out, the epoch whose parameters the model ends with
        (the highest ``validation_elbo``, also in every epoch record), else ``None``.
    :ivar stopped_early: whether ``patience`` ended the run before its last epoch.
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_elbos: list[float] = field(default_factory=list)
    kl_mode: dict[str, str] = field(default_factory=dict)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def last(self) -> dict[str, Any]:
        if not self.epochs:
            raise ConfigError("the history is empty: no epoch has finished")
        return self.epochs[-1]


@dataclass
class FitState:
    """Handed to callbacks: after every epoch (``event="epoch"``), every ``checkpoint_every``
    steps (``"checkpoint"``), when a signal stops training (``"interrupt"``) and, with validation
    rows held out, once at the end, after the best epoch's parameters are restored (``"selected"``).

    :ivar record: the epoch's record (``"epoch"`` events), else ``None``.
    :ivar epoch: the epoch in progress, counting from 1 (the next one after an ``"epoch"`` event).
    :ivar batch: batches of that epoch already done.
    :ivar step: optimisation steps done in all.
    :ivar grad_norms: the sum of the gradient norms of the epoch's steps so far, and their count.
    :ivar train_kl: the sum of the epoch's steps' KL per latent site so far (:mod:`pyrovae.train.step_kl`).
    """

    vae: LatentVariableModel
    optimizer: torch.optim.Optimizer
    history: History
    record: dict[str, Any] | None
    event: str
    epoch: int
    batch: int
    step: int
    epoch_loss: float
    epoch_rng: GeneratorStates
    selection: ModelSelection | None = None
    grad_norms: tuple[float, int] = (0.0, 0)
    train_kl: list[float] = field(default_factory=list)

    def train_state(self) -> ResumeState:
        """Everything but the VAE's parameters that ``fit(..., resume=...)`` needs to continue
        exactly here (the generators' states are read now)."""
        return ResumeState(
            optimizer=self.optimizer.state_dict(),
            epoch=self.epoch,
            batch=self.batch,
            step=self.step,
            epoch_loss=self.epoch_loss,
            epoch_rng=self.epoch_rng,
            rng=GeneratorStates.capture(),
            epochs=self.history.epochs,
            step_elbos=self.history.step_elbos,
            selection=None if self.selection is None else self.selection.to_dict(),
            grad_norms=self.grad_norms,
            train_kl=list(self.train_kl),
        )

    def resume_state(self) -> dict[str, Any]:
        """:meth:`train_state` as plain types, for a ``weights_only`` checkpoint."""
        return self.train_state().to_dict()


Callback = Callable[[FitState], None]
