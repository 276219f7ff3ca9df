"""A run directory: train from a :class:`~pyrovae.config.FitConfig` and write what the run made;
read it back to evaluate, sample and plot.

``train_run(config)`` is what ``pyrovae fit`` does. It checks the whole configuration, loads the
data and validates them against the likelihood *before* creating the output directory, so a bad
option or bad data leaves nothing behind, then writes::

    config.json          the configuration, plus the resolved device, dtype, binarization, versions
    metrics.jsonl        one JSON object per epoch (see pyrovae.train.History)
    checkpoint.pt        model + optimizer state, config and history (atomic, every epoch)
    samples.png          decoded prior samples
    reconstructions.png  test images and their reconstructions

and, later, ``evaluate_run`` (``pyrovae evaluate``) adds ``evaluation.json``, ``sample_run``
(``pyrovae sample``) ``prior_samples.png``, ``plot_run`` (``pyrovae plots``) ``latent.png`` and
``training_curves.png`` (and redraws ``reconstructions.png``).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from .config import DTYPES, FitConfig, resolve_device
from .data import Dataset, load_dataset, validate_data
from .errors import ConfigError, RunDirectoryError, positive_int
from .evaluation import Evaluation, evaluate
from .evaluation.arviz_compat import arviz_versions
from .infer.elbo import kl_modes
from .models.prior_spec import prior_for_training
from .models.vae import VAE
from .train import FitState, History, TrainState, fit
from .train.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_vae, save_checkpoint, vae_from_checkpoint

__all__ = [
    "train_run",
    "resume_run",
    "RunResult",
    "RUN_FILES",
    "read_run_config",
    "read_metrics",
    "load_run",
    "evaluate_run",
    "sample_run",
    "plot_run",
]

RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT_NAME, "samples.png", "reconstructions.png")


@dataclass
class RunResult:
    vae: VAE
    history: History
    out: Path


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} exists and is not a directory")
    clashes = [name for name in RUN_FILES if (out / name).exists()]
    if clashes:
        raise RunDirectoryError(f"--out {out} already holds a run ({', '.join(clashes)}): choose another directory")


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
    config: FitConfig, log: Callable[[str], None] | None = print, progress: bool = True, **fit_options: Any
) -> RunResult:
    """Train the VAE that ``config`` describes and write the run directory ``config.out``.

    Options and data are checked before the directory is created, so a bad option or bad data
    leaves nothing behind. ``fit_options`` (``checkpoint_every``, ``handle_signals``,
    ``detect_anomaly``) go to :func:`pyrovae.fit`.
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
        prior=prior_for_training(config.prior, config.z_dim, config.prior_options),
        prior_options=config.prior_options,
        prior_components=config.prior_components,
        sigma=config.sigma,
        learn_sigma=config.learn_sigma,
        activation=config.activation,
        image_shape=data.image_shape,
    ).to(device=device, dtype=dtype)
    if hasattr(vae.prior, "initialize_from_data"):  # e.g. the VampPrior starts at training images
        vae.prior.initialize_from_data(data.train.to(device=device, dtype=dtype))
    try:
        out.mkdir(parents=True, exist_ok=True)
        config.save(
            out / "config.json",
            resolved={
                "device": str(device),
                "binarization": config.binarization,
                "kl_mode": kl_modes(vae, config.elbo),
                "engine": config.train_options().make_engine(data.train.shape[0]).name,
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
        raise RunDirectoryError(f"cannot write the run directory --out {out}: {error.strerror or error}") from None
    return _train(config, vae, data, out, log, progress, **fit_options)


def resume_run(
    run_dir: str | Path,
    epochs: int | None = None,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    prior: str | None = None,
    trust_prior: bool = False,
    **fit_options: Any,
) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint, exactly where it stopped.

    Model, optimizer, loop position and RNG state are restored, so on the same device the run
    ends with the same parameters and metrics (all but the timing fields) as one that never
    stopped. ``epochs`` may raise the run's number of epochs. A run with a prior class of yours
    needs ``prior`` (its class path, named again) or ``trust_prior`` (see :func:`pyrovae.load_vae`).
    """
    out = Path(run_dir)
    if not (out / CHECKPOINT_NAME).is_file() or not (out / "config.json").is_file():
        raise RunDirectoryError(
            f"--resume {out} is not a pyrovae run directory: expected config.json and {CHECKPOINT_NAME}"
        )
    payload = load_checkpoint(out / CHECKPOINT_NAME)
    if "resume" not in payload:
        raise RunDirectoryError(f"{out / CHECKPOINT_NAME} holds no training state to resume from")
    state = TrainState.from_dict(payload["resume"], f"the resume state of {out / CHECKPOINT_NAME}")
    config = FitConfig.from_dict(payload["config"])
    if epochs is not None:
        if epochs < state.epoch - 1:
            raise ConfigError(f"--epochs {epochs} is below the {state.epoch - 1} epochs already done")
        config.epochs = epochs
    device = resolve_device(config.device)
    data = _load_data(config)
    vae = vae_from_checkpoint(payload, prior=prior, trust_prior=trust_prior, source=str(out)).to(device)
    _write_atomically(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.epochs))
    return _train(config, vae, data, out, log, progress, resume=state, **fit_options)


def _train(
    config: FitConfig,
    vae: VAE,
    data: Dataset,
    out: Path,
    log: Callable[[str], None] | None,
    progress: bool,
    **fit_options: Any,
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
        engine=config.engine,
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
        **fit_options,
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


# -- reading a run directory back ---------------------------------------------------------------
def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory, as written by :func:`train_run`."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunDirectoryError(f"no config.json in {run_dir}: expected a run directory written by `pyrovae fit`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunDirectoryError(f"{path} is not valid JSON: {error}") from None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl`` (one JSON object per line)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunDirectoryError(f"no metrics.jsonl in {run_dir}: expected a run directory written by `pyrovae fit`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_run(
    run_dir: str | Path,
    dataset: str | None = None,
    device: str = "cpu",
    prior: str | None = None,
    trust_prior: bool = False,
) -> tuple[VAE, Dataset, dict]:
    """The trained model, its data set (with the run's binarization) and its configuration.

    The test set is binarized with a fixed seed (see :func:`pyrovae.data.load_dataset`), so it is
    the same test set the run reported its ELBO on. ``dataset`` overrides the run's data set
    (it must have the same dimension). ``prior``, ``trust_prior``: as in :func:`pyrovae.load_vae`.
    """
    config = read_run_config(run_dir)
    fit_config = FitConfig.from_dict(config)
    if dataset is not None:
        fit_config.dataset = dataset
    vae = load_vae(run_dir, map_location="cpu", prior=prior, trust_prior=trust_prior).to(resolve_device(device))
    data = _load_data(fit_config)  # the same data, binarization and checks as the run's
    if data.x_dim != vae.x_dim:
        raise RunDirectoryError(
            f"data set {fit_config.dataset!r} has {data.x_dim} dimensions, the run's model expects {vae.x_dim}"
        )
    return vae, data, config


def evaluate_run(
    run_dir: str | Path,
    dataset: str | None = None,
    k: int = 5000,
    n: int | None = None,
    batch_size: int = 100,
    chunk_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
    inference_data: str | Path | None = None,
    inference_points: int = 10,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    prior: str | None = None,
    trust_prior: bool = False,
) -> Evaluation:
    """What ``pyrovae evaluate`` does: evaluate a run on its test set and write ``evaluation.json``.

    :param n: evaluate the first ``n`` test points only (default: all).
    :param inference_data: also save an ArviZ ``InferenceData`` (netCDF) with the draws and log
        weights of the first ``inference_points`` test points.
    ``prior``, ``trust_prior``: as in :func:`pyrovae.load_vae`. Other arguments as in :func:`pyrovae.evaluate`.
    """
    if n is not None:
        positive_int("n", n)
    vae, data, config = load_run(run_dir, dataset, device, prior=prior, trust_prior=trust_prior)
    x = data.test if n is None else data.test[:n]
    keep = min(inference_points, x.shape[0]) if inference_data is not None else 0
    if log is not None:
        log(
            f"pyrovae evaluate: run={run_dir} dataset={data.name} binarization={config['resolved']['binarization']} "
            f"test points={x.shape[0]} of {data.test.shape[0]} k={k} device={vae.device} "
            f"dtype={str(vae.dtype).replace('torch.', '')} seed={seed}"
        )
    result = evaluate(
        vae, x, k=k, batch_size=batch_size, chunk_size=chunk_size, seed=seed, keep_draws=keep, progress=progress
    )
    record = {
        "run_dir": str(run_dir),
        "dataset": data.name,
        "binarization": config["resolved"]["binarization"],
        "split": "test",
        "test_size": data.test.shape[0],
        **result.to_dict(),
        "versions": {
            "pyrovae": _version(),
            "pyro": pyro.__version__,
            "torch": torch.__version__,
            **arviz_versions(),  # the line (0.x or >= 1) that wrote --inference-data
        },
    }
    out = Path(run_dir) / "evaluation.json"
    out.write_text(_json_with_flat_lists(record))
    written = [out]
    if inference_data is not None:
        result.to_inference_data().to_netcdf(str(inference_data))
        written.append(Path(inference_data))
    if log is not None:
        log(result.report())
        log(f"wrote {', '.join(str(p) for p in written)} ({result.seconds:.1f} s)")
    return result


def _json_with_flat_lists(record: dict[str, Any]) -> str:
    """JSON with one key per line and each list on one line (per-point columns stay readable)."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict):
            inner = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def sample_run(
    run_dir: str | Path,
    n: int = 64,
    out: str | Path | None = None,
    seed: int = 0,
    prior: str | None = None,
    trust_prior: bool = False,
) -> Path:
    """What ``pyrovae sample`` does: decode ``n`` prior draws of a run's model into a PNG grid.

    Seeds torch's global RNG with ``seed``; ``out`` defaults to ``RUN_DIR/prior_samples.png``.
    ``prior``, ``trust_prior``: as in :func:`pyrovae.load_vae`.
    """
    from .plots import save_samples

    positive_int("n", n)
    vae = load_vae(run_dir, prior=prior, trust_prior=trust_prior)
    pyro.set_rng_seed(seed)
    return save_samples(vae, Path(run_dir) / "prior_samples.png" if out is None else out, n=n)


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    dataset: str | None = None,
    prior: str | None = None,
    trust_prior: bool = False,
) -> list[Path]:
    """What ``pyrovae plots`` does: reconstructions, a latent scatter and training curves, as PNG.

    Writes ``reconstructions.png`` (first 8 test images), ``latent.png`` (posterior means of the
    test set, coloured by label) and ``training_curves.png`` (from ``metrics.jsonl``) to ``out``
    (default: the run directory). ``prior``, ``trust_prior``: as in :func:`pyrovae.load_vae`.
    """
    from .plots import save_latent_scatter, save_reconstructions, save_training_curves

    out = Path(run_dir) if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} exists and is not a directory")
    records = read_metrics(run_dir)
    vae, data, _ = load_run(run_dir, dataset, device="cpu", prior=prior, trust_prior=trust_prior)
    out.mkdir(parents=True, exist_ok=True)
    test = data.test.to(dtype=vae.dtype)
    return [
        save_reconstructions(vae, test, out / "reconstructions.png"),
        save_latent_scatter(vae, test, out / "latent.png", labels=data.test_labels),
        save_training_curves(records, out / "training_curves.png"),
    ]
