"""The training loop: stochastic variational inference with a Pyro ELBO.

:func:`fit` is the one loop that the CLI, the examples and the benchmarks call. It trains
``vae.model`` / ``vae.guide`` by SVI on minibatches sliced from device-resident tensors,
evaluates the test ELBO after each epoch, and returns a :class:`History`. Observers (progress
bar, metrics files, checkpoints) are callbacks.

One SVI step is the Pyro ELBO's ``loss_and_grads(model, guide, batch)`` followed by one
:class:`torch.optim.Adam` step over all of the VAE's parameters. That is the update
``pyro.infer.SVI(model, guide, pyro.optim.Adam(...), elbo).step(batch)`` makes (Adam is
elementwise; ``pyro.optim.Adam`` merely keeps one torch Adam per parameter tensor), with one
optimizer call per step instead of one per tensor; ``tests/test_train.py`` checks that both give
the same parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer import ELBO

from .data import Dataset, minibatches, validate_data
from .elbo import ELBOS, estimate_elbo, kl_modes, make_elbo
from .model import VAE

__all__ = ["fit", "History", "FitState", "NonFiniteLossError"]


class NonFiniteLossError(FloatingPointError):
    """The ELBO became NaN or infinite during training."""


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
    """Handed to callbacks after every epoch."""

    vae: VAE
    optimizer: torch.optim.Optimizer
    history: History
    record: dict[str, Any]


Callback = Callable[[FitState], None]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


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
) -> History:
    r"""Train ``vae`` by SVI and return the :class:`History`.

    The loss of a minibatch of :math:`B` rows out of :math:`N` is Pyro's ELBO estimate scaled by
    :math:`N/B` (``num_data=N``), i.e. an unbiased estimate of :math:`-\sum_{n=1}^N \mathcal L(x_n)`
    (seed eq. 12 times :math:`N`); histories report :math:`\mathcal L` per data point.

    :param vae: the :class:`~pyrovae.VAE` to train (in place).
    :param data: a :class:`~pyrovae.data.Dataset` (train and test) or a ``(N, D)`` train tensor.
    :param elbo: ``meanfield`` (analytic KL), ``trace`` (Monte Carlo KL), ``jit-meanfield`` or
        ``jit-trace``; or a Pyro :class:`~pyro.infer.ELBO` instance (then ``num_particles`` is the
        instance's own). JIT ELBOs compile once per call of ``fit`` and need fixed shapes, so
        they drop the last incomplete batch.
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
    """
    if isinstance(elbo, ELBO):
        svi_elbo, elbo = elbo, _elbo_name(elbo)
    elif elbo in ELBOS:
        svi_elbo = make_elbo(elbo, num_particles)
    else:
        raise ValueError(f"elbo must be one of {sorted(ELBOS)} or a pyro.infer.ELBO, got {elbo!r}")
    num_particles = svi_elbo.num_particles
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _positive_int("eval_particles", eval_particles)
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
    drop_last = elbo.startswith("jit-") or "Jit" in type(svi_elbo).__name__
    if drop_last and num_data < batch_size:
        raise ValueError(f"{elbo} needs batch_size <= the number of training rows {num_data}, got {batch_size}")
    steps_per_epoch = num_data // batch_size if drop_last else math.ceil(num_data / batch_size)
    images_per_epoch = steps_per_epoch * batch_size if drop_last else num_data

    # (building the first torch optimizer of a process imports torch's compiler stack, ~2 s: this
    # happens here, before the clock runs, not inside the first timed epoch)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    history = History(kl_mode=kl_modes(vae, svi_elbo))
    kl_text = ", ".join(f"{site}:{mode}" for site, mode in history.kl_mode.items())
    if log is not None:
        log(
            f"pyrovae fit: device={vae.device} dtype={str(vae.dtype).replace('torch.', '')} seed={seed} "
            f"elbo={elbo} ({type(svi_elbo).__name__}, particles={num_particles}) kl={kl_text} "
            f"prior={type(vae.prior).__name__} likelihood={likelihood} "
            f"x_dim={vae.x_dim} z_dim={vae.z_dim} train={num_data} test={data.test.shape[0]} "
            f"batch_size={batch_size} steps/epoch={steps_per_epoch}"
        )
    step = 0
    with pyro.get_param_store().scope(), pyro.validation_enabled(validate):
        vae.register_params()  # the scoped store holds every parameter before the first step
        # bound once: JIT ELBOs key their compiled code on id(model), id(guide)
        model, guide = vae.model, vae.guide
        for epoch in range(1, epochs + 1):
            vae.train()
            train_x = torch.bernoulli(data.train) if data.dynamic_binarization else data.train
            batches = minibatches(train_x, batch_size, shuffle=True, drop_last=drop_last)
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", leave=False, unit="step")
            start = time.perf_counter()
            total = 0.0
            for batch in batches:
                loss = svi_elbo.loss_and_grads(model, guide, batch, num_data=num_data)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if not math.isfinite(loss):
                    raise NonFiniteLossError(
                        f"the loss became {loss} at epoch {epoch}, step {step}: try a smaller --lr"
                    )
                history.step_elbos.append(-loss / num_data)
                total += loss
            seconds = time.perf_counter() - start
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "train_elbo": -total / num_data / steps_per_epoch,
                "kl_mode": history.kl_mode,
            }
            start = time.perf_counter()
            if has_test:
                vae.eval()
                record["test_elbo"] = estimate_elbo(vae, data.test, num_particles=eval_particles)
            record["seconds"] = seconds
            record["eval_seconds"] = time.perf_counter() - start
            record["images_per_second"] = images_per_epoch / seconds
            history.epochs.append(record)
            if log is not None:
                test = f" test_elbo={record['test_elbo']:.3f}" if has_test else ""
                log(
                    f"epoch {epoch:>3}/{epochs} train_elbo={record['train_elbo']:.3f}{test} "
                    f"seconds={seconds:.2f} images/s={record['images_per_second']:.0f}"
                )
            for callback in callbacks:
                callback(FitState(vae, optimizer, history, record))
    return history
