"""The training loop: stochastic variational inference with a Pyro ELBO.

:func:`fit` is the one loop that the CLI, the examples and the benchmarks call. It trains
``vae.model`` / ``vae.guide`` by SVI on minibatches sliced from device-resident tensors,
evaluates the test ELBO after each epoch, and returns a :class:`History`. Observers (progress
bar, metrics files, checkpoints) are callbacks.

One SVI step is the Pyro ELBO's ``loss_and_grads(model, guide, batch)`` followed by one
:class:`torch.optim.Adam` step over all of the VAE's parameters. That is the update
``pyro.infer.SVI(model, guide, pyro.optim.Adam(...), elbo).step(batch)`` makes (Adam is
elementwise; ``pyro.optim.Adam`` merely keeps one torch Adam per parameter tensor), with one
optimizer call per step instead of one per tensor, and torch's fused Adam kernel (one pass over
all tensors) where the installed torch has one for the device; ``tests/test_train.py`` checks
that both give the same parameters.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer import ELBO

from ..data import Dataset, minibatches, validate_data
from ..errors import positive_int
from ..infer.elbo import ELBOS, estimate_elbo, kl_modes, make_elbo
from ..infer.lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from ..models.vae import VAE

__all__ = ["fit", "make_adam", "History", "FitState", "NonFiniteLossError", "TrainingInterrupted"]


class NonFiniteLossError(FloatingPointError):
    """The ELBO or a gradient became NaN or infinite; the parameters were not updated with it."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a step boundary on SIGINT or SIGTERM, after the callbacks saw it."""

    def __init__(self, signal_name: str, epoch: int, step: int):
        super().__init__(f"{signal_name} at epoch {epoch}, step {step}")
        self.signal_name, self.epoch, self.step = signal_name, epoch, step


@dataclass
class History:
    """What :func:`fit` measured.

    :ivar epochs: one record per epoch: ``epoch``, ``step``, ``train_elbo`` (mean of the step
        estimates over the epoch, nats per data point), ``test_elbo`` (if a test set was given),
        ``seconds`` (training time of the epoch), ``eval_seconds``, ``images_per_second``.
    :ivar step_elbos: the per-data-point ELBO estimate of every SVI step.
    :ivar kl_mode: how the training ELBO computed each latent site's KL, ``{"z": "analytic"}`` or
        ``{"z": "monte-carlo"}`` (also in every epoch record).
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_elbos: list[float] = field(default_factory=list)
    kl_mode: dict[str, str] = field(default_factory=dict)

    @property
    def last(self) -> dict[str, Any]:
        if not self.epochs:
            raise ValueError("the history is empty: no epoch has finished")
        return self.epochs[-1]


@dataclass
class FitState:
    """Handed to callbacks: after every epoch (``event="epoch"``), every ``checkpoint_every``
    steps (``"checkpoint"``) and when a signal stops training (``"interrupt"``).

    :ivar record: the epoch's record (``"epoch"`` events), else ``None``.
    :ivar epoch: the epoch in progress, counting from 1 (the next one after an ``"epoch"`` event).
    :ivar batch: batches of that epoch already done.
    :ivar step: SVI steps done in all.
    """

    vae: VAE
    optimizer: torch.optim.Optimizer
    history: History
    record: dict[str, Any] | None
    event: str
    epoch: int
    batch: int
    step: int
    epoch_loss: float
    epoch_rng: dict[str, Any]

    def resume_state(self) -> dict[str, Any]:
        """Everything but the VAE's parameters that ``fit(..., resume=...)`` needs to continue
        exactly here: optimizer state, loop position, RNG states, history (tensors and plain types)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "epoch_loss": self.epoch_loss,
            "epoch_rng": self.epoch_rng,
            "rng": _rng_state(),
            "history": {"epochs": self.history.epochs, "step_elbos": self.history.step_elbos},
        }


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _grads_finite(parameters: list[torch.Tensor]) -> bool:
    """Whether every gradient is finite, from one sum per tensor (a NaN or inf entry makes its sum
    NaN or inf). 16x cheaper than ``isfinite(g).all()`` per tensor; the price is that finite
    gradients whose sum overflows (entries near 1e38 in float32) also count as non-finite."""
    sums = [p.grad.sum() for p in parameters if p.grad is not None]
    return bool(torch.stack(sums).sum().isfinite()) if sums else True


