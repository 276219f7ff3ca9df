"""The names a run can be given, and the checks of a name that need no code behind it.

Every choice of the command line is listed here once (data sets, likelihoods, priors, objectives,
engines, devices...): the modules that build those things take their names from here (and
``tests/test_startup.py`` checks that their registries hold exactly these), and the command line
reads them without importing torch, so ``pyrovae --help`` answers at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ConfigError, ModelError, PriorError

__all__ = [
    "DATASETS",
    "IDX_DATASETS",
    "ARRAY_SUFFIXES",
    "BINARIZE",
    "LIKELIHOODS",
    "ACTIVATIONS",
    "ARCHS",
    "LATENTS",
    "PRIORS",
    "MODEL_KINDS",
    "OBJECTIVES",
    "DEPRECATED_ELBOS",
    "IWAE_GRADS",
    "KERNELS",
    "ENGINE_NAMES",
    "LR_SCHEDULES",
    "DEVICES",
    "DTYPES",
    "SEED_RANGE",
    "EVALUATE_DEFAULTS",
    "SAMPLE_DEFAULTS",
    "is_array_path",
    "is_class_path",
    "check_device",
    "check_prior_name",
    "check_model_name",
    "parse_options",
    "check_prior_options",
    "parse_prior_options",
    "OptionValue",
    "REGISTERED",
    "names_of",
    "register_name",
]

#: built-in data sets (or the path of a ``.npy`` / ``.npz`` file: :data:`ARRAY_SUFFIXES`)
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
#: named data sets read from the four standard IDX files
IDX_DATASETS = ("mnist", "fashion-mnist")
#: file suffixes of user arrays
ARRAY_SUFFIXES = (".npy", ".npz")
BINARIZE = ("none", "static", "dynamic")
LIKELIHOODS = ("bernoulli", "gaussian", "discretized-logistic")
ACTIVATIONS = ("relu", "softplus", "tanh", "elu")
ARCHS = ("mlp", "conv")
#: levels of latent variables of the built-in models
LATENTS = (1, 2)
PRIORS = ("normal", "gaussian", "mog", "vamp", "flow")
#: the built-in model kinds a checkpoint records (pyrovae.models.MODELS)
MODEL_KINDS = ("vae", "hierarchical", "linear-gaussian")
#: ``--elbo``: what is estimated
OBJECTIVES = ("meanfield", "trace", "iwae", "infovae")
#: pyrovae 0.1's names for an estimator and an engine in one string -> ``(elbo, engine)``
DEPRECATED_ELBOS: dict[str, tuple[str, str]] = {
    "compiled-meanfield": ("meanfield", "compiled"),
    "compiled-trace": ("trace", "compiled"),
    "jit-meanfield": ("meanfield", "jit"),
    "jit-trace": ("trace", "jit"),
}
IWAE_GRADS = ("standard", "dreg")
KERNELS = ("imq", "rbf")
#: ``--engine``: how a step runs (``auto`` picks one of the others per run)
ENGINE_NAMES = ("auto", "eager", "compiled", "jit", "cudagraph")
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")
#: seeds torch, NumPy and Python accept alike: [0, 2**32)
SEED_RANGE = (0, 2**32 - 1)

#: the defaults of ``pyrovae evaluate`` (:func:`pyrovae.commands.evaluate_run`)
EVALUATE_DEFAULTS = {"k": 5000, "n": None, "batch_size": 100, "chunk_size": None, "seed": 0, "device": "auto",
                     "inference_points": 10, "max_minutes": 10.0}  # fmt: skip
#: the defaults of ``pyrovae sample`` (:func:`pyrovae.commands.sample_run`)
SAMPLE_DEFAULTS = {"n": 64, "seed": 0}

#: the names that plugins registered (:mod:`pyrovae.spec.plugins`), by kind -> {name: registering module}
REGISTERED: dict[str, dict[str, str]] = {"prior": {}, "objective": {}, "model": {}, "engine": {}}
_BUILT_IN = {"prior": PRIORS, "objective": OBJECTIVES, "model": MODEL_KINDS, "engine": ENGINE_NAMES}


def names_of(kind: str) -> tuple[str, ...]:
    """The names of ``kind`` (``prior``, ``objective``, ``model``, ``engine``) a run can be given:
    the built-in ones, then those registered since this process started."""
    return (*_BUILT_IN[kind], *REGISTERED[kind])


def register_name(kind: str, name: object, module: str) -> str:
    """Record that ``module`` registered the ``kind`` called ``name`` (each registry calls this once
    per registration); a name that is not a plain word or is taken already is refused in one line."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ConfigError(
            f"a registered {kind} needs a name of lower-case letters, digits, - and _ (starting with a letter), "
            f"got {name!r} from {module}"
        )
    if name in names_of(kind) or (kind == "objective" and name in DEPRECATED_ELBOS):
        owner = REGISTERED[kind].get(name, "pyrovae, built in")
        raise ConfigError(f"the {kind} {name!r} is registered already (by {owner}): choose another name")
    REGISTERED[kind][name] = module
    return name


