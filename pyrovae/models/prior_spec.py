"""A prior of the user's own, named by its class path ``package.module:ClassName``.

``pyrovae fit --prior mypkg.priors:StudentTPrior --prior-option df=3`` trains with
``StudentTPrior(z_dim, df=3)``. ``config.json`` and the checkpoint record the class path and the
options, and ``evaluate``, ``sample``, ``plots`` and ``fit --resume`` rebuild the prior from them.

The rule that keeps a run directory from running code: pyrovae imports a class only when the
person running it names that class, never on the word of a file. A run directory whose prior is
not built in is rebuilt only when the caller names the class again (``--prior`` on the command
line; ``prior=`` in :func:`pyrovae.load_vae`), or explicitly trusts the recorded path
(``--trust-prior``; ``trust_prior=True``). The class must subclass
:class:`pyrovae.models.priors.Prior`; anything else is refused with one line.

A prior built for training is checked against the contract of :class:`~pyrovae.models.priors.Prior`
on a small draw (:func:`check_prior`) before a run directory is created, so that a prior that
cannot be built, returns the wrong shapes or is not finite is refused with one line that names the
class, what failed and the rule, instead of a traceback from deep inside training. The user's own
exception stays chained to that error (``PYROVAE_TRACEBACK=1`` shows it on the command line).

This module is the one place that parses, checks, imports and describes such priors.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import torch
from torch import nn

from ..errors import TRACEBACK_HINT, PriorError
from .priors import PRIORS, Prior

__all__ = [
    "is_class_path",
    "check_prior_name",
    "check_prior_options",
    "parse_prior_options",
    "class_path",
    "describe_prior",
    "import_prior_class",
    "build_prior",
    "check_prior",
    "prior_for_training",
    "rebuild_prior",
]

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CLASS_PATH = re.compile(rf"({_DOTTED}):({_DOTTED})")
_SCALARS = (str, int, float, bool, type(None))

OptionValue = str | int | float | bool | None

#: the batch shape :func:`check_prior` asks a prior for
CHECK_BATCH_SHAPE = (2,)


def is_class_path(name: object) -> bool:
    """Whether ``name`` has the form ``package.module:ClassName`` (a syntax check; imports nothing)."""
    return isinstance(name, str) and _CLASS_PATH.fullmatch(name) is not None


def check_prior_name(name: object) -> str:
    """``name`` if it is a built-in prior name or a class path, else :class:`ValueError`."""
    if isinstance(name, str) and (name in PRIORS or is_class_path(name)):
        return name
    raise PriorError(
        f"prior must be one of {', '.join(PRIORS)} or a class of yours as package.module:ClassName; got {name!r}"
    )


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
    """``["df=3", "learn=true", "name=t"]`` -> ``{"df": 3, "learn": True, "name": "t"}``.

    A value is read as JSON where it is a JSON scalar (number, ``true``/``false``, ``null``, a
    quoted string), and kept as text otherwise.
    """
    options: dict[str, OptionValue] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PriorError(f"expected a prior option as key=value, e.g. df=3; got {pair!r}")
        if key in options:
            raise PriorError(f"prior option {key} is given twice")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options[key] = value if isinstance(value, _SCALARS) else text
    return check_prior_options("", options)


def class_path(cls: type) -> str:
    """``module:QualifiedName`` of a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def describe_prior(prior: str | nn.Module) -> str:
    """What a checkpoint records of a VAE's prior: its built-in name, or its class path."""
    return prior if isinstance(prior, str) else class_path(type(prior))


def _check_prior_class(obj: object, path: str) -> type[Prior]:
    if not (isinstance(obj, type) and issubclass(obj, Prior)):
        found = f"the class {class_path(obj)}" if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise PriorError(f"{path} is not a subclass of pyrovae.models.priors.Prior (found {found}): refused")
    if inspect.isabstract(obj):
        raise PriorError(f"{path} is abstract (it does not define {', '.join(sorted(obj.__abstractmethods__))})")
    return obj


def import_prior_class(path: str) -> type[Prior]:
    """Import the class that ``path`` (``package.module:ClassName``) names and check it is a :class:`Prior`.

    Call this only with a path that the person running pyrovae gave, never one read from a file.
    """
    match = _CLASS_PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise PriorError(f"expected a prior class as package.module:ClassName, got {path!r}")
    module_name, qualname = match.groups()
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as error:  # an ImportError, or whatever the module raised while importing
        raise PriorError(
            f"cannot import {module_name} for the prior {path} ({type(error).__name__}: {error}); "
            "is its folder on PYTHONPATH?"
        ) from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise PriorError(f"module {module_name} has no {qualname}, so the prior {path} cannot be found")
        obj = getattr(obj, part)
    return _check_prior_class(obj, path)


