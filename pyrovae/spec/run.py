"""The run spec, :class:`RunSpec`: its sections read from nested mappings with every key and type
checked, and its translation to and from the command line's flat option names (:data:`FLAT_KEYS`)."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import ConfigError
from .plugins import check_plugin_names
from .sections import (
    OBJECTIVE_OPTIONS,
    DataSpec,
    EngineSpec,
    LoggingSpec,
    ModelSpec,
    ObjectiveSpec,
    OutputSpec,
    PriorSpec,
    TrainingSpec,
)

# -- the flat names of the command line -----------------------------------------------------------------
#: flat option name (``FitConfig``'s field, the CLI's ``--flag`` with ``_``) -> the spec's dotted key;
#: ``objective.*`` keys below the name are the options of the run's objective
FLAT_KEYS: dict[str, str] = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "test_fraction": "data.test_fraction",
    "binarize": "data.binarize",
    "image_size": "data.image_size",
    "cache_dir": "data.cache_dir",
    "skip_bad_images": "data.skip_bad_images",
    "data_loader": "data.loader",
    "workers": "data.workers",
    "likelihood": "model.likelihood",
    "sigma": "model.sigma",
    "learn_sigma": "model.learn_sigma",
    "prior": "model.prior.name",
    "prior_options": "model.prior.options",
    "prior_components": "model.prior.components",
    "z_dim": "model.z_dim",
    "hidden_dims": "model.hidden",
    "activation": "model.activation",
    "arch": "model.arch",
    "channels": "model.channels",
    "latents": "model.latents",
    "model": "model.class",
    "model_options": "model.options",
    "elbo": "objective.name",
    "particles": "objective.particles",
    "beta": "objective.*.beta",
    "kl_warmup": "objective.*.kl_warmup",
    "free_bits": "objective.*.free_bits",
    "iwae_grad": "objective.*.grad",
    "infovae_alpha": "objective.*.alpha",
    "infovae_lambda": "objective.*.lambda",
    "mmd_kernel": "objective.*.kernel",
    "engine": "engine.name",
    "epochs": "training.epochs",
    "batch_size": "training.batch_size",
    "lr": "training.lr",
    "lr_schedule": "training.lr_schedule",
    "clip_norm": "training.clip_norm",
    "validation": "training.validation",
    "patience": "training.patience",
    "eval_particles": "training.eval_particles",
    "seed": "training.seed",
    "device": "training.device",
    "dtype": "training.dtype",
    "validate": "training.validate",
    "out": "output.dir",
    "logger": "logging.loggers",
    "log_every": "logging.log_every",
    "mlflow_uri": "logging.mlflow_uri",
    "plugins": "plugins",
    "objective_options": "objective.*",
}

#: which objectives each flat objective option belongs to (the flat form carries all of them)
OPTIONS_FOR: dict[str, tuple[str, ...]] = {
    "beta": ("meanfield", "trace"),
    "kl_warmup": ("meanfield", "trace"),
    "free_bits": ("meanfield", "trace"),
    "iwae_grad": ("iwae",),
    "infovae_alpha": ("infovae",),
    "infovae_lambda": ("infovae",),
    "mmd_kernel": ("infovae",),
}


# -- reading values into sections ----------------------------------------------------------------------
def _field_name(cls: type, key: str) -> str:
    return getattr(cls, "RENAMED", {}).get(key, key)


def _key_name(cls: type, name: str) -> str:
    return {v: k for k, v in getattr(cls, "RENAMED", {}).items()}.get(name, name)


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), f"a {type(value).__name__}"
    )


def _typed(where: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` (int, float, bool, str, list[int], dict,
    ``X | None``); an int is taken for a float."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _typed(where, value, options[0])
    if hint is Any:
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(
                f"{where} should be a list of {item.__name__}s such as [400], found {_kind(value)} {value!r}"
            )
        return [_typed(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} should be a table of keys and values, found {_kind(value)} {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} should be a number, found {_kind(value)} {value!r}")
        return float(value) if isinstance(value, int) else value
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where} should be {_kind(hint())}, found {_kind(value)} {value!r}")
    return value


def _unknown(where: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f": did you mean {close[0]!r}?" if close else f" (its keys: {', '.join(known)})"
    return ConfigError(f"{where}{key} is not a key of the spec{hint}")


def _section(cls: type, values: Any, where: str, nested: Mapping[str, Any] | None = None) -> Any:
    """An instance of the section ``cls`` from ``values`` (a mapping; missing keys take their defaults)."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where.rstrip('.') or 'the spec'} should be a table (a [section]), found {_kind(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = [_key_name(cls, name) for name in fields if name not in (nested or {})]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        name = _field_name(cls, key)
        if nested is not None and key in nested:
            continue
        if name not in fields or (nested is not None and name in nested):
            raise _unknown(where, key, known)
        kwargs[name] = _typed(f"{where}{key}", value, hints[name])
    return cls(**kwargs)


def objective_options(name: str, values: Any) -> Any:
    """The options of the objective ``name`` (an instance of its class in :data:`OBJECTIVE_OPTIONS`)
    from a mapping, every key and type checked as in a run file's ``[objective.NAME]``."""
    if name not in OBJECTIVE_OPTIONS:
        raise ConfigError(f"objective.name should be one of {', '.join(OBJECTIVE_OPTIONS)}, found {name!r}")
    return _section(OBJECTIVE_OPTIONS[name], values, f"objective.{name}.")


