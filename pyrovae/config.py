"""The flat configuration of a ``pyrovae fit`` run; saved as ``config.json`` next to its results, as
the nested run spec plus the facts resolved at its start (:meth:`FitConfig.record`; the flat files of
earlier versions are still read, :func:`flat_record`).

:class:`FitConfig` is the command line's flat view of a :class:`pyrovae.spec.RunSpec` (one field per
``--option``): the spec owns every default (``FitConfig``'s are ``RunSpec().to_flat()``), and
building a ``FitConfig`` checks every value through the check of its owner:

- training options: :class:`pyrovae.train.FitOptions`;
- model options: :func:`pyrovae.models.check_vae_options` (``latents``:
  :func:`pyrovae.models.hierarchical.check_latents`; the prior's options:
  :func:`pyrovae.models.prior_spec.check_prior_options`);
- data options: :func:`pyrovae.data.check_data_options`;
- the device: :func:`pyrovae.train.options.check_device`.

``tests/test_spec.py`` fails when a library signature (``VAE``, ``load_dataset``,
``FitOptions``) states another default than the spec.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import check_data_options
from .data.loading import DATA_FIELDS, check_data_fields
from .errors import ConfigError
from .infer.options import ObjectiveOptions
from .models.hierarchical import check_latents
from .models.model_spec import check_hparams, check_model_name
from .models.prior_spec import check_prior_options
from .models.vae import check_vae_options
from .rundir import write_text
from .spec import RunSpec, objective_options
from .spec.loggers import check_loggers
from .spec.plugins import check_plugin_names
from .train.options import DEVICES, FitOptions, check_device, check_seed, resolve_device

__all__ = ["FitConfig", "flat_record", "resolve_device", "DTYPES", "DEVICES"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


#: the options of the built-in models, which a model class of the user's (``model``) does not take
_BUILT_IN_MODEL = (
    "likelihood", "sigma", "learn_sigma", "prior", "prior_options", "prior_components", "z_dim", "hidden_dims",
    "activation", "arch", "channels", "latents",
)  # fmt: skip
#: every option's default, from its owner, the run spec
_DEFAULTS = RunSpec().to_flat()
#: the training options a run directory records (the others are how one call of fit runs)
_TRAIN = {f.name for f in dataclasses.fields(FitOptions)} - {"checkpoint_every", "handle_signals", "detect_anomaly"}
#: the objective's options (added after pyrovae 0.1's runs, like ``engine``)
OBJECTIVE_FIELDS = ObjectiveOptions.field_names()


@dataclass
class FitConfig:
    """Everything a training run needs, one field per ``pyrovae fit`` option; every field has
    the default of :class:`pyrovae.spec.RunSpec`.

    ``binarize="auto"`` means ``dynamic`` for the built-in models' Bernoulli likelihood and ``none``
    otherwise (with ``model``, a class of yours, say ``static`` or ``dynamic`` where it wants binary
    data). ``model`` and ``model_options``: a model class of yours, built as
    ``Class(x_dim, **model_options)`` (:func:`pyrovae.models.model_spec.build_model`).
    ``dataset`` is one of :data:`~pyrovae.data.DATASETS` or the path of an existing ``.npy`` /
    ``.npz`` file; ``data_dir`` is the folder of the ``mnist`` / ``fashion-mnist`` IDX files
    (default: see :func:`~pyrovae.data.load_idx_dataset`); ``test_fraction`` is the share held
    out for testing where the data give no split (``digits``, user files). ``seed`` defaults to 0
    rather than :class:`~pyrovae.train.FitOptions`' ``None``: a run directory is always
    reproducible. The training fields are :class:`~pyrovae.train.FitOptions`'. ``prior`` is a built-in
    name or a prior class of yours as ``package.module:ClassName``, built with ``z_dim`` and
    ``prior_options`` (see :mod:`pyrovae.models.prior_spec`; nothing is imported here).
    """

    dataset: str = _DEFAULTS["dataset"]
    data_dir: str | None = _DEFAULTS["data_dir"]
    test_fraction: float = _DEFAULTS["test_fraction"]
    binarize: str = _DEFAULTS["binarize"]
    image_size: int | None = _DEFAULTS["image_size"]
    cache_dir: str | None = _DEFAULTS["cache_dir"]
    skip_bad_images: bool = _DEFAULTS["skip_bad_images"]
    data_loader: str = _DEFAULTS["data_loader"]
    workers: int = _DEFAULTS["workers"]
    likelihood: str = _DEFAULTS["likelihood"]
    sigma: float = _DEFAULTS["sigma"]
    learn_sigma: bool = _DEFAULTS["learn_sigma"]
    prior: str = _DEFAULTS["prior"]
    prior_options: dict[str, Any] = field(default_factory=dict)
    prior_components: int = _DEFAULTS["prior_components"]
    z_dim: int = _DEFAULTS["z_dim"]
    hidden_dims: tuple[int, ...] = _DEFAULTS["hidden_dims"]
    activation: str = _DEFAULTS["activation"]
    arch: str = _DEFAULTS["arch"]
    channels: tuple[int, ...] = _DEFAULTS["channels"]
    latents: int = _DEFAULTS["latents"]
    model: str | None = _DEFAULTS["model"]
    model_options: dict[str, Any] = field(default_factory=dict)
    elbo: str = _DEFAULTS["elbo"]
    engine: str = _DEFAULTS["engine"]
    particles: int = _DEFAULTS["particles"]
    eval_particles: int = _DEFAULTS["eval_particles"]
    epochs: int = _DEFAULTS["epochs"]
    batch_size: int = _DEFAULTS["batch_size"]
    lr: float = _DEFAULTS["lr"]
    device: str = _DEFAULTS["device"]
    dtype: str = _DEFAULTS["dtype"]
    seed: int = _DEFAULTS["seed"]
    validate: bool = _DEFAULTS["validate"]
    beta: float = _DEFAULTS["beta"]
    kl_warmup: int = _DEFAULTS["kl_warmup"]
    free_bits: float = _DEFAULTS["free_bits"]
    iwae_grad: str = _DEFAULTS["iwae_grad"]
    infovae_alpha: float = _DEFAULTS["infovae_alpha"]
    infovae_lambda: float = _DEFAULTS["infovae_lambda"]
    mmd_kernel: str = _DEFAULTS["mmd_kernel"]
    lr_schedule: str = _DEFAULTS["lr_schedule"]
    clip_norm: float = _DEFAULTS["clip_norm"]
    validation: int = _DEFAULTS["validation"]
    patience: int = _DEFAULTS["patience"]
    out: str | None = _DEFAULTS["out"]
    logger: tuple[str, ...] = _DEFAULTS["logger"]
    log_every: int = _DEFAULTS["log_every"]
    mlflow_uri: str | None = _DEFAULTS["mlflow_uri"]
    plugins: tuple[str, ...] = _DEFAULTS["plugins"]
    objective_options: dict[str, Any] = field(default_factory=dict)

    #: fields that runs written by earlier versions (0.1 on) may lack; reading such a run takes their defaults
    ADDED_SINCE_0_1 = (
        "engine", "model", "model_options",
        "prior_options", "arch", "channels", "latents", "lr_schedule", "clip_norm", "validation", "patience",
        "logger", "log_every", "mlflow_uri",
        *OBJECTIVE_FIELDS, *DATA_FIELDS, "plugins", "objective_options",
    )  # fmt: skip

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims) if isinstance(self.hidden_dims, (list, tuple)) else self.hidden_dims
        self.channels = tuple(self.channels) if isinstance(self.channels, (list, tuple)) else self.channels
        self.plugins = check_plugin_names(self.plugins, "plugins (--plugin)")
        binarize = "none" if self.binarize == "auto" else self.binarize
        self.dataset, self.data_dir = check_data_options(
            self.dataset, self.data_dir, self.test_fraction, binarize, **self.data_options()
        )
        check_vae_options(
            self.z_dim, self.hidden_dims, self.likelihood, self.prior, self.sigma, self.learn_sigma,
            self.activation, self.prior_components, self.arch, self.channels,
        )  # fmt: skip
        check_latents(self.latents)
        if self.model is not None:
            self._check_model()
        self.prior_options = check_prior_options(self.prior, self.prior_options)
        train = self.fit_options()  # checks every training option, and splits pyrovae 0.1's elbo names
        self.elbo, self.engine = train.elbo, train.engine
        if self.objective_options:  # (a registered objective's options, typed as its class says)
            self.objective_options = dataclasses.asdict(objective_options(self.elbo, self.objective_options))
        if self.seed is None or check_seed(self.seed) is None:
            raise ConfigError("seed must be an integer from 0 to 2**32 - 1 for a run directory, got None")
        check_device(self.device)
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.out is not None and (not isinstance(self.out, str) or not self.out):
            raise ConfigError(f"out must be a directory path or None (a new runs/.../version_N), got {self.out!r}")
        self.logger = check_loggers(self.logger, self.log_every, self.mlflow_uri)

    def _check_model(self) -> None:
        """A model class of the user's: a valid name, plain options, and the built-in model's options
        left at their defaults (they would not reach it)."""
        check_model_name(self.model)
        self.model_options = check_hparams(self.model_options, "model_options (--model-option)")
        defaults = type(self).defaults()
        changed = [name for name in _BUILT_IN_MODEL if getattr(self, name) != defaults[name]]
        if changed:
            flags = ", ".join("--" + ("hidden" if n == "hidden_dims" else n.replace("_", "-")) for n in changed)
            raise ConfigError(
                f"{flags} set the built-in model, not --model {self.model}: pass that class's own options "
                "with --model-option KEY=VALUE"
            )

    def data_options(self) -> dict[str, Any]:
        """The data options beyond the data set, its folder and split (checked), as
        :func:`pyrovae.data.load_dataset` takes them (``data_loader`` and ``workers`` aside)."""
        return check_data_fields(self.image_size, self.cache_dir, self.skip_bad_images, self.data_loader, self.workers)

    def fit_options(self) -> FitOptions:
        """The training fields as :class:`~pyrovae.train.FitOptions` (checked)."""
        return FitOptions(**{name: getattr(self, name) for name in _TRAIN})

    @property
    def binarization(self) -> str:
        """The binarization actually used (``auto`` resolved)."""
        if self.binarize != "auto":
            return self.binarize
        return "dynamic" if self.likelihood == "bernoulli" and self.model is None else "none"

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default, by name."""
        return {
            f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            for f in dataclasses.fields(cls)
        }

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        out["channels"] = list(self.channels)
        out["logger"] = list(self.logger)
        out["plugins"] = list(self.plugins)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        """A config from ``to_dict()``'s layout (unknown keys, such as ``resolved``, are ignored)."""
        if not isinstance(values, dict):
            raise ConfigError(f"a run configuration must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def record(self, **extra: Any) -> dict[str, Any]:
        """What ``config.json`` holds: the nested run spec (:meth:`pyrovae.spec.RunSpec.to_dict`) of
        these options, plus ``extra`` (``resolved``: the facts of the run, device, versions...)."""
        return {**RunSpec.from_flat(self.to_dict()).to_dict(), **extra}

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write ``config.json``: :meth:`record`."""
        write_text(path, json.dumps(self.record(**extra), indent=2) + "\n")


def flat_record(values: dict[str, Any]) -> dict[str, Any]:
    """A ``config.json`` as :class:`FitConfig`'s flat fields plus its ``resolved`` facts: one written
    as a nested run spec (pyrovae 0.2.0 on), converted; a flat one (pyrovae 0.1 and 0.2.0.dev0) as it is."""
    if not isinstance(values, dict) or not isinstance(values.get("data"), dict):
        return values
    spec = RunSpec.from_dict({key: value for key, value in values.items() if key != "resolved"})
    flat = {name: list(v) if isinstance(v, tuple) else v for name, v in spec.to_flat().items()}
    return {**flat, **({"resolved": values["resolved"]} if "resolved" in values else {})}
