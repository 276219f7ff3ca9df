"""Reading a run back: its model and data set (:func:`load_run`, :func:`load_model`), from a run
directory or a folder of ``pyrovae export``, and the checks of a file a command is asked to write
(:func:`writable_file`)."""

from __future__ import annotations

from pathlib import Path

from ..config import FitConfig, resolve_device
from ..data import Dataset
from ..errors import ConfigError, RunDirectoryError, RunFileError
from ..models.base import LatentVariableModel
from ..plan import load_run_data
from ..pretrained import is_pretrained, load_pretrained
from ..train.checkpoint import load_vae
from .export import pretrained_run_config
from .run_directory import RunDirectory

__all__ = ["load_run", "load_model", "writable_file"]


def load_model(
    run_dir: str | Path,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> LatentVariableModel:
    """The model of a run directory (:func:`pyrovae.load_vae`) or of an exported folder
    (:func:`pyrovae.load_pretrained`), on the CPU; the arguments as in :func:`pyrovae.load_vae`."""
    load = load_pretrained if is_pretrained(run_dir) else load_vae
    return load(run_dir, "cpu", prior=prior, trust_prior=trust_prior, model=model, trust_model=trust_model)


def load_run(
    run_dir: str | Path,
    dataset: str | None = None,
    device: str = "cpu",
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> tuple[LatentVariableModel, Dataset, dict]:
    """The trained model, its data set (with the run's binarization) and its configuration.

    The test set is binarized with a fixed seed (see :func:`pyrovae.data.load_dataset`), so it is
    the same test set the run reported its ELBO on. ``dataset`` overrides the run's data set
    (it must have the same dimension). ``run_dir`` may be a folder of ``pyrovae export``, which
    keeps the run's settings. ``prior``, ``trust_prior``, ``model``, ``trust_model``: as in
    :func:`pyrovae.load_vae`.
    """
    if is_pretrained(run_dir):
        config = pretrained_run_config(run_dir, dataset)
    else:
        config = RunDirectory(run_dir).read_config()
    fit_config = FitConfig.from_dict(config)
    if dataset is not None:
        fit_config.dataset = dataset
    vae = load_model(run_dir, prior, trust_prior, model, trust_model).to(resolve_device(device))
    data = load_run_data(fit_config, vae.likelihood.name)  # the same data, binarization and checks as the run's
    if data.x_dim != vae.x_dim:
        raise RunFileError(
            f"data set {fit_config.dataset!r} has {data.x_dim} dimensions, the run's model expects {vae.x_dim}"
        )
    return vae, data, config


def writable_file(path: Path, option: str, suffix: str | None = None) -> Path:
    """Check, before any work, that ``path`` can be made: its folder exists and it is not a folder."""
    if suffix is not None and path.suffix.lower() != suffix:
        raise ConfigError(f"{option} {path} should end in {suffix}")
    if path.is_dir():
        raise RunDirectoryError(f"{option} {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise RunDirectoryError(f"{option} {path}: the folder {path.parent} does not exist: create it first")
    return path