_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
#: ``package.module:ClassName``
CLASS_PATH = re.compile(rf"({_DOTTED}):({_DOTTED})")


def is_array_path(name: str | Path) -> bool:
    """Whether ``name`` names a user array file (ends in ``.npy`` or ``.npz``; need not exist)."""
    return Path(name).suffix.lower() in ARRAY_SUFFIXES


def is_class_path(name: object) -> bool:
    """Whether ``name`` has the form ``package.module:ClassName`` (a syntax check; imports nothing)."""
    return isinstance(name, str) and CLASS_PATH.fullmatch(name) is not None


def check_device(device: str) -> str:
    """``device`` if it names a device pyrovae can be asked for (:data:`DEVICES` or ``cuda:N``)."""
    if isinstance(device, str) and (device in DEVICES or (device.startswith("cuda:") and device[5:].isdigit())):
        return device
    raise ConfigError(f"device must be one of {', '.join(DEVICES)} or cuda:N, got {device!r}")


def check_prior_name(name: object) -> str:
    """``name`` if it is a built-in prior name or a class path (a syntax check; imports nothing)."""
    if isinstance(name, str) and (name in names_of("prior") or is_class_path(name)):
        return name
    raise PriorError(
        f"prior must be one of {', '.join(names_of('prior'))} or a class of yours as package.module:ClassName; "
        f"got {name!r}"
    )


def check_model_name(name: object) -> str:
    """``name`` if it is a built-in kind (:data:`MODEL_KINDS`) or a class path (a syntax check; imports nothing)."""
    if isinstance(name, str) and (name in names_of("model") or is_class_path(name)):
        return name
    raise ModelError(
        f"model must be one of {', '.join(names_of('model'))} or a class of yours as package.module:ClassName; "
        f"got {name!r}"
    )


_SCALARS = (str, int, float, bool, type(None))
#: the value of a ``--prior-option`` or ``--model-option``
OptionValue = str | int | float | bool | None


def parse_options(pairs: Sequence[str], what: str = "prior") -> dict[str, OptionValue]:
    """``["df=3", "learn=true", "name=t"]`` -> ``{"df": 3, "learn": True, "name": "t"}`` (the values of
    ``--prior-option`` and ``--model-option``).

    A value is read as JSON where it is a JSON scalar (number, ``true``/``false``, ``null``, a
    quoted string), and kept as text otherwise.
    """
    options: dict[str, OptionValue] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            article = "an" if what[:1] in "aeiou" else "a"
            raise PriorError(f"expected {article} {what} option as key=value, e.g. scale=0.5; got {pair!r}")
        if key in options:
            raise PriorError(f"{what} option {key} is given twice")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options[key] = value if isinstance(value, _SCALARS) else text
    return options


def check_prior_options(name: str, options: object) -> dict[str, OptionValue]:
    """The options of prior ``name`` as a plain dict: identifier keys (not ``z_dim``), JSON scalar values.

    Built-in priors take none (``mog`` and ``vamp`` take ``prior_components``).
    """
    if not isinstance(options, Mapping):
        raise PriorError(f"prior_options must be a mapping of option names to values, got {type(options).__name__}")
    if options and name in PRIORS:
        raise PriorError(
            f"prior options {sorted(options)} were given for the built-in prior {name!r}, which takes none: "
            "they are for a prior class of yours (--prior package.module:ClassName)"
        )
    for key, value in options.items():
        if not (isinstance(key, str) and key.isidentifier()) or key == "z_dim":
            raise PriorError(f"a prior option name must be a Python identifier other than z_dim, got {key!r}")
        if not isinstance(value, _SCALARS):
            raise PriorError(
                f"prior option {key} must be a number, true/false, null or text, got {type(value).__name__}"
            )
    return dict(options)


def parse_prior_options(pairs: Sequence[str]) -> dict[str, OptionValue]:
    """``--prior-option KEY=VALUE`` pairs as a checked dict (:func:`parse_options`, :func:`check_prior_options`)."""
    return check_prior_options("", parse_options(pairs, "prior"))
