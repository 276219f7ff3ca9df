"""pyrovae's own errors, and the argument checks every layer shares (imports nothing from pyrovae).

Every error pyrovae raises about its input is a :class:`PyrovaeError` (a :class:`ValueError`, so
``except ValueError`` keeps working); the command line turns exactly these into one line and a
non-zero exit, and lets anything else (a bug, an error inside Pyro or torch) show its traceback.
An error caused by the user's own code (a prior class of theirs) chains that code's exception and
ends with :data:`TRACEBACK_HINT`: with ``PYROVAE_TRACEBACK=1`` the command line shows both tracebacks.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = [
    "renamed_names",
    "TRACEBACK_VARIABLE",
    "TRACEBACK_HINT",
    "PyrovaeError",
    "DependencyError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunDirectoryError",
    "RunFileError",
    "NotEnoughMemoryError",
    "PriorError",
    "ModelError",
    "DistributedError",
    "positive_int",
    "import_optional",
]

#: the environment variable that, set to 1, makes the command line show an error's traceback (with
#: that of the user's code it chains) instead of one line
TRACEBACK_VARIABLE = "PYROVAE_TRACEBACK"
#: how an error that chains the user's exception ends
TRACEBACK_HINT = f"run again with {TRACEBACK_VARIABLE}=1 for the traceback"


class PyrovaeError(ValueError):
    """Bad input to pyrovae: the message says what was expected, what was found and what to do."""


class ConfigError(PyrovaeError):
    """An option or argument that pyrovae cannot use."""


class DataError(PyrovaeError):
    """A data set or data file that cannot be used as given."""


class RunDirectoryError(PyrovaeError):
    """A run directory cannot be used now: another process holds it, or the operating system refused
    to create, read or write one of its files (disk full, read-only, name too long...)."""


class RunFileError(PyrovaeError):
    """A run file (``config.json``, ``metrics.jsonl``, ``checkpoint.pt``) is missing, unreadable, or
    parses but does not have the structure pyrovae writes."""


class CheckpointError(RunFileError):
    """A checkpoint that cannot be read, or holds something other than a pyrovae checkpoint."""


class NotEnoughMemoryError(PyrovaeError):
    """A setting asks for more memory than the device has (estimated up front, or an allocation failed)."""


class PriorError(ConfigError):
    """A prior that cannot be built, trained or reported on as asked."""


class ModelError(ConfigError):
    """A model class that cannot be named, built, saved or rebuilt as asked."""


class DistributedError(PyrovaeError):
    """Training on several processes cannot go on: a rank failed, died or stopped answering."""


class PyrovaeWarning(UserWarning):
    """Something pyrovae did with the input that the user should know of (the command line says it in
    one line of its own, ``Warning: ...``)."""


class DataWarning(PyrovaeWarning):
    """A data set was used after a conversion its file did not ask for (e.g. float labels as integers)."""


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int (not a bool) ``>= minimum``, else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return value


class DependencyError(PyrovaeError):
    """An optional library a command needs is missing or broken (it names the library and how to install it)."""


def import_optional(name: str, needed_by: str, extra: str) -> ModuleType:
    """The module ``name`` of an optional library, or a one-line :class:`DependencyError` that names
    it, what needs it and the extra that installs it (also for a library broken while importing)."""
    try:
        return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 (missing, or broken while importing)
        raise DependencyError(
            f"{name} cannot be imported ({type(error).__name__}: {error}): {needed_by} needs it; install it with: "
            f'pip install "pyrovae[{extra}]"'
        ) from None


def renamed_names(module: str, renamed: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module's ``__getattr__`` (PEP 562) that still answers to the names of ``renamed`` (old -> new),
    each with a :class:`FutureWarning` naming the new one, and returns the object ``namespace`` holds
    under the new name."""

    def __getattr__(name: str) -> Any:  # noqa: N807 (a module's __getattr__)
        if name not in renamed:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new = renamed[name]
        warnings.warn(f"{module}.{name} is deprecated: it is now called {new}", FutureWarning, stacklevel=2)
        return namespace[new]

    return __getattr__
