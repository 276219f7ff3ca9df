"""The typed configuration of a ``pyrovae fit`` run; saved as ``config.json`` next to its results."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data import BINARIZE, DATASETS, is_array_path
from .errors import positive_int
from .infer.elbo import ELBOS
from .models.likelihoods import LIKELIHOODS
from .models.priors import PRIORS
from .rundir import write_text

__all__ = ["FitConfig", "resolve_device", "DTYPES", "DEVICES"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA GPU: use --device cpu or auto")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {device!r}")


@dataclass
class FitConfig:
    """Everything a training run needs; every field has a default.

    ``binarize="auto"`` means ``dynamic`` for the Bernoulli likelihood and ``none`` otherwise.
    ``dataset`` is one of :data:`~pyrovae.data.DATASETS` or the path of an existing ``.npy`` /
    ``.npz`` file; ``data_dir`` is the folder of the ``mnist`` / ``fashion-mnist`` IDX files
    (default: see :func:`~pyrovae.data.load_idx_dataset`); ``test_fraction`` is the share held
    out for testing where the data give no split (``digits``, user files).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    test_fraction: float = 0.2
    binarize: str = "auto"
    likelihood: str = "bernoulli"
    sigma: float = 1.0
    learn_sigma: bool = False
    prior: str = "normal"
    prior_components: int = 10
    z_dim: int = 50
    hidden_dims: tuple[int, ...] = (400,)
    activation: str = "relu"
    elbo: str = "meanfield"
    particles: int = 1
    eval_particles: int = 1
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    device: str = "auto"
    dtype: str = "float32"
    seed: int = 0
    validate: bool = False
    out: str = "runs/latest"

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        self._check_data()
        choices = {
            "binarize": ("auto", *BINARIZE),
            "likelihood": LIKELIHOODS,
            "prior": PRIORS,
            "elbo": tuple(ELBOS),
            "dtype": tuple(DTYPES),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        for name in ("z_dim", "prior_components", "particles", "eval_particles", "epochs", "batch_size"):
            value = getattr(self, name)
            positive_int(name, value)
        if not self.hidden_dims or not all(isinstance(h, int) and h > 0 for h in self.hidden_dims):
            raise ValueError(f"hidden_dims must be one or more positive integers, got {self.hidden_dims!r}")
        for name in ("lr", "sigma"):  # (inf passes "> 0" and 1e400 parses as inf)
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise ValueError(f"{name} (--{name}) must be a finite number > 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed (--seed) must be an int from 0 to 2**32 - 1, got {self.seed!r}")
        if self.learn_sigma and self.likelihood != "gaussian":
            raise ValueError("learn_sigma needs likelihood 'gaussian', got " + repr(self.likelihood))
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ValueError(f"device must be one of {', '.join(DEVICES)} or cuda:N; got {self.device!r}")

    def _check_data(self) -> None:
        if isinstance(self.dataset, os.PathLike):
            self.dataset = os.fspath(self.dataset)
        if isinstance(self.data_dir, os.PathLike):
            self.data_dir = os.fspath(self.data_dir)
        if not isinstance(self.dataset, str):
            raise ValueError(f"dataset must be a name or a path, got {type(self.dataset).__name__}")
        if self.dataset not in DATASETS:
            if not is_array_path(self.dataset):
                raise ValueError(
                    f"dataset must be one of {', '.join(DATASETS)} or a path to a .npy/.npz file; got {self.dataset!r}"
                )
            if not Path(self.dataset).is_file():
                raise ValueError(f"dataset {self.dataset!r} looks like a .npy/.npz path, but there is no such file")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir must be a folder path or None, got {type(self.data_dir).__name__}")
        t = self.test_fraction
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise ValueError(f"test_fraction must be a number in (0, 1), e.g. 0.2; got {t!r}")

    @property
    def binarization(self) -> str:
        """The binarization actually used (``auto`` resolved)."""
        if self.binarize != "auto":
            return self.binarize
        return "dynamic" if self.likelihood == "bernoulli" else "none"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write ``config.json``: these fields plus ``extra`` facts of the run (device, versions...)."""
        write_text(path, json.dumps({**self.to_dict(), **extra}, indent=2) + "\n")
