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
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .config import DTYPES, FitConfig, resolve_device
from .data import load_dataset, validate_data
from .elbo import kl_modes
from .model import VAE
from .priors import VampPrior
from .train import FitState, History, fit

__all__ = ["train_run", "RunResult", "RUN_FILES"]

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


def train_run(config: FitConfig, log: Callable[[str], None] | None = print, progress: bool = True) -> RunResult:
    """Train the VAE that ``config`` describes and write the run directory ``config.out``."""
    device = resolve_device(config.device)
    dtype = DTYPES[config.dtype]
    out = Path(config.out)
    _prepare_out(out)
    data = load_dataset(
        config.dataset, config.binarization, data_dir=config.data_dir, test_fraction=config.test_fraction
    )
    # every check of the data against the likelihood, before anything is written
    for split, x in (("train", data.train), ("test", data.test)):
        grey = data.dynamic_binarization and split == "train"
        validate_data(x, data.x_dim, config.likelihood, f"the {split} set of {data.name}", grey_levels=grey)
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
    metrics = out / "metrics.jsonl"
    metrics.write_text("")

    def write_epoch(state: FitState) -> None:
        with metrics.open("a") as f:
            f.write(json.dumps(state.record) + "\n")
        save_checkpoint(
            out / CHECKPOINT_NAME, state.vae, state.optimizer.state_dict(), config.to_dict(), state.history.epochs
        )

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
        callbacks=[write_epoch],
        log=log,
        progress=progress,
    )
    from .plots import save_reconstructions, save_samples

    save_samples(vae, out / "samples.png")
    save_reconstructions(vae, data.test.to(device=device, dtype=dtype), out / "reconstructions.png")
    if log is not None:
        log(f"wrote {', '.join(RUN_FILES)} to {out}")
    return RunResult(vae, history, out)


def _version() -> str:
    from . import __version__

    return __version__
