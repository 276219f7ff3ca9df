"""A class of the user's own, named by its class path ``package.module:ClassName``: parse, import,
check, and the rule that decides when a recorded path may be imported.

The rule (for priors, :mod:`~pyrovae.models.prior_spec`, and models, :mod:`~pyrovae.models.model_spec`):
pyrovae imports a class only when the person running it names that class, never on the word of a
file. A checkpoint that records a class path is rebuilt only when the caller names the class again
(its path, the class, or an instance) or explicitly trusts the recorded path. A class that does not
subclass the base asked for is refused in one line, and never called.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import TRACEBACK_HINT
from ..spec.names import CLASS_PATH as _CLASS_PATH
from ..spec.names import is_class_path

__all__ = [
    "is_class_path",
    "class_path",
    "import_class",
    "check_class",
    "build_instance",
    "resolve_recorded_class",
    "name_of",
]


def class_path(cls: type) -> str:
    """``module:QualifiedName`` of a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def name_of(named: object) -> str:
    """How messages name what a caller named: a string quoted, a class or an instance by class path."""
    if isinstance(named, str):
        return repr(named)
    return class_path(named if isinstance(named, type) else type(named))


def check_class(obj: object, path: str, base: type, error: type[Exception]) -> type:
    """``obj`` if it is a concrete subclass of ``base``, else ``error`` in one line (nothing is called)."""
    if not (isinstance(obj, type) and issubclass(obj, base)):
        found = f"the class {class_path(obj)}" if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise error(f"{path} is not a subclass of {base.__module__}.{base.__qualname__} (found {found}): refused")
    if inspect.isabstract(obj):
        raise error(f"{path} is abstract (it does not define {', '.join(sorted(obj.__abstractmethods__))})")
    return obj


def import_class(path: str, base: type, what: str, error: type[Exception]) -> type:
    """Import the class that ``path`` (``package.module:ClassName``) names and check it subclasses ``base``.

    Call this only with a path that the person running pyrovae gave, never one read from a file.

    :param str what: what the class is, for messages (``"prior"``, ``"model"``).
    """
    match = _CLASS_PATH.fullmatch(path) if isinstance(path, str) else None
    if match is None:
        raise error(f"expected a {what} class as package.module:ClassName, got {path!r}")
    module_name, qualname = match.groups()
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or whatever the module raised while importing
        raise error(
            f"cannot import {module_name} for the {what} {path} ({type(exc).__name__}: {exc}); "
            "is its folder on PYTHONPATH?"
        ) from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise error(f"module {module_name} has no {qualname}, so the {what} {path} cannot be found")
        obj = getattr(obj, part)
    return check_class(obj, path, base, error)


def default_device() -> torch.device:
    """Where new tensors go: ``meta`` while :func:`pyrovae.memory.meta_module` sizes a model
    (``torch.get_default_device`` is torch >= 2.3)."""
    return torch.empty(0).device


def raised(error: BaseException) -> str:
    """``Type: message`` of an exception the user's code raised, on one line (and not too long)."""
    text = " ".join(str(error).split())
    text = text if len(text) <= 300 else f"{text[:297]}..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def build_instance(
    cls: type, first: tuple[str, Any], options: Mapping[str, Any], what: str, error: type[Exception]
) -> Any:
    """``cls(value, **options)`` for ``first = (name, value)``, with an error that says which call
    failed and chains what the user's constructor raised (:data:`~pyrovae.errors.TRACEBACK_HINT`).

    On the ``meta`` device, where a model is sized without storage, a constructor that raises anything
    but a :class:`TypeError` (an option it does not take) raises :class:`NotImplementedError`: it
    cannot be built there, which is not yet an error of the class.
    """
    call = ", ".join([f"{first[0]}={first[1]}", *(f"{k}={v!r}" for k, v in options.items())])
    try:
        return cls(first[1], **options)
    except TypeError as exc:
        raise error(
            f"cannot build the {what} {class_path(cls)}({call}): {exc}; "
            f"{what} options must be keyword arguments of its constructor ({TRACEBACK_HINT})"
        ) from exc
    except Exception as exc:
        if default_device().type == "meta":
            raise NotImplementedError(f"the {what} {class_path(cls)} cannot be built on the meta device") from exc
        raise error(
            f"cannot build the {what} {class_path(cls)}({call}): its constructor raised {raised(exc)}; "
            f"pyrovae builds a {what} class as Class({first[0]}, **options), so it must build for the "
            f"--{what}-option values given ({TRACEBACK_HINT})"
        ) from exc


def resolve_recorded_class(
    recorded: str,
    named: object,
    trust: bool,
    source: str,
    base: type,
    what: str,
    error: type[Exception],
    how_to_name: str,
) -> tuple[type, Any]:
    """The class a checkpoint records as ``recorded`` (a class path), under the rule of this module.

    :param named: what the caller names: a class path, a class, an instance, or ``None``. It must
        name the recorded class (the same class name; the module may have moved).
    :param bool trust: import ``recorded`` without the caller naming it.
    :param str how_to_name: how to name the class, for the refusal, with ``{path}`` for the class
        path, e.g. ``"pass --prior {path} or --trust-prior"``.
    :returns: ``(the class, the instance named or None)``.
    """
    if named is None:
        if not trust:
            script = recorded.startswith("__main__:")  # a script's class: it has to move to a module first
            path = f"package.module:{recorded.partition(':')[2]}" if script else recorded
            note = " (a script run as __main__)" if script else ""
            raise error(
                f"{source} was trained with the {what} class {recorded}{note}"
                f"; pyrovae imports a class that a run names only when you name it too: "
                + how_to_name.format(path=path)
            )
        named = recorded
    if isinstance(named, type):
        cls, instance = check_class(named, name_of(named), base, error), None
    elif isinstance(named, str):
        cls, instance = import_class(named, base, what, error), None
    else:
        cls, instance = check_class(type(named), name_of(named), base, error), named
    if cls.__qualname__ != recorded.partition(":")[2]:
        raise error(f"{source} was trained with the {what} class {recorded}, but the {what} named is {name_of(named)}")
    return cls, instance
