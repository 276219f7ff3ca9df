"""A run's plan: everything a :class:`~pyrovae.config.FitConfig` decides, resolved once.

:func:`plan_run` turns a configuration into a :class:`RunPlan`: the data loaded and checked against
the likelihood, the device, the engine (``auto`` decided by the run's length), the settings checked
against that engine and against the memory the device has free, and the model built from the
seed. Training, the run directory and ``config.json`` all read the plan, so nothing is decided
twice: the loop is handed the plan's engine and checked data (:meth:`RunPlan.fit_arguments`), and
``config.json`` records the plan's facts (:meth:`RunPlan.facts`). All of it happens before a run
directory is created, so a bad option or bad data leave nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch

from .config import DTYPES, FitConfig, resolve_device
from .data import Dataset, check_dataset, load_dataset
from .infer.elbo import kl_modes
from .memory import allocation_failures, check_fits, fit_memory, meta_module
from .models.base import LatentVariableModel
from .models.hierarchical import make_vae
from .models.model_spec import build_model as build_user_model
from .models.prior_spec import prior_for_training
from .signals import raise_if_stopped
from .train import FitOptions
from .train.distributed import Processes, SingleProcess, together
from .train.engines import Engine, StepPlan

__all__ = ["RunPlan", "plan_run", "load_run_data", "build_model", "SIZES", "fit_allocations", "versions"]

#: the options that set the model's size, as the memory errors name them
SIZES = "--z-dim, --hidden or --prior-components"


@dataclass
class RunPlan:
    """One run, resolved (:func:`plan_run`).

    :ivar config: the checked configuration.
    :ivar options: what :func:`pyrovae.fit` is given: the configuration's training options, with
        the engine decided here (so the loop does not decide it again) and how this call runs
        (checkpoints, signals, anomaly mode).
    :ivar data: the data set, checked against the likelihood (:func:`load_run_data`).
    :ivar model: the model, built from ``config.seed`` on :attr:`device` (or restored from a checkpoint).
    :ivar device: where the run trains.
    :ivar world: the processes that train it (one: :class:`~pyrovae.train.distributed.SingleProcess`).
    """

    config: FitConfig
    options: FitOptions
    data: Dataset
    model: LatentVariableModel
    device: torch.device
    world: Processes

    @property
    def engine(self) -> Engine:
        """How a step runs, ``auto`` decided (the engine in :attr:`options`)."""
        return self.options.make_engine(self.data.train.shape[0], device=self.device)

    def facts(self) -> dict[str, Any]:
        """What ``config.json`` records beside the options: the facts resolved at the start."""
        data = self.data
        return {
            "device": str(self.device),
            "binarization": self.config.binarization,
            "kl_mode": kl_modes(self.model, self.config.elbo),
            "engine": self.engine.name,
            "x_dim": data.x_dim,
            "image_shape": list(data.image_shape),
            "train_size": data.train.shape[0],
            "test_size": data.test.shape[0],
            **processes(self.world),
            "versions": versions(),
            **provenance(),
        }


def processes(world: Processes) -> dict[str, Any]:
    """What ``config.json`` records of the processes that trained (one: no backend)."""
    return {"world_size": world.size, "backend": world.backend}


def versions() -> dict[str, str]:
    """The versions of pyrovae, Pyro, torch and Python, as run files record them."""
    from . import __version__

    return {
        "pyrovae": __version__,
        "pyro": pyro.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def provenance() -> dict[str, Any]:
    """Where and when a run started: its command line, the time (UTC), the host, and the git commit
    of pyrovae's source where it is a git checkout (``None`` otherwise)."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                               text=True, timeout=5)  # fmt: skip
        commit = found.stdout.strip() if found.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {
        "command": list(sys.argv),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "git_commit": commit or None,
    }


def load_dataset_of(config: FitConfig) -> Dataset:
    """The data set of ``config``, with its binarization (checked by its loader, not yet against a likelihood)."""
    return load_dataset(
        config.dataset, config.binarization, data_dir=config.data_dir, test_fraction=config.test_fraction,
        data_loader=config.data_loader, workers=config.workers, **config.data_options(),
    )  # fmt: skip


def load_run_data(config: FitConfig, likelihood: str | None = None) -> Dataset:
    """The data set of ``config``, checked against ``likelihood`` (default: the configuration's)
    once: the loop trusts a data set that carries this check."""
    return check_dataset(load_dataset_of(config), likelihood or config.likelihood)


