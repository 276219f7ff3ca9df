"""The registry of data sets: a name (``digits``), a prefix (``folder:PATH``) or a file suffix
(``.npy``) bound to the class that loads it (:func:`register_dataset`).

The table holds classes, or ``"package.module:ClassName"`` strings for the built-in ones, which are
imported only when a data set is loaded: the command line checks ``--dataset`` against this table
without importing torch. A class registered here is a :class:`pyrovae.data.registry.DatasetSource`;
``pyrovae.data.register_dataset`` is this function.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import DataError

__all__ = ["register_dataset", "find_dataset", "dataset_class", "dataset_names", "dataset_defaults", "describe_names"]

_BUILT_IN = "pyrovae.data.sources"
#: name, ``prefix:`` or ``.suffix`` -> the class (or where the built-in class lives)
_REGISTRY: dict[str, type | str] = {
    "digits": f"{_BUILT_IN}:Digits",
    "mnist": f"{_BUILT_IN}:Mnist",
    "fashion-mnist": f"{_BUILT_IN}:FashionMnist",
    "cifar10": f"{_BUILT_IN}:Cifar10",
    "celeba": "pyrovae.data.celeba:CelebA",
    "folder:": "pyrovae.data.folders:ImageFolder",
    ".npy": f"{_BUILT_IN}:NpyFile",
    ".npz": f"{_BUILT_IN}:NpzFile",
}
#: run-spec options (flat names) a data set sets where the user left them at their defaults
_DEFAULTS: dict[str, dict[str, Any]] = {
    "celeba": {"arch": "conv", "likelihood": "discretized-logistic", "image_size": 64},
}


def register_dataset(name: str, cls: type | str, *, defaults: dict[str, Any] | None = None) -> None:
    """Make ``--dataset name`` load with ``cls``.

    :param str name: a plain name (``"my-set"``), a prefix ending in ``:`` (``"shards:"``, so that
        ``--dataset shards:ARGUMENT`` reaches the class with ``ARGUMENT``), or a file suffix starting
        with ``.`` (``".h5"``: any path ending so).
    :param cls: a subclass of :class:`pyrovae.data.registry.DatasetSource`, or where one lives as
        ``"package.module:ClassName"`` (imported when the data set is loaded).
    :param dict defaults: run options (flat names, e.g. ``{"arch": "conv"}``) this data set sets
        where the command line leaves them at their defaults.
    :raises DataError: for a name of another form, or one already registered to another class.
    """
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise DataError(f"a data set name must be a word, a prefix ending in ':' or a suffix like '.h5'; got {name!r}")
    if name.startswith(".") and (len(name) < 2 or ":" in name):
        raise DataError(f"a data set suffix is a dot and letters, like '.h5'; got {name!r}")
    if ":" in name[:-1]:
        raise DataError(f"a data set prefix has one ':' at its end, like 'shards:'; got {name!r}")
    if not isinstance(cls, (type, str)):
        raise DataError(f"register_dataset needs a class (or 'package.module:ClassName') for {name!r}, got {cls!r}")
    known = _REGISTRY.get(name)
    if known is not None and known is not cls and known != cls:
        raise DataError(f"data set {name!r} is already registered to {_label(known)}: choose another name")
    _REGISTRY[name] = cls
    if defaults:
        _DEFAULTS[name] = dict(defaults)


def _label(cls: type | str) -> str:
    return cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"


def find_dataset(dataset: str) -> tuple[str, str | None]:
    """``(key, argument)`` of ``dataset``: ``("digits", None)``, ``("folder:", "PATH")``,
    ``(".npy", "data/x.npy")``; a :class:`DataError` naming what is known otherwise."""
    if not isinstance(dataset, str) or not dataset:
        raise DataError(f"dataset must be a name or a path, got {dataset!r}")
    if dataset in _REGISTRY and not dataset.endswith(":") and not dataset.startswith("."):
        return dataset, None
    prefix, colon, rest = dataset.partition(":")
    if colon and f"{prefix}:" in _REGISTRY:
        if not rest:
            raise DataError(f"dataset {dataset!r} names no path: write {prefix}:PATH")
        return f"{prefix}:", rest
    suffix = "." + dataset.rsplit(".", 1)[-1].lower() if "." in dataset.rsplit("/", 1)[-1] else ""
    if suffix in _REGISTRY:
        return suffix, dataset
    raise DataError(f"dataset must be {describe_names()}; got {dataset!r}")


def describe_names() -> str:
    """The forms ``--dataset`` takes, for messages and ``--help``."""
    names = [k for k in _REGISTRY if not k.endswith(":") and not k.startswith(".")]
    prefixes = [f"{k}PATH" for k in _REGISTRY if k.endswith(":")]
    suffixes = "/".join(k for k in _REGISTRY if k.startswith("."))
    return f"one of {', '.join(names)}, {', '.join(prefixes)} or a path to a {suffixes} file"


def dataset_names() -> tuple[str, ...]:
    """Every registered name, prefix and suffix."""
    return tuple(_REGISTRY)


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """The run options ``dataset`` sets where the user left the defaults (``{}`` for most)."""
    try:
        key, _ = find_dataset(dataset)
    except DataError:
        return {}
    return dict(_DEFAULTS.get(key, {}))


def dataset_class(key: str) -> type:
    """The class registered under ``key`` (imported now if the table holds where it lives)."""
    cls = _REGISTRY[key]
    if isinstance(cls, str):
        module, _, name = cls.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            raise DataError(f"data set {key!r} is registered to {_label(_REGISTRY[key])}, which cannot be imported "
                            f"({error}): install it or register another class") from None  # fmt: skip
    return cls
