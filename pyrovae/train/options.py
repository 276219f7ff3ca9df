"""The options of a training run, each declared once: its default and its check live here.

:class:`FitOptions` is the one owner of the training options: :func:`pyrovae.fit` takes its
defaults from it, :class:`pyrovae.config.FitConfig` (and so ``pyrovae fit --help``) takes its
defaults from it, and both check values by building one. :func:`resolve_device` is the one owner of
the ``--device`` option.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import pyro
import torch

from ..errors import ConfigError, positive_int, renamed_names
from ..infer.elbo import ELBOS, make_elbo, registered_objective, split_elbo_name
from ..infer.options import ObjectiveOptions
from ..spec.names import DEVICES, SEED_RANGE, check_device
from .engines import AUTO_MEASURED_ELBOS, Engine, eager_step_faster, engine_names, make_engine
from .schedule import LR_SCHEDULES

__all__ = [
    "FitOptions",
    "with_deprecated_keywords",
    "resolve_device",
    "check_device",
    "DEVICES",
    "SEED_RANGE",
    "LR_SCHEDULES",
]


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; a CUDA device without a GPU is an error."""
    if isinstance(device, torch.device):
        device = str(device)
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for, but torch sees no CUDA GPU: use --device cpu or auto")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} was asked for, but torch sees {torch.cuda.device_count()} GPU(s): "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    return torch.device(device)