def build_model(config: FitConfig, data: Dataset) -> LatentVariableModel:
    """The model ``config`` describes, for ``data`` (its dimension and image shape): a class of the
    user's (``config.model``, :func:`pyrovae.models.model_spec.build_model`) or a built-in one."""
    if config.model is not None:
        return build_user_model(config.model, data.x_dim, config.model_options)
    return make_vae(
        data.x_dim,
        latents=config.latents,
        arch=config.arch,
        channels=config.channels,
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
    )


def fit_allocations() -> Any:
    """Out-of-memory errors while training as one line naming the options that size it."""
    return allocation_failures("while training", f"{SIZES}, --particles, --eval-particles or --batch-size")


def _check_memory(config: FitConfig, data: Dataset, device: torch.device) -> None:
    """Refuse settings whose parameters and activations need more memory than ``device`` has free,
    before anything is allocated (a lower bound: parameters held four times, as weights, gradients
    and Adam's two moments; one step's activations and their gradients; the test ELBO's pass)."""
    n_train, n_test = data.train.shape[0], data.test.shape[0]
    model = meta_module(lambda: build_model(config, data))
    if model is None:  # a prior that cannot be built without storage: count the networks alone
        model = meta_module(lambda: build_model(dataclasses.replace(config, prior="normal", prior_options={}), data))
    rows, test_rows = min(config.batch_size, n_train), min(1024, n_test)
    need = fit_memory(model, DTYPES[config.dtype].itemsize, rows, config.particles, test_rows, config.eval_particles)
    sizes = f"--z-dim {config.latents * config.z_dim}, --hidden {','.join(map(str, config.hidden_dims))}"
    if config.model is not None:
        sizes = f"the --model-option values of {config.model}"
    sizes += f", --prior-components {config.prior_components}" if need.prior_points else ""
    parts = [
        (f"{need.parameter_count:,} parameters of {sizes}, held 4 times", need.parameters),
        (f"a step of --particles {config.particles} x --batch-size {config.batch_size} through {sizes}",
         need.step),
        (f"the test ELBO with --eval-particles {config.eval_particles} through {sizes}", need.test),
    ]  # fmt: skip
    check_fits(parts, device, "lower the settings named")


def plan_run(
    config: FitConfig,
    world: Processes | None,
    what: str,
    check_out: Callable[[], None] | None = None,
    restore: Callable[[torch.device], LatentVariableModel] | None = None,
    **runtime: Any,
) -> RunPlan:
    """Resolve ``config`` into a :class:`RunPlan`, on every rank alike
    (:func:`~pyrovae.train.distributed.together`, which names ``what`` when a rank fails).

    :param check_out: checks the run directory first (rank 0 only).
    :param restore: builds the model from a checkpoint (on the device it is given) instead of from
        the seed, for a resumed run.
    :param runtime: how this call of :func:`pyrovae.fit` runs, :class:`~pyrovae.train.FitOptions`'
        ``checkpoint_every``, ``handle_signals``, ``detect_anomaly``.
    """
    if world is None:  # this process alone, on the configured device
        world = SingleProcess(resolve_device(config.device))
    device = world.device
    with together(world, what):
        if check_out is not None and world.is_main:
            check_out()
        # (a model class of the user's names its likelihood: its data are checked once it is built)
        data = load_run_data(config) if config.model is None else load_dataset_of(config)
        options = dataclasses.replace(config.fit_options(), **runtime)
        engine = options.make_engine(data.train.shape[0], device=device)
        options = dataclasses.replace(options, engine=engine)
        rows = data.train.shape[0]  # (less the validation rows the loop holds out; too many: the loop says so)
        rows -= options.validation if options.validation < rows else 0
        engine.check(StepPlan(device, world.size, options.batch_size, rows, options.validate, options.detect_anomaly))
        if restore is not None:  # (a checkpoint's model: its prior class is imported only as its trust rule says)
            with allocation_failures("while loading the model", SIZES):
                model = restore(device)
        else:
            _check_memory(config, data, device)
            options.seed_rng()  # once, for the run: the network's initial weights depend on the seed too
            with allocation_failures("while building the model", SIZES):
                model = build_model(config, data).to(device=device, dtype=DTYPES[config.dtype])
        data = check_dataset(data, model.likelihood.name)
    raise_if_stopped()  # (a stop signal a library swallowed while the data and model were made)
    return RunPlan(config, options, data, model, device, world)