def _default_device() -> torch.device:
    """Where new tensors go: ``meta`` while :func:`pyrovae.memory.parameter_count` counts parameters
    (``torch.get_default_device`` is torch >= 2.3)."""
    return torch.empty(0).device


def _raised(error: BaseException) -> str:
    """``Type: message`` of an exception the user's code raised, on one line (and not too long)."""
    text = " ".join(str(error).split())
    text = text if len(text) <= 300 else f"{text[:297]}..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def build_prior(cls: type[Prior], z_dim: int, options: Mapping[str, OptionValue] | None = None) -> Prior:
    """``cls(z_dim, **options)``, with an error that says which call failed and chains what it raised.

    On the ``meta`` device, where :func:`pyrovae.memory.parameter_count` builds the model without
    storage, a constructor that raises anything but a :class:`TypeError` (an option it does not take)
    raises :class:`NotImplementedError`: it cannot be built there, which is not yet an error of the prior.
    """
    options = dict(options or {})
    call = ", ".join([f"z_dim={z_dim}", *(f"{k}={v!r}" for k, v in options.items())])
    try:
        prior = cls(z_dim, **options)
    except TypeError as error:
        raise PriorError(
            f"cannot build the prior {class_path(cls)}({call}): {error}; "
            f"prior options must be keyword arguments of its constructor ({TRACEBACK_HINT})"
        ) from error
    except Exception as error:
        if _default_device().type == "meta":
            raise NotImplementedError(f"the prior {class_path(cls)} cannot be built on the meta device") from error
        raise PriorError(
            f"cannot build the prior {class_path(cls)}({call}): its constructor raised {_raised(error)}; "
            "pyrovae builds a prior class as Class(z_dim, **options), so it must build for the --prior-option "
            f"values given ({TRACEBACK_HINT})"
        ) from error
    if getattr(prior, "z_dim", z_dim) != z_dim:
        raise PriorError(f"the prior {class_path(cls)} has z_dim={prior.z_dim}, the VAE has z_dim={z_dim}")
    return prior


def check_prior(prior: nn.Module, z_dim: int, name: str | None = None) -> nn.Module:
    """``prior`` if it keeps the contract of :class:`~pyrovae.models.priors.Prior` on a small draw,
    else a one-line :class:`PriorError` that names the class (``name``, default its class path), what
    failed and the rule, chaining whatever the prior's code raised.

    The contract: ``prior(batch_shape)`` returns a torch (or Pyro) distribution with batch shape
    ``batch_shape`` and event shape ``(z_dim,)``; its sample has shape ``batch_shape + (z_dim,)`` and
    the dtype and device of the prior's own parameters and buffers (those ``vae.to(device, dtype)``
    moves); its ``log_prob`` of that sample has shape ``batch_shape`` and is finite. Checked with
    ``batch_shape`` :data:`CHECK_BATCH_SHAPE`, without gradients and with the random number
    generator restored afterwards, so a checked run draws what an unchecked one would.
    """
    name = name or class_path(type(prior))
    tensors = [t for t in (*prior.parameters(), *prior.buffers()) if t.is_floating_point()]
    dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
    device = tensors[0].device if tensors else _default_device()
    batch = torch.Size(CHECK_BATCH_SHAPE)
    shapes = (
        f"prior(batch_shape) must return a distribution over z of that batch shape and of event shape "
        f"(z_dim,) = ({z_dim},)"
    )

    def refuse(found: str, rule: str = shapes, error: BaseException | None = None) -> NoReturn:
        hint = f" ({TRACEBACK_HINT})" if error is not None else ""
        raise PriorError(f"the prior {name} breaks the Prior contract: {found}; {rule}{hint}") from error

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        try:
            distribution = prior(batch)
        except Exception as error:
            rule = "prior(batch_shape) must build its distribution without raising, from finite, valid parameters"
            refuse(f"prior(batch_shape={tuple(batch)}) raised {_raised(error)}", rule, error)
        if not isinstance(distribution, torch.distributions.Distribution):
            refuse(f"prior(batch_shape={tuple(batch)}) returned a {type(distribution).__name__}, not a distribution")
        event, batch_found = tuple(distribution.event_shape), tuple(distribution.batch_shape)
        if event != (z_dim,):
            extra = ": it has no event dimension (end it with .to_event(1))" if not event else ""
            refuse(f"asked for batch shape {tuple(batch)}, it returned a distribution of event shape {event}{extra}")
        if batch_found != tuple(batch):
            refuse(f"asked for batch shape {tuple(batch)}, it returned a distribution of batch shape {batch_found}")
        try:
            z = distribution.sample()
            log_p = distribution.log_prob(z)
        except Exception as error:
            refuse(f"drawing from its distribution or scoring the draw raised {_raised(error)}", error=error)
    if tuple(z.shape) != (*batch, z_dim):
        refuse(f"its distribution of batch shape {tuple(batch)} drew a sample of shape {tuple(z.shape)}")
    if z.dtype != dtype or z.device != device:
        refuse(
            f"its sample has dtype {z.dtype} on {z.device}, its parameters and buffers {dtype} on {device}",
            "make every tensor of the distribution from the prior's buffers or parameters (register_buffer, "
            "nn.Parameter), so that it follows the model's device and dtype",
        )
    if tuple(log_p.shape) != tuple(batch):
        refuse(
            f"log_prob of its own sample of shape {tuple(z.shape)} has shape {tuple(log_p.shape)}, not {tuple(batch)}"
        )
    if not bool(torch.isfinite(log_p).all()):
        refuse(
            f"log_prob of its own sample is {log_p.tolist()}",
            "the log-density of a prior must be finite where it draws: are all its parameters finite?",
        )
    return prior