@dataclass
class FitOptions:
    """How to train: every field has its default here, and building one checks every value.

    :ivar elbo: what is estimated, one of :data:`pyrovae.infer.ELBOS` (``meanfield``: analytic KL,
        ``trace``: Monte Carlo KL). pyrovae 0.1's combined names (``compiled-meanfield``, ...)
        are split into ``elbo`` and ``engine``, with a :class:`FutureWarning`.
    :ivar engine: how a step runs, one of :func:`pyrovae.train.engines.engine_names` (``auto`` compiles
        long runs, see :func:`pyrovae.train.engines.make_engine`).
    :ivar particles: samples of z per data point per step (vectorised).
    :ivar epochs: passes over the training set.
    :ivar batch_size: rows per step.
    :ivar lr: Adam's learning rate.
    :ivar eval_particles: samples per test point for the test ELBO of each epoch.
    :ivar seed: seeds Python, NumPy and torch before anything random; ``None`` leaves them as they
        are (a run directory's configuration always has one: :class:`pyrovae.config.FitConfig`).
    :ivar validate: Pyro's distribution validation during training (slower).
    :ivar beta: ``meanfield`` / ``trace``: the KL's weight (eq. 26).
    :ivar kl_warmup: ``meanfield`` / ``trace``: steps of a linear KL warm-up from 0 to ``beta``.
    :ivar free_bits: ``meanfield`` / ``trace``: nats per latent coordinate not penalised (eq. 27).
    :ivar iwae_grad: ``iwae``: ``standard`` or ``dreg`` encoder gradients (eq. 24 / 25).
    :ivar infovae_alpha: ``infovae``: alpha of eq. 28.
    :ivar infovae_lambda: ``infovae``: lambda of eq. 28.
    :ivar mmd_kernel: ``infovae``: ``imq`` or ``rbf`` (eq. 30).
    :ivar lr_schedule: ``constant`` (``lr`` throughout) or ``cosine`` (from ``lr`` down to 0 at the
        last step of ``epochs``, half a cosine: :func:`pyrovae.train.schedule.learning_rate`).
    :ivar clip_norm: rescale the gradient of a step to this Euclidean norm where it is larger;
        0 leaves gradients as they are.
    :ivar validation: training rows held out (a fixed random choice) to select the model: their
        ELBO is estimated after every epoch, and the run ends with the parameters of the epoch where
        it was highest; 0 holds out none (the run ends with its last parameters). Never test rows.
    :ivar patience: stop when the validation ELBO has not improved for this many epochs (needs
        ``validation``); 0 never stops early.
    :ivar checkpoint_every: also call the callbacks (``event="checkpoint"``) every this many steps
        (``None``: after every epoch only).
    :ivar handle_signals: on SIGINT/SIGTERM, finish the current step, call the callbacks
        (``event="interrupt"``) and raise :class:`~pyrovae.train.FitInterrupted`.
    :ivar objective_options: the options of an objective that a plugin registered
        (:func:`pyrovae.infer.register_objective`), by name.
    :ivar detect_anomaly: run under :func:`torch.autograd.set_detect_anomaly` (slow; for finding
        the operation that made a NaN).

    ``elbo`` may also be a Pyro :class:`~pyro.infer.ELBO` instance with a ``differentiable_loss``
    (then ``particles`` and the objective options are the instance's own, and keep their
    defaults here), and ``engine`` an :class:`~pyrovae.train.engines.Engine` (a decided one, e.g. a run
    plan's).

    The objective options' defaults and checks are :class:`~pyrovae.infer.options.ObjectiveOptions`';
    one that does not apply to :attr:`elbo` must keep its default.
    """

    elbo: str = "meanfield"
    engine: str = "auto"
    particles: int = 1
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    eval_particles: int = 1
    seed: int | None = None
    validate: bool = False
    beta: float = ObjectiveOptions.beta
    kl_warmup: int = ObjectiveOptions.kl_warmup
    free_bits: float = ObjectiveOptions.free_bits
    iwae_grad: str = ObjectiveOptions.iwae_grad
    infovae_alpha: float = ObjectiveOptions.infovae_alpha
    infovae_lambda: float = ObjectiveOptions.infovae_lambda
    mmd_kernel: str = ObjectiveOptions.mmd_kernel
    lr_schedule: str = "constant"
    clip_norm: float = 0.0
    validation: int = 0
    patience: int = 0
    checkpoint_every: int | None = None
    handle_signals: bool = False
    detect_anomaly: bool = False
    objective_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.elbo, str):
            elbo, engine = split_elbo_name(self.elbo)
            if elbo is None:
                raise ConfigError(f"elbo must be one of {', '.join(ELBOS)}, got {self.elbo!r}")
            if engine is not None:
                if self.engine not in ("auto", engine):
                    raise ConfigError(f"elbo {self.elbo!r} names the engine {engine!r}, but engine is {self.engine!r}")
                self.elbo, self.engine = elbo, engine
        elif not hasattr(self.elbo, "differentiable_loss"):
            raise ConfigError(
                f"{type(self.elbo).__name__} has no differentiable_loss, which a training step (loss = objective(x); "
                "loss.backward()) needs: use meanfield, trace, or a Pyro ELBO that has one (Trace_ELBO, "
                "TraceMeanField_ELBO)"
            )
        if not isinstance(self.engine, Engine) and self.engine not in engine_names():
            raise ConfigError(f"engine must be one of {', '.join(engine_names())}, got {self.engine!r}")
        if self.checkpoint_every is not None:
            positive_int("checkpoint_every", self.checkpoint_every)
        for name in ("handle_signals", "detect_anomaly"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("particles", "epochs", "batch_size", "eval_particles"):
            positive_int(name, getattr(self, name))
        check_lr(self.lr)
        check_seed(self.seed)
        if not isinstance(self.validate, bool):
            raise ConfigError(f"validate must be True or False, got {self.validate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule (--lr-schedule) must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        clip = self.clip_norm
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not (math.isfinite(clip) and clip >= 0):
            raise ConfigError(f"clip_norm (--clip-norm) must be a finite number >= 0 (0: no clipping), got {clip!r}")
        positive_int("validation", self.validation, minimum=0)
        positive_int("patience", self.patience, minimum=0)
        if self.patience and not self.validation:
            raise ConfigError(
                f"patience (--patience {self.patience}) stops on the validation ELBO, but no validation rows are held "
                "out: pass --validation N (e.g. 10000 of Fashion-MNIST's 60000 training images)"
            )
        self.objective_option_fields()
        if not isinstance(self.objective_options, dict):
            raise ConfigError(f"objective_options must be a dict, got {type(self.objective_options).__name__}")
        if self.objective_options and not registered_objective(self.elbo):
            raise ConfigError(
                f"objective_options (--objective-option) are the options of an objective a plugin registers; "
                f"--elbo {self.elbo} takes its own flags (pyrovae fit --help)"
            )

    def objective_option_fields(self) -> ObjectiveOptions:
        """The objective's options, checked against :attr:`elbo` (an ELBO instance: left at their defaults)."""
        options = ObjectiveOptions(**{name: getattr(self, name) for name in ObjectiveOptions.field_names()})
        return options.check_for(self.elbo if isinstance(self.elbo, str) else "meanfield")

    def make_estimator(self) -> Any:
        """What this run optimises: :attr:`elbo` built by name with its particles and options
        (:func:`pyrovae.infer.make_elbo`), or the ELBO instance given."""
        if not isinstance(self.elbo, str):
            return self.elbo
        if registered_objective(self.elbo):
            return make_elbo(self.elbo, self.particles, **self.objective_options)
        return make_elbo(self.elbo, self.particles, **dataclasses.asdict(self.objective_option_fields()))

    def seed_rng(self) -> None:
        """Seed Python, NumPy and torch with :attr:`seed` (``None``: leave them), once: a run plan
        that seeds these options before it builds the model is not seeded again by :func:`pyrovae.fit`."""
        if self.seed is not None and not getattr(self, "_seeded", False):
            pyro.set_rng_seed(self.seed)
            self._seeded = True

    def steps(self, num_data: int) -> int:
        """Optimisation steps of a whole run on ``num_data`` training rows (every batch kept)."""
        return math.ceil(num_data / self.batch_size) * self.epochs

    def make_engine(self, num_data: int, device: torch.device | str | None = None) -> Engine:
        """The engine this run uses: :attr:`engine`, with ``auto`` decided by the run's length, batch
        size and ``device`` (:func:`pyrovae.train.engines.make_engine`; the batch size counts for the
        objectives the rule was measured on, :data:`~pyrovae.train.engines.AUTO_MEASURED_ELBOS`); an
        :class:`~pyrovae.train.engines.Engine` as it is."""
        if isinstance(self.engine, Engine):
            return self.engine
        return make_engine(
            self.engine,
            self.steps(num_data),
            validate=self.validate,
            anomaly=self.detect_anomaly,
            batch_size=self.batch_size if self.elbo in AUTO_MEASURED_ELBOS else None,
            device=device,
            eager_faster=eager_step_faster(self.elbo, self.batch_size * self.particles, device),
        )


def check_lr(lr: Any) -> float:
    """``lr`` if it is a positive finite number (``inf``, ``nan`` and ``1e400`` are refused)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr (--lr) must be a finite number > 0 such as 1e-3, got {lr!r}")
    return float(lr)


def check_seed(seed: Any) -> int | None:
    """``seed`` if it is ``None`` or an int in :data:`SEED_RANGE`."""
    low, high = SEED_RANGE
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high):
        raise ConfigError(f"seed (--seed) must be an int from {low} to {high} (2**32 - 1), got {seed!r}")
    return seed


#: pyrovae 0.1's keyword of fit -> the FitOptions field it sets
_RENAMED = {"num_particles": "particles"}


def with_deprecated_keywords(
    options: FitOptions | None, deprecated: dict[str, Any]
) -> tuple[FitOptions, torch.device | str | None]:
    """``options`` (default: the defaults) with pyrovae 0.1's keywords of :func:`fit` applied, with a
    :class:`FutureWarning` that says how to spell them now; and the ``device=`` asked that way."""
    options = FitOptions() if options is None else options
    if not isinstance(options, FitOptions):
        raise ConfigError(f"fit's options must be a pyrovae.train.FitOptions, got {type(options).__name__}")
    if not deprecated:
        return options, None
    known = {f.name for f in dataclasses.fields(FitOptions)} | set(_RENAMED) | {"device"}
    unknown = sorted(set(deprecated) - known)
    if unknown:
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
    device = deprecated.pop("device", None)
    fields = {_RENAMED.get(name, name): value for name, value in deprecated.items()}
    if not isinstance(fields.get("elbo", ""), str):  # an ELBO instance brings its own particles
        fields.pop("particles", None)
    if fields:
        spelled = ", ".join(f"{name}=..." for name in fields)
        warnings.warn(
            f"fit(vae, data, {spelled}) is deprecated and will be removed: pass the options as "
            f"fit(vae, data, FitOptions({spelled}))",
            FutureWarning,
            stacklevel=3,
        )
    if device is not None:
        warnings.warn(
            f"fit(vae, data, device={str(device)!r}) is deprecated and will be removed: fit trains on the device "
            f"the model is on, so move the model first (vae.to({str(device)!r}))",
            FutureWarning,
            stacklevel=3,
        )
    return dataclasses.replace(options, **fields), device


# pyrovae 0.2.0.dev0's name
__getattr__ = renamed_names(__name__, {"TrainOptions": "FitOptions"}, globals())