@contextmanager
def _stop_on_signals(enabled: bool) -> Iterator[dict[str, str]]:
    """Turn SIGINT/SIGTERM into a flag the loop reads at step boundaries (main thread only)."""
    caught: dict[str, str] = {}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, frame: Any) -> None:
        caught.setdefault("signal", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


Callback = Callable[[FitState], None]


@contextmanager
def _registered(vae: VAE, lean: bool) -> Iterator[None]:
    """Every parameter in Pyro's (scoped) store before the first step; with a lean ELBO, which
    takes gradients without ``param`` sites, model and guide also skip re-registering per call."""
    if lean:
        with vae.registered_once():
            yield
    else:
        vae.register_params()
        yield


def make_adam(parameters: Sequence[torch.Tensor] | Any, lr: float) -> torch.optim.Adam:
    """:class:`torch.optim.Adam` with ``fused=True`` (all tensors updated by one kernel: 4-5x
    faster than the default per-tensor loop on a CPU) where this torch supports it for the
    parameters' device, else the default implementation. Both compute the same update."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # torch < 2.4 on a CPU, or a device without it
        return torch.optim.Adam(parameters, lr=lr)


def _elbo_name(elbo: ELBO) -> str:
    """The pyrovae name of a Pyro ELBO instance (its class name when it is not one of ours)."""
    for name, cls in ELBOS.items():
        if type(elbo) is cls:
            return name
    return type(elbo).__name__


def fit(
    vae: VAE,
    data: Dataset | torch.Tensor,
    elbo: str | ELBO = "meanfield",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    num_particles: int = 1,
    seed: int | None = None,
    device: torch.device | str | None = None,
    validate: bool = False,
    eval_particles: int = 1,
    callbacks: Sequence[Callback] = (),
    log: Callable[[str], None] | None = None,
    progress: bool = False,
    checkpoint_every: int | None = None,
    resume: dict[str, Any] | None = None,
    handle_signals: bool = False,
    detect_anomaly: bool = False,
) -> History:
    r"""Train ``vae`` by SVI and return the :class:`History`.

    The loss of a minibatch of :math:`B` rows out of :math:`N` is Pyro's ELBO estimate scaled by
    :math:`N/B` (``num_data=N``), i.e. an unbiased estimate of :math:`-\sum_{n=1}^N \mathcal L(x_n)`
    (eq. 12 times :math:`N`); histories report :math:`\mathcal L` per data point.

    :param vae: the :class:`~pyrovae.VAE` to train (in place).
    :param data: a :class:`~pyrovae.data.Dataset` (train and test) or a ``(N, D)`` train tensor.
    :param elbo: ``meanfield`` (analytic KL), ``trace`` (Monte Carlo KL), ``compiled-meanfield`` or
        ``compiled-trace`` (the same, compiled once per batch shape: the first step of each shape
        takes seconds), ``jit-meanfield`` or ``jit-trace``; or a Pyro :class:`~pyro.infer.ELBO`
        instance (then ``num_particles`` is the instance's own). JIT ELBOs compile once per call
        of ``fit`` and need fixed shapes, so they drop the last incomplete batch.
    :param int num_particles: samples per data point per step (vectorised), for an ELBO given by name.
    :param seed: seeds Python, NumPy and torch (``pyro.set_rng_seed``) before anything random.
    :param device: move the model and data here first (default: the model's device).
    :param bool validate: run with Pyro's distribution validation (slower; the data are
        validated once up front either way).
    :param int eval_particles: samples per test point for the test ELBO, which always uses the
        analytic-KL estimator (same expectation as every training ELBO, lower variance).
    :param callbacks: called with a :class:`FitState` after every epoch.
    :param log: called with one line of text at the start and after every epoch.
    :param bool progress: show a tqdm progress bar per epoch (on stderr).
    :param checkpoint_every: also call the callbacks (``event="checkpoint"``) every this many steps.
    :param resume: a :meth:`FitState.resume_state` (with the VAE's parameters already restored):
        continue that run exactly, as if it had not stopped. ``seed`` is then ignored.
    :param bool handle_signals: on SIGINT/SIGTERM, finish the current step, call the callbacks
        (``event="interrupt"``) and raise :class:`TrainingInterrupted`.
    :param bool detect_anomaly: run under :func:`torch.autograd.set_detect_anomaly` (slow; for
        finding the operation that made a NaN).
    :raises NonFiniteLossError: when a loss or gradient is not finite, before the update.
    """
    if isinstance(elbo, ELBO):
        svi_elbo, elbo = elbo, _elbo_name(elbo)
    elif elbo in ELBOS:
        svi_elbo = make_elbo(elbo, num_particles)
    else:
        raise ValueError(f"elbo must be one of {sorted(ELBOS)} or a pyro.infer.ELBO, got {elbo!r}")
    num_particles = svi_elbo.num_particles
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    positive_int("eval_particles", eval_particles)
    if checkpoint_every is not None:
        positive_int("checkpoint_every", checkpoint_every)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    if device is not None:
        vae.to(device)
    if not isinstance(data, Dataset):
        if not torch.is_tensor(data):
            raise ValueError(f"data must be a pyrovae Dataset or a tensor, got {type(data).__name__}")
        data = Dataset("tensor", data, data[:0], (vae.x_dim,))
    data = data.to(vae.device, vae.dtype)
    likelihood = vae.likelihood.name
    validate_data(data.train, vae.x_dim, likelihood, "train data", grey_levels=data.dynamic_binarization)
    has_test = data.test.shape[0] > 0
    if has_test:
        validate_data(data.test, vae.x_dim, likelihood, "test data")
    num_data = data.train.shape[0]
    drop_last = "Jit" in type(svi_elbo).__name__  # every Pyro JIT ELBO, named or given as an instance
    if drop_last and num_data < batch_size:
        raise ValueError(f"{elbo} needs batch_size <= the number of training rows {num_data}, got {batch_size}")
    steps_per_epoch = num_data // batch_size if drop_last else math.ceil(num_data / batch_size)
    images_per_epoch = steps_per_epoch * batch_size if drop_last else num_data

    # (building the first torch optimizer of a process imports torch's compiler stack, ~2 s: this
    # happens here, before the clock runs, not inside the first timed epoch)
    optimizer = make_adam(vae.parameters(), lr=lr)
    parameters = list(vae.parameters())
    history = History(kl_mode=kl_modes(vae, svi_elbo))
    first_epoch, first_batch, step, epoch_loss = 1, 0, 0, 0.0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        history.epochs = list(resume["history"]["epochs"])
        history.step_elbos = list(resume["history"]["step_elbos"])
        first_epoch, first_batch, step, epoch_loss = (
            resume["epoch"],
            resume["batch"],
            resume["step"],
            resume["epoch_loss"],
        )
        if first_batch > steps_per_epoch:
            raise ValueError(f"cannot resume at batch {first_batch} of an epoch of {steps_per_epoch} batches")
    kl_text = ", ".join(f"{site}:{mode}" for site, mode in history.kl_mode.items())
    if log is not None:
        where = f" resuming at epoch {first_epoch}, step {step}" if resume is not None else ""
        log(
            f"pyrovae fit: device={vae.device} dtype={str(vae.dtype).replace('torch.', '')} seed={seed} "
            f"elbo={elbo} ({type(svi_elbo).__name__}, particles={num_particles}) kl={kl_text} "
            f"prior={type(vae.prior).__name__} likelihood={likelihood} "
            f"x_dim={vae.x_dim} z_dim={vae.z_dim} train={num_data} test={data.test.shape[0]} "
            f"batch_size={batch_size} steps/epoch={steps_per_epoch} "
            f"optimizer=adam{'(fused)' if optimizer.defaults.get('fused') else ''}{where}"
        )

    def notify(event: str, epoch: int, batch: int, record: dict[str, Any] | None, epoch_rng: dict[str, Any]) -> None:
        state = FitState(vae, optimizer, history, record, event, epoch, batch, step, epoch_loss, epoch_rng)
        for callback in callbacks:
            callback(state)

    with (
        pyro.get_param_store().scope(),
        pyro.validation_enabled(validate),
        torch.autograd.set_detect_anomaly(detect_anomaly),
        _stop_on_signals(handle_signals) as caught,
        # (under validation the lean ELBOs run Pyro's own code, which needs the param sites)
        _registered(vae, lean=isinstance(svi_elbo, (LeanTrace_ELBO, LeanTraceMeanField_ELBO)) and not validate),
    ):
        # bound once: JIT ELBOs key their compiled code on id(model), id(guide)
        model, guide = vae.model, vae.guide
        for epoch in range(first_epoch, epochs + 1):
            vae.train()
            if resume is not None and epoch == first_epoch:
                epoch_rng = resume["epoch_rng"]
                _set_rng_state(epoch_rng)  # redraw this epoch's binarization and order...
            else:
                epoch_rng = _rng_state()
            train_x = torch.bernoulli(data.train) if data.dynamic_binarization else data.train
            start_batch = first_batch if epoch == first_epoch else 0
            batches = minibatches(train_x, batch_size, shuffle=True, drop_last=drop_last, start=start_batch)
            if resume is not None and epoch == first_epoch and first_batch > 0:
                _set_rng_state(resume["rng"])  # ...then continue the random stream where it stopped
            elif resume is None or epoch > first_epoch:
                epoch_loss = 0.0
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(
                    batches, total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch}/{epochs}",
                    leave=False, unit="step",
                )  # fmt: skip
            start = time.perf_counter()
            for batch_index, batch in enumerate(batches, start=start_batch + 1):
                loss = svi_elbo.loss_and_grads(model, guide, batch, num_data=num_data)
                if not (math.isfinite(loss) and _grads_finite(parameters)):
                    optimizer.zero_grad(set_to_none=True)
                    what = f"the loss became {loss}" if not math.isfinite(loss) else "a gradient became NaN or inf"
                    raise NonFiniteLossError(
                        f"{what} at epoch {epoch}, step {step + 1}; the parameters were not updated with it "
                        "(try a smaller --lr; --detect-anomaly finds the operation)"
                    )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                history.step_elbos.append(-loss / num_data)
                epoch_loss += loss
                if caught:
                    notify("interrupt", epoch, batch_index, None, epoch_rng)
                    raise TrainingInterrupted(caught["signal"], epoch, step)
                if checkpoint_every is not None and step % checkpoint_every == 0 and batch_index < steps_per_epoch:
                    notify("checkpoint", epoch, batch_index, None, epoch_rng)
            seconds = time.perf_counter() - start
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "train_elbo": -epoch_loss / num_data / steps_per_epoch,
                "kl_mode": history.kl_mode,
            }
            start = time.perf_counter()
            if has_test:
                vae.eval()
                record["test_elbo"] = estimate_elbo(vae, data.test, num_particles=eval_particles)
            record["seconds"] = seconds
            record["eval_seconds"] = time.perf_counter() - start
            record["images_per_second"] = images_per_epoch * (steps_per_epoch - start_batch) / steps_per_epoch / seconds
            history.epochs.append(record)
            if log is not None:
                test = f" test_elbo={record['test_elbo']:.3f}" if has_test else ""
                log(
                    f"epoch {epoch:>3}/{epochs} train_elbo={record['train_elbo']:.3f}{test} "
                    f"seconds={seconds:.2f} images/s={record['images_per_second']:.0f}"
                )
            epoch_loss = 0.0
            notify("epoch", epoch + 1, 0, record, _rng_state())
            if caught:  # the signal came during evaluation or the epoch's callbacks
                notify("interrupt", epoch + 1, 0, None, _rng_state())
                raise TrainingInterrupted(caught["signal"], epoch, step)
    return history
