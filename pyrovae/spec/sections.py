"""The sections of a run spec (:class:`pyrovae.spec.RunSpec`): one dataclass each, whose defaults
are the run's defaults, and the options class of each objective (:data:`OBJECTIVE_OPTIONS`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import ConfigError


@dataclass
class DataSpec:
    """:ivar dataset: a built-in name (``digits``, ``fashion-mnist``, ``mnist``, ``cifar10``) or the
        path of a ``.npy`` / ``.npz`` file.
    :ivar data_dir: the folder of the IDX / CIFAR-10 files (``None``: the data set's default).
    :ivar test_fraction: the share held out for testing where the data give no split.
    :ivar binarize: ``auto`` (``dynamic`` for the Bernoulli likelihood, else ``none``), ``none``,
        ``static`` or ``dynamic``.
    :ivar image_size: image folders: the side images are center-cropped and resized to (``None``:
        as they are; ``celeba``: 64).
    :ivar cache_dir: image folders: where the decoded images are cached (``None``: ``.pyrovae-cache``
        in the folder).
    :ivar skip_bad_images: image folders: leave out and count images that cannot be decoded.
    :ivar loader: ``auto``, ``resident`` or ``stream`` (:func:`pyrovae.data.loading.choose_loading`).
    :ivar workers: the streaming path's DataLoader worker processes."""

    dataset: str = "digits"
    data_dir: str | None = None
    test_fraction: float = 0.2
    binarize: str = "auto"
    image_size: int | None = None
    cache_dir: str | None = None
    skip_bad_images: bool = False
    loader: str = "auto"
    workers: int = 0


@dataclass
class PriorSpec:
    """:ivar name: a built-in prior (``normal``, ``gaussian``, ``mog``, ``vamp``, ``flow``) or a prior
        class of yours as ``package.module:ClassName``.
    :ivar components: mixture components of ``mog`` and ``vamp``.
    :ivar options: keyword arguments of a prior class of yours."""

    name: str = "normal"
    components: int = 10
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """:ivar arch: ``mlp`` or ``conv`` encoder and decoder.
    :ivar latents: levels of latent variables (1 or 2).
    :ivar z_dim: the width of each level.
    :ivar hidden: hidden layer widths of the dense layers (the decoder mirrors them).
    :ivar channels: with ``conv``, the feature maps of each stride-2 convolution.
    :ivar likelihood: ``bernoulli`` (eq. 13), ``gaussian`` (eq. 14) or ``discretized-logistic``.
    :ivar sigma: the Gaussian likelihood's sigma (its initial value with ``learn_sigma``).
    :ivar class_: (``class`` in a file) a model class of yours, ``package.module:ClassName``, built
        as ``Class(x_dim, **options)`` in place of the built-in model (whose options above then keep
        their defaults).
    :ivar options: the keyword arguments of that class."""

    arch: str = "mlp"
    latents: int = 1
    z_dim: int = 50
    hidden: list[int] = field(default_factory=lambda: [400])
    activation: str = "relu"
    channels: list[int] = field(default_factory=lambda: [32, 64])
    likelihood: str = "bernoulli"
    sigma: float = 1.0
    learn_sigma: bool = False
    prior: PriorSpec = field(default_factory=PriorSpec)
    class_: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    #: a key that is a Python keyword is spelled with a trailing underscore inside
    RENAMED: ClassVar[dict[str, str]] = {"class": "class_"}


@dataclass
class KLOptions:
    """The options of ``meanfield`` and ``trace``: the KL's weight ``beta`` (eq. 26), a linear
    warm-up of that weight over ``kl_warmup`` steps, and ``free_bits`` nats per latent coordinate
    (eq. 27)."""

    beta: float = 1.0
    kl_warmup: int = 0
    free_bits: float = 0.0


@dataclass
class IWAEOptions:
    """The options of ``iwae``: the encoder's gradient, ``standard`` (eq. 24) or ``dreg`` (eq. 25)."""

    grad: str = "dreg"


@dataclass
class InfoVAEOptions:
    """The options of ``infovae``: ``alpha`` and ``lambda`` of eq. 28 and the MMD's ``kernel`` (eq. 30)."""

    alpha: float = 0.0
    lambda_: float = 1000.0
    kernel: str = "imq"

    #: a key that is a Python keyword is spelled with a trailing underscore inside
    RENAMED: ClassVar[dict[str, str]] = {"lambda": "lambda_"}


@dataclass
class NoOptions:
    """The options of an objective that takes none."""


#: objective name -> the class of its options (the ``[objective.NAME]`` section)
OBJECTIVE_OPTIONS: dict[str, type] = {
    "meanfield": KLOptions,
    "trace": KLOptions,
    "iwae": IWAEOptions,
    "infovae": InfoVAEOptions,
}


def register_objective_options(name: str, options: type) -> None:
    """Declare the options class (a dataclass with a default for every field) of the objective ``name``."""
    if not dataclasses.is_dataclass(options):
        raise ConfigError(f"the options of objective {name!r} must be a dataclass, got {options!r}")
    OBJECTIVE_OPTIONS[name] = options


@dataclass
class ObjectiveSpec:
    """:ivar name: what is estimated (``--elbo``): ``meanfield``, ``trace``, ``iwae``, ``infovae``.
    :ivar particles: samples of z per data point per step (K of ``iwae``).
    :ivar options: the objective's own options, an instance of ``OBJECTIVE_OPTIONS[name]``
        (``None``: their defaults)."""

    name: str = "meanfield"
    particles: int = 1
    options: Any = None

    def __post_init__(self) -> None:
        if self.options is None and self.name in OBJECTIVE_OPTIONS:
            self.options = OBJECTIVE_OPTIONS[self.name]()


@dataclass
class EngineSpec:
    """:ivar name: how a step runs: ``auto``, ``eager``, ``compiled``, ``jit`` or ``cudagraph``."""

    name: str = "auto"


@dataclass
class TrainingSpec:
    """:ivar eval_particles: samples per test point for the test ELBO of each epoch.
    :ivar lr_schedule: ``constant`` or ``cosine``. :ivar clip_norm: 0 is no clipping.
    :ivar validation: training rows held out for model selection (0: none).
    :ivar patience: epochs without a better validation ELBO before stopping (0: never).
    :ivar device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. :ivar dtype: ``float32`` or ``float64``.
    :ivar validate: Pyro's distribution validation (slower)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    clip_norm: float = 0.0
    validation: int = 0
    patience: int = 0
    eval_particles: int = 1
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    validate: bool = False


@dataclass
class OutputSpec:
    """:ivar dir: the run directory to write (``None``: a new one for each run,
    ``runs/DATASET-OBJECTIVE/version_N`` with the next free ``N``)."""

    dir: str | None = None


#: where ``--logger`` can log training besides ``metrics.jsonl``
LOGGERS = ("csv", "tensorboard", "mlflow")


@dataclass
class LoggingSpec:
    """:ivar loggers: where training is logged besides ``metrics.jsonl``: ``csv`` (``metrics.csv`` and
        ``steps.csv``), ``tensorboard`` (``tensorboard/``), ``mlflow`` (``mlruns/`` or ``mlflow_uri``).
    :ivar log_every: the loggers log the step's loss every this many steps.
    :ivar mlflow_uri: the MLflow tracking URI (``None``: ``MLFLOW_TRACKING_URI``, else ``mlruns/`` in
        the run directory)."""

    loggers: list[str] = field(default_factory=list)
    log_every: int = 50
    mlflow_uri: str | None = None