def prior_for_training(name: str, z_dim: int, options: Mapping[str, OptionValue] | None = None) -> str | Prior:
    """What :class:`pyrovae.VAE` takes as ``prior`` for a run the caller configured: a built-in name
    as it is, a class path imported (the caller named it), built with ``options`` and checked by
    :func:`check_prior` (not on the ``meta`` device, where no value can be read)."""
    check_prior_name(name)
    check_prior_options(name, options or {})
    if name in PRIORS:
        return name
    prior = build_prior(import_prior_class(name), z_dim, options)
    return prior if _default_device().type == "meta" else check_prior(prior, z_dim, name)


def rebuild_prior(
    recorded: object,
    z_dim: int,
    options: Mapping[str, OptionValue] | None = None,
    named: str | type | nn.Module | None = None,
    trust: bool = False,
    source: str = "the checkpoint",
) -> str | nn.Module:
    """The prior of a saved VAE, for :class:`pyrovae.VAE`, under the rule of this module.

    :param recorded: the prior the checkpoint records (a built-in name or a class path).
    :param options: the options recorded with it.
    :param named: what the caller names: a built-in name or class path (``--prior``), a
        :class:`Prior` subclass, or a prior module already built. It must name the recorded class
        (the same class name; the module may have moved).
    :param bool trust: import the recorded class path without the caller naming it.
    :param str source: what the record came from, for error messages.
    """
    if isinstance(recorded, str) and recorded in PRIORS:
        if named is not None and named != recorded:
            raise PriorError(f"{source} has the built-in prior {recorded!r}, but the prior named is {_name_of(named)}")
        return recorded
    if not is_class_path(recorded):
        raise PriorError(f"{source} records the prior {recorded!r}, which is neither built in nor a class path")
    recorded = str(recorded)
    if named is None:
        if not trust:
            script = recorded.startswith("__main__:")  # a script's class: it has to move to a module first
            path = f"package.module:{recorded.partition(':')[2]}" if script else recorded
            raise PriorError(
                f"{source} was trained with the prior class {recorded}{' (a script run as __main__)' if script else ''}"
                f"; pyrovae imports a class that a run names only when you name it too: pass --prior {path} "
                "or --trust-prior (in Python: load_vae(..., prior=the class))"
            )
        named = recorded
    recorded_name = recorded.partition(":")[2]
    mismatch = f"{source} was trained with the prior class {recorded}, but the prior named is {_name_of(named)}"
    if isinstance(named, str) and named in PRIORS:
        raise PriorError(mismatch)
    if isinstance(named, nn.Module):
        cls, prior = _check_prior_class(type(named), _name_of(named)), named
    else:
        cls = import_prior_class(named) if isinstance(named, str) else _check_prior_class(named, _name_of(named))
        prior = None
    if cls.__qualname__ != recorded_name:
        raise PriorError(mismatch)
    return prior if prior is not None else build_prior(cls, z_dim, options)


def _name_of(named: object) -> str:
    if isinstance(named, str):
        return repr(named)
    return class_path(named if isinstance(named, type) else type(named))