def _objective(values: Any) -> ObjectiveSpec:
    where = "objective."
    if not isinstance(values, Mapping):
        raise ConfigError(f"objective should be a table (a [section]), found {_kind(values)}")
    name = _typed("objective.name", values.get("name", ObjectiveSpec.name), str)
    if name not in OBJECTIVE_OPTIONS:
        raise ConfigError(f"objective.name should be one of {', '.join(OBJECTIVE_OPTIONS)}, found {name!r}")
    for key in values:
        if key in ("name", "particles"):
            continue
        if key in OBJECTIVE_OPTIONS and key != name:
            raise ConfigError(
                f"objective.{key} is the section of objective {key!r}, but objective.name is {name!r}: "
                f"remove it, or set objective.name = {key!r}"
            )
        if key != name:
            raise _unknown(where, key, ["name", "particles", name])
    particles = _typed("objective.particles", values.get("particles", ObjectiveSpec.particles), int)
    return ObjectiveSpec(name, particles, objective_options(name, values.get(name, {})))


_SECTIONS = {
    "data": DataSpec,
    "model": ModelSpec,
    "objective": ObjectiveSpec,
    "engine": EngineSpec,
    "training": TrainingSpec,
    "output": OutputSpec,
    "logging": LoggingSpec,
}


@dataclass
class RunSpec:
    """One run, as nested sections (see the module docstring); every section has its defaults, and
    :attr:`plugins` the modules imported first (:mod:`pyrovae.spec.plugins`)."""

    plugins: list[str] = field(default_factory=list)
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    engine: EngineSpec = field(default_factory=EngineSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    logging: LoggingSpec = field(default_factory=LoggingSpec)

    # -- nested form ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSpec:
        """A spec from nested mappings (a TOML document); missing sections and keys take their
        defaults. Unknown keys, values of the wrong type and a section for another objective raise
        a one-line :class:`~pyrovae.errors.ConfigError` naming the key."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a run spec should be a table of sections, found {_kind(values)}")
        sections: dict[str, Any] = {}
        for key, value in values.items():
            if key == "plugins":
                sections[key] = list(check_plugin_names(value))
                continue
            if key not in _SECTIONS:
                raise _unknown("", key, ["plugins", *_SECTIONS])
            if key == "objective":
                sections[key] = _objective(value)
            elif key == "model":
                if not isinstance(value, Mapping):
                    raise ConfigError(f"model should be a table (a [section]), found {_kind(value)}")
                prior = _section(PriorSpec, value.get("prior", {}), "model.prior.")
                sections[key] = dataclasses.replace(_section(ModelSpec, value, "model.", {"prior": 0}), prior=prior)
            else:
                sections[key] = _section(_SECTIONS[key], value, f"{key}.")
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        """The nested form, as :meth:`from_dict` reads it (``None`` values left out; the objective
        section holds its name, its particles and a table of its own options)."""

        def plain(section: Any) -> dict[str, Any]:
            out = {}
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if value is None or f.name == "options" and isinstance(section, ObjectiveSpec):
                    continue
                out[_key_name(type(section), f.name)] = plain(value) if dataclasses.is_dataclass(value) else value
            return out

        out: dict[str, Any] = {"plugins": list(self.plugins)} if self.plugins else {}
        out.update({name: plain(getattr(self, name)) for name in _SECTIONS})
        out["objective"][self.objective.name] = plain(self.objective.options)
        return out

    # -- flat form ------------------------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """The command line's flat options (:data:`FLAT_KEYS`); the options of the other objectives
        take their defaults."""
        nested = self.to_dict()
        flat: dict[str, Any] = {}
        for name, key in FLAT_KEYS.items():
            if name == "objective_options":  # the options of an objective a plugin registered, as a table
                options = self.objective.options
                registered = not any(self.objective.name in owners for owners in OPTIONS_FOR.values())
                flat[name] = nested["objective"][self.objective.name] if registered and options is not None else {}
                continue
            if name in OPTIONS_FOR:
                owner = self.objective.name if self.objective.name in OPTIONS_FOR[name] else OPTIONS_FOR[name][0]
                options = self.objective.options if owner == self.objective.name else OBJECTIVE_OPTIONS[owner]()
                flat[name] = getattr(options, _field_name(type(options), key.rsplit(".", 1)[1]))
                continue
            value: Any = nested
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            flat[name] = tuple(value or ()) if name in ("hidden_dims", "channels", "logger", "plugins") else value
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any], base: RunSpec | None = None) -> RunSpec:
        """``base`` (default: the defaults) with the flat options ``flat`` set. An objective option
        is set in the section of ``flat["elbo"]`` (or of ``base``'s objective) when it belongs to
        it; a changed option of another objective raises :class:`~pyrovae.errors.ConfigError`."""
        nested = (base or cls()).to_dict()
        elbo = flat.get("elbo", nested["objective"]["name"])
        if elbo != nested["objective"]["name"]:
            nested["objective"] = {"name": elbo, "particles": nested["objective"]["particles"]}
        for name, value in flat.items():
            if name not in FLAT_KEYS:
                raise _unknown("", name, list(FLAT_KEYS))
            key = FLAT_KEYS[name]
            if name == "objective_options":
                if value:
                    nested["objective"][elbo] = dict(value)
                continue
            if name in OPTIONS_FOR:
                owners = OPTIONS_FOR[name]
                option = key.rsplit(".", 1)[1]
                if elbo not in owners:
                    default = getattr(OBJECTIVE_OPTIONS[owners[0]](), _field_name(OBJECTIVE_OPTIONS[owners[0]], option))
                    if value != default:
                        flag = "--" + name.replace("_", "-")
                        raise ConfigError(
                            f"{flag} is for --elbo {' or '.join(owners)}, not --elbo {elbo}: leave it at its default, "
                            "or choose that --elbo"
                        )
                    continue
                key = f"objective.{elbo}.{option}"
            *path, last = key.split(".")
            target = nested
            for part in path:
                target = target.setdefault(part, {})
            target[last] = list(value) if isinstance(value, tuple) else value
        return cls.from_dict(nested)
