r"""The training loop: :func:`fit`, the one loop that the CLI, the examples and the benchmarks call.

A step is plain torch around a module (:mod:`pyrovae.train.step`)::

    loss = module(batch)      # the objective (pyrovae.infer.Objective), as the engine runs it
    loss.backward()
    optimizer.step()          # torch's fused Adam, skipped if anything was non-finite (on a GPU by a device flag)

where the objective's loss is the ELBO estimator's, on model and guide that stay ordinary Pyro
programs. That is the update ``pyro.infer.SVI(model, guide, pyro.optim.Adam(...), elbo).step(batch)``
makes (Adam is elementwise; ``pyro.optim.Adam`` merely keeps one torch Adam per parameter tensor),
with one optimizer call per step; ``tests/test_train.py`` checks that both give the same parameters.

Minibatches are slices of device-resident tensors; the test ELBO is estimated after each epoch;
observers (progress bar, metrics files, checkpoints) are callbacks. The loop is split into
:class:`_Trainer`'s pieces: starting (or resuming) a run, one epoch, checking the steps and
flushing their losses, the epoch's record, and telling the callbacks.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro
import torch
from pyro.infer import ELBO

from ..data import Dataset, split_validation
from ..data.batches import as_dataset, train_elbo_rows
from ..data.feed import batch_source
from ..errors import ConfigError
from ..infer.elbo import kl_modes
from ..infer.module_elbo import describe_objective, optimises_the_elbo
from ..infer.objective import Objective
from ..models.vae import VAE
from ..rng import GeneratorStates
from .distributed import Processes, SingleProcess
from .engines import StepPlan
from .epoch_fields import carried_grad_norms, held_out_fields, step_fields
from .history import Callback, FitState, History
from .interrupts import FitInterrupted, stop_on_signals
from .lines import epoch_line, pace_said, start_line
from .options import FitOptions, with_deprecated_keywords
from .schedule import learning_rate
from .selection import ModelSelection
from .state import ResumeState
from .step import NonFiniteLossError, make_adam
from .step_kl import record_train_terms

__all__ = ["fit", "History", "FitState", "NonFiniteLossError", "FitInterrupted", "make_adam", "TRAIN_ELBO_ROWS"]

#: where the objective is not the ELBO, the training ELBO of each epoch is estimated on this many
#: training rows (the first ones; binarized once, with a fixed seed, under dynamic binarization)
TRAIN_ELBO_ROWS = 10_000


def fit(
    vae: VAE,
    data: Dataset | torch.Tensor,
    options: FitOptions | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    resume: ResumeState | dict[str, Any] | None = None,
    world: Processes | None = None,
    **deprecated: Any,
) -> History:
    r"""Train ``vae`` as ``options`` say and return the :class:`History`.

    The loss of a minibatch of :math:`B` rows out of :math:`N` is the ELBO estimate scaled by
    :math:`N/B` (``num_data=N``), i.e. an unbiased estimate of :math:`-\sum_{n=1}^N \mathcal L(x_n)`
    (eq. 12 times :math:`N`); histories report :math:`\mathcal L` per data point.

    :param vae: the :class:`~pyrovae.VAE` to train (in place), on the device it is on.
    :param data: a :class:`~pyrovae.data.Dataset` (train and test) or a ``(N, D)`` train tensor,
        checked against the model's likelihood unless :func:`pyrovae.data.check_dataset` did so.
    :param options: what to estimate and how to train (:class:`~pyrovae.train.FitOptions`: the
        objective and its options, the engine, epochs, batch size, learning rate and its schedule,
        clipping, validation rows and patience, the seed, checkpoints, signals); default: its defaults.
    :param callbacks: called with a :class:`FitState` after every epoch (and at checkpoints,
        interrupts and model selection).
    :param log: called with one line of text at the start and after every epoch.
    :param bool progress: show a tqdm progress bar per epoch (on stderr).
    :param resume: a :class:`~pyrovae.train.state.ResumeState` (or its ``to_dict()``), with the VAE's
        parameters already restored: continue that run exactly, as if it had not stopped (the
        seed is then not used).
    :param world: the processes that train together (from :func:`pyrovae.train.distributed.launch`;
        the model is moved to ``world.device``). Over the ranks of a
        :class:`~pyrovae.train.distributed.World`, the batch size is the global batch, split over
        them, and the run is the one a single process would make (see :mod:`pyrovae.train.distributed`);
        only rank 0 logs, shows progress and calls the callbacks. ``None``: this process alone
        (:class:`~pyrovae.train.distributed.SingleProcess`).
    :param deprecated: pyrovae 0.1's keywords (``epochs=``, ``elbo=``, ``num_particles=``,
        ``device=``...): still taken, with a :class:`FutureWarning`; pass ``FitOptions(...)``.
    :raises NonFiniteLossError: when a loss or gradient is not finite; the parameters are those of
        the last finite step.
    """
    options, device = with_deprecated_keywords(options, deprecated)
    if resume is not None and not isinstance(resume, ResumeState):
        resume = ResumeState.from_dict(resume)
    if world is None:  # this process alone, on the model's device (or the one asked with pyrovae 0.1's device=)
        world = SingleProcess(vae.device if device is None else device)
    world.check_batch_size(options.batch_size)
    world.check_objective(options.elbo)
    if not world.is_main:  # rank 0 alone reports
        callbacks, log, progress = (), None, False
    if resume is not None:
        resume = dataclasses.replace(
            resume, epoch_rng=world.own_generators(resume.epoch_rng), rng=world.own_generators(resume.rng)
        )
    estimator = options.make_estimator()
    options.seed_rng()  # (once: a run plan seeds before it builds the model)
    vae.to(world.device)
    data = as_dataset(data, vae.x_dim, vae.likelihood.name, vae.device, vae.dtype)
    trainer = _Trainer(vae, data, options, estimator, callbacks, log, progress, resume, world)
    with (
        pyro.get_param_store().scope(),
        pyro.validation_enabled(options.validate),
        torch.autograd.set_detect_anomaly(options.detect_anomaly),
        stop_on_signals(options.handle_signals) as caught,
        world.watch(lambda: f"epoch {trainer.epoch}, after step {trainer.step}"),
    ):
        trainer.caught = caught
        trainer.select_engine()
        trainer.run()
    return trainer.history


class _Trainer:
    """The state of one call of :func:`fit` and the pieces of its loop."""

    def __init__(
        self,
        vae: VAE,
        data: Dataset,
        options: FitOptions,
        estimator: ELBO,
        callbacks: Sequence[Callback],
        log: Callable[[str], None] | None,
        progress: bool,
        resume: ResumeState | None,
        world: Processes,
    ):
        self.vae, self.data, self.options, self.estimator = vae, data, options, estimator
        self.callbacks, self.log, self.progress = callbacks, log, progress
        self.checkpoint_every = options.checkpoint_every
        self.resume = resume
        self.validation_x: torch.Tensor | None = None
        self.selection: ModelSelection | None = None
        if options.validation:
            data, self.validation_x = split_validation(data, options.validation)
            self.selection = ModelSelection(options.patience)
        self.data = data
        self.num_data = data.train.shape[0]
        self.caught: dict[str, str] = {}
        self.world = world
        self.history = History(kl_mode=kl_modes(vae, estimator))
        # (building the first torch optimizer of a process imports torch's compiler stack, ~2 s: this
        # happens here, before the clock runs, not inside the first timed epoch)
        self.optimizer = make_adam(vae.parameters(), lr=options.lr)
        # (.to: an estimator that is a module, e.g. with a KL weight, keeps its buffers by the model)
        objective = Objective(vae.model, vae.guide, estimator, num_data=self.num_data).to(vae.device)
        self.objective, self.terms = record_train_terms(objective, vae, estimator, self.num_data, resume)
        #: sets a step-dependent objective (a KL warm-up) before each step
        self.set_step: Callable[[int], None] | None = getattr(estimator, "set_step", None)
        self.train_elbo_rows = None if optimises_the_elbo(estimator) else train_elbo_rows(data, TRAIN_ELBO_ROWS)
        self.epoch, self.batch, self.step, self.epoch_loss = 1, 0, 0, 0.0
        self.epoch_rng = GeneratorStates.capture()
        self._pending: list[torch.Tensor] = []

    # -- starting -------------------------------------------------------------------------------
    def select_engine(self) -> None:
        """Take the engine (``auto`` decided by the run's length, unless the options hold a decided
        one) and have it check this run (once: a run plan's engine comes checked), plan the epochs,
        wrap the objective."""
        batch_size, options = self.options.batch_size, self.options
        self.engine = options.make_engine(self.num_data, device=self.vae.device)
        self.engine.check(StepPlan(self.world.device, self.world.size, batch_size, self.num_data, options.validate,
                                   options.detect_anomaly))  # fmt: skip
        self.drop_last = self.engine.fixed_shapes
        self.steps_per_epoch = self.num_data // batch_size if self.drop_last else math.ceil(self.num_data / batch_size)
        self.images_per_epoch = self.steps_per_epoch * batch_size if self.drop_last else self.num_data
        self.module = self.world.wrap(self.engine, self.objective)
        self.source = batch_source(self.data, batch_size, self.drop_last, self.vae.device, self.vae.dtype)

    def _restore(self) -> None:
        state = self.resume
        if state is None:
            return
        self.optimizer.load_state_dict(state.optimizer)
        self.history.epochs = list(state.epochs)
        self.history.step_elbos = list(state.step_elbos)
        if self.selection is not None and state.selection is not None:
            self.selection.load(state.selection, "the resume state", self.vae.device)
        self.epoch, self.batch, self.step, self.epoch_loss = state.epoch, state.batch, state.step, state.epoch_loss
        if self.batch > self.steps_per_epoch:
            raise ConfigError(f"cannot resume at batch {self.batch} of an epoch of {self.steps_per_epoch} batches")

    def _log_start(self) -> None:
        if self.log is None:
            return
        where = f" resuming at epoch {self.epoch}, step {self.step}" if self.resume is not None else ""
        if self.world.launched:
            where += f" on {self.world.size} processes ({self.world.backend}; batch_size is the global batch)"
        where += "".join(f" {note};" for note in self.data.notes)[:-1]
        fused = "(fused)" if self.optimizer.defaults.get("fused") else ""
        rows = (self.num_data, self.data.test.shape[0])
        self.log(start_line(self.vae, self.options, self.estimator, self.engine.name, self.history.kl_mode, rows,
                            self.steps_per_epoch, f"optimizer=adam{fused}{where}"))  # fmt: skip

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        self._restore()
        self._first_record = len(self.history.epochs)  # (the records of earlier calls, on a resume)
        self.first_step: float | None = None  # seconds of this call's first step (a compiling engine's compile)
        self._log_start()
        reduce = self.world.reduce
        self.guarded = self.engine.make_step(
            self.module, self.optimizer, first_step=self.step, reduce=reduce, clip_norm=self.options.clip_norm
        )
        self.guarded.set_grad_norms(*carried_grad_norms(self.resume))
        first_epoch, first_batch = self.epoch, self.batch
        for epoch in range(first_epoch, self.options.epochs + 1):
            if self.selection is not None and self.selection.stopped:
                break
            resuming = self.resume is not None and epoch == first_epoch
            self.epoch, self.batch = epoch, first_batch if resuming else 0
            seconds = self._train_epoch(resuming)
            record = self._record(seconds, start_batch=first_batch if resuming else 0)
            self.epoch_loss = 0.0
            self._notify("epoch", epoch + 1, 0, record, GeneratorStates.capture())
            if self._stop(check=True):  # the signal came during evaluation or the epoch's callbacks
                self._notify("interrupt", epoch + 1, 0, None, GeneratorStates.capture())
                raise FitInterrupted(self.caught["signal"], epoch, self.step)
        self._select()

    def _select(self) -> None:
        """With validation rows: give the model the best epoch's parameters, and tell the callbacks."""
        selection = self.selection
        if selection is None or not selection.restore(self.vae):
            return
        self.history.best_epoch, self.history.stopped_early = selection.best_epoch, selection.stopped
        if self.log is not None:
            early = f", stopped early after {self.history.epochs[-1]['epoch']} epochs" if selection.stopped else ""
            self.log(
                f"selected epoch {selection.best_epoch} (validation_elbo={selection.best_elbo:.3f} on "
                f"{self.validation_x.shape[0]} held-out training rows{early})"
            )
        self._notify("selected", len(self.history.epochs) + 1, 0, None, GeneratorStates.capture())

    def _stop(self, check: bool) -> bool:
        """Whether a stop signal came: in one process at once; over several ranks, agreed by a
        collective at the step guard's check points (``check``), so that every rank stops after the same step."""
        if not self.world.launched or not check:
            return not self.world.launched and bool(self.caught)
        number = self.world.largest(int(signal.Signals[self.caught["signal"]]) if self.caught else 0)
        if number:  # (the name of the signal another rank caught)
            self.caught.setdefault("signal", signal.Signals(number).name)
        return bool(number)

    def _batches(self, resuming: bool) -> Iterator[tuple[Any, ...]]:
        """This epoch's minibatches (each the arguments of one step; over several ranks, this rank's
        part of the global batch): its binarization and order are drawn from ``epoch_rng``."""
        state = self.resume
        if resuming:
            self.epoch_rng = state.epoch_rng
            self.epoch_rng.restore()  # redraw this epoch's binarization and order...
        else:
            self.epoch_rng = GeneratorStates.capture()
        batches = self.source.epoch(self.batch, self.world.shard)  # (draws the epoch's order and noise now)
        if resuming and self.batch > 0:
            state.rng.restore()  # ...then continue the random stream where it stopped
        elif not resuming:
            self.epoch_loss = 0.0
        return batches

    def _train_epoch(self, resuming: bool) -> float:
        """One epoch of steps; returns its training seconds."""
        self.vae.train()
        batches = self._batches(resuming)
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(
                batches, total=self.steps_per_epoch, initial=self.batch,
                desc=f"epoch {self.epoch}/{self.options.epochs}", leave=False, unit="step",
            )  # fmt: skip
        check_every = self.guarded.check_every
        options, total = self.options, self.steps_per_epoch * self.options.epochs
        start = time.perf_counter()
        for batch in batches:
            if self.set_step is not None:
                self.set_step(self.step)
            if options.lr_schedule != "constant":
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(options.lr_schedule, options.lr, self.step, total)
            self._pending.append(self.guarded(*batch))
            self.first_step = time.perf_counter() - start if self.first_step is None else self.first_step
            self.terms.add()
            self.step += 1
            self.batch += 1
            at_check = self.step % check_every == 0
            if at_check:
                self._check()
            if self._stop(at_check):
                self._check()
                self._notify("interrupt", self.epoch, self.batch, None, self.epoch_rng)
                raise FitInterrupted(self.caught["signal"], self.epoch, self.step)
            every = self.checkpoint_every
            if every is not None and self.step % every == 0 and self.batch < self.steps_per_epoch:
                self._check()
                self._notify("checkpoint", self.epoch, self.batch, None, self.epoch_rng)
        self._check()
        return time.perf_counter() - start

    def _check(self) -> None:
        """Read the step guard (one synchronisation); move the pending losses into the history, or
        raise :class:`NonFiniteLossError` for the first non-finite step."""
        failed = self.guarded.failed()
        first = self.step - len(self._pending) + 1  # the number of the first pending step
        pending = self._pending  # (one loss, as on a CPU at every step: read alone, without a stack)
        losses = [pending[0].item()] if len(pending) == 1 else torch.stack(pending).tolist() if pending else []
        self._pending.clear()
        if failed is not None:
            losses = losses[: max(0, failed[0] - first)]
        for loss in losses:
            self.history.step_elbos.append(-loss / self.num_data)
            self.epoch_loss += loss
        for callback in self.callbacks:  # (one with an on_steps method sees the steps' estimates as they come)
            getattr(callback, "on_steps", lambda history: None)(self.history)
        if failed is not None:
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"{failed[1]} at epoch {self.epoch}, step {failed[0]}; the parameters were not updated with it "
                "(try a smaller --lr; --detect-anomaly finds the operation)"
            )

    # -- after an epoch -------------------------------------------------------------------------
    def _record(self, seconds: float, start_batch: int) -> dict[str, Any]:
        """The epoch's record (with its test ELBO), appended to the history and logged."""
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "train_elbo": -self.epoch_loss / self.num_data / self.steps_per_epoch,
            "kl_mode": self.history.kl_mode,
        }
        start = time.perf_counter()
        has_test = self.data.test.shape[0] > 0
        # over several ranks, each estimate splits its rows over them and draws the noise of all: the
        # number one process would record
        particles = self.options.eval_particles
        self.vae.eval()  # (until the next epoch starts)
        if self.train_elbo_rows is not None:  # the objective is not the ELBO: record both
            record["objective"] = describe_objective(self.estimator)
            record["train_objective"] = record["train_elbo"]
            record.update(held_out_fields("train", self.world, self.vae, self.train_elbo_rows, particles))
            record["train_elbo_rows"] = self.train_elbo_rows.shape[0]
        record.update(self.terms.fields(self.world, record["train_elbo"], self.steps_per_epoch))  # (the ELBO's)
        if has_test:
            record.update(held_out_fields("test", self.world, self.vae, self.data.test, particles))
        if self.selection is not None:
            record.update(held_out_fields("validation", self.world, self.vae, self.validation_x, particles))
            self.selection.update(self.epoch, record["validation_elbo"], self.vae)
        record["seconds"] = seconds
        record["eval_seconds"] = time.perf_counter() - start
        done = (self.steps_per_epoch - start_batch) / self.steps_per_epoch
        record["images_per_second"] = self.images_per_epoch * done / seconds
        record.update(step_fields(self.estimator, self.optimizer, self.guarded, self.step))
        self.history.epochs.append(record)
        if self.log is not None:
            self.log(epoch_line(self.epoch, self.options.epochs, record, self._pace(record)))
        return record

    def _pace(self, record: dict[str, Any]) -> str:
        """After the first epoch this call trains (and with more to come): how long the rest takes at its pace."""
        if len(self.history.epochs) != self._first_record + 1:
            return ""
        return pace_said(self.options.epochs - self.epoch, record["seconds"], record["eval_seconds"],
                         self.steps_per_epoch, self.first_step or 0.0)  # fmt: skip

    def _notify(
        self, event: str, epoch: int, batch: int, record: dict[str, Any] | None, epoch_rng: GeneratorStates
    ) -> None:
        state = FitState(
            self.vae, self.optimizer, self.history, record, event, epoch, batch, self.step, self.epoch_loss, epoch_rng,
            self.selection, self.guarded.grad_norms(), self.terms.carried(self.world),
        )  # fmt: skip
        for callback in self.callbacks:
            callback(state)
