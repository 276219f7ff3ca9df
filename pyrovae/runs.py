"""A run directory: train from a :class:`~pyrovae.config.FitConfig` and write what the run made.

``train_run(config)`` is what ``pyrovae fit`` does. It checks the whole configuration, loads the
data and validates them against the likelihood *before* creating the output directory, so a bad
option or bad data leaves nothing behind, then writes::

    config.json          the configuration, plus the resolved device, dtype, binarization, versions
    metrics.jsonl        one JSON object per epoch (see pyrovae.train.History)
    checkpoint.pt        model + optimizer state, config and history (atomic, every epoch)
    samples.png          decoded prior samples
    reconstructions.png  test images and their reconstructions
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, vae_from_checkpoint
from .config import DTYPES, FitConfig, resolve_device
from .data import Dataset, load_dataset, validate_data
from .elbo import kl_modes
from .model import VAE
from .priors import VampPrior
from .train import FitState, History, fit

__all__ = ["train_run", "resume_run", "RunResult", "RUN_FILES"]

RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT_NAME, "samples.png", "reconstructions.png")


@dataclass
class RunResult:
    vae: VAE
    history: History
    out: Path


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    clashes = [name for name in RUN_FILES if (out / name).exists()]
    if clashes:
        raise ValueError(f"--out {out} already holds a run ({', '.join(clashes)}): choose another directory")


def _load_data(config: FitConfig) -> Dataset:
    data = load_dataset(
        config.dataset, config.binarization, data_dir=config.data_dir, test_fraction=config.test_fraction
    )
    # every check of the data against the likelihood, before anything is written
    for split, x in (("train", data.train), ("test", data.test)):
        grey = data.dynamic_binarization and split == "train"
        validate_data(x, data.x_dim, config.likelihood, f"the {split} set of {data.name}", grey_levels=grey)
    return data


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train_run(
    config: FitConfig,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    checkpoint_every: int | None = None,
    handle_signals: bool = False,
    detect_anomaly: bool = False,
) -> RunResult:
    """Train the VAE that ``config`` describes and write the run directory ``config.out``.

    Options and data are checked before the directory is created, so a bad option or bad data
    leaves nothing behind. ``checkpoint_every``, ``handle_signals`` and ``detect_anomaly`` are
    passed to :func:`pyrovae.fit`.
    """
    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    out = Path(config.out)
    _prepare_out(out)
    data = _load_data(config)
    pyro.set_rng_seed(config.seed)  # the network's initial weights depend on the seed too
    vae = VAE(
        data.x_dim,
        z_dim=config.z_dim,
        hidden_dims=config.hidden_dims,
        likelihood=config.likelihood,
        prior=config.prior,
        prior_components=config.prior_components,
        sigma=config.sigma,
        learn_sigma=config.learn_sigma,
        activation=config.activation,
        image_shape=data.image_shape,
    ).to(device=device, dtype=dtype)
    if isinstance(vae.prior, VampPrior):
        vae.prior.initialize_from(data.train.to(device=device, dtype=dtype))
    try:
        out.mkdir(parents=True, exist_ok=True)
        config.save(
            out / "config.json",
            resolved={
                "device": str(device),
                "binarization": config.binarization,
                "kl_mode": kl_modes(vae, config.elbo),
                "x_dim": data.x_dim,
                "image_shape": list(data.image_shape),
                "train_size": data.train.shape[0],
                "test_size": data.test.shape[0],
                "versions": {
                    "pyrovae": _version(),
                    "pyro": pyro.__version__,
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
            },
        )
        (out / "metrics.jsonl").write_text("")
    except OSError as error:
        raise ValueError(f"cannot write the run directory --out {out}: {error.strerror or error}") from None
    return _train(config, vae, data, out, None, log, progress, checkpoint_every, handle_signals, detect_anomaly)


def resume_run(
    run_dir: str | Path,
    epochs: int | None = None,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    checkpoint_every: int | None = None,
    handle_signals: bool = False,
    detect_anomaly: bool = False,
) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint, exactly where it stopped.

    Model, optimizer, loop position and RNG state are restored, so on the same device the run
    ends with the same parameters and metrics (all but the timing fields) as one that never
    stopped. ``epochs`` may raise the run's number of epochs.
    """
    out = Path(run_dir)
    if not (out / CHECKPOINT_NAME).is_file() or not (out / "config.json").is_file():
        raise ValueError(f"--resume {out} is not a pyrovae run directory: expected config.json and {CHECKPOINT_NAME}")
    payload = load_checkpoint(out / CHECKPOINT_NAME)
    if "resume" not in payload:
        raise ValueError(f"{out / CHECKPOINT_NAME} holds no training state to resume from")
    config = FitConfig.from_dict(payload["config"])
    if epochs is not None:
        if epochs < payload["resume"]["epoch"] - 1:
            raise ValueError(f"--epochs {epochs} is below the {payload['resume']['epoch'] - 1} epochs already done")
        config.epochs = epochs
    device = resolve_device(config.device)
    data = _load_data(config)
    vae = vae_from_checkpoint(payload).to(device)
    history = payload["resume"]["history"]["epochs"]
    _write_atomically(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    return _train(
        config, vae, data, out, payload["resume"], log, progress, checkpoint_every, handle_signals, detect_anomaly
    )


def _train(
    config: FitConfig,
    vae: VAE,
    data: Dataset,
    out: Path,
    resume: dict | None,
    log: Callable[[str], None] | None,
    progress: bool,
    checkpoint_every: int | None,
    handle_signals: bool,
    detect_anomaly: bool,
) -> RunResult:
    metrics = out / "metrics.jsonl"

    def write(state: FitState) -> None:
        if state.event == "epoch":
            with metrics.open("a") as f:
                f.write(json.dumps(state.record) + "\n")
        save_checkpoint(
            out / CHECKPOINT_NAME, state.vae, config=config.to_dict(), history=state.history.epochs,
            resume=state.resume_state(),
        )  # fmt: skip
        if state.event == "interrupt" and log is not None:
            log(f"checkpoint written to {out / CHECKPOINT_NAME} (epoch {state.epoch}, step {state.step})")

    history = fit(
        vae,
        data,
        elbo=config.elbo,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        num_particles=config.particles,
        seed=config.seed,
        validate=config.validate,
        eval_particles=config.eval_particles,
        callbacks=[write],
        log=log,
        progress=progress,
        checkpoint_every=checkpoint_every,
        resume=resume,
        handle_signals=handle_signals,
        detect_anomaly=detect_anomaly,
    )
    from .plots import save_reconstructions, save_samples

    save_samples(vae, out / "samples.png")
    save_reconstructions(vae, data.test.to(device=vae.device, dtype=vae.dtype), out / "reconstructions.png")
    if log is not None:
        log(f"wrote {', '.join(RUN_FILES)} to {out}")
    return RunResult(vae, history, out)


def _version() -> str:
    from . import __version__

    return __version__
