"""Model kinds: the registry of built-in models (:data:`MODELS`) and a model class of the user's own,
named by its class path ``package.module:ClassName``.

A model of yours subclasses :class:`~pyrovae.models.base.LatentVariableModel` (a Pyro ``model``
and ``guide``, and ``hparams``); ``examples/custom_model.py`` writes one. :func:`build_model`
builds it for training (``cls(x_dim, **options)``: what ``--model package.module:ClassName``
calls), :func:`pyrovae.fit` and :func:`pyrovae.evaluate` take it as they take a :class:`pyrovae.VAE`,
and a checkpoint records its :attr:`~pyrovae.models.base.LatentVariableModel.kind` (the class path)
and :meth:`~pyrovae.models.base.LatentVariableModel.hparams`.

Loading follows the rule of :mod:`pyrovae.models.prior_spec` (:mod:`pyrovae.models.class_path`):
pyrovae imports a class only when the person running it names that class, never on the word of a
file. A checkpoint whose model is not built in is rebuilt only when the caller names the class
again (``model=`` in :func:`pyrovae.load_vae`: the class or its path), or explicitly trusts the
recorded path (``trust_model=True``). The class must subclass
:class:`~pyrovae.models.base.LatentVariableModel`; anything else is refused with one line and never
called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import ModelError
from ..spec.names import check_model_name, register_name
from .base import LatentVariableModel
from .class_path import (
    build_instance,
    check_class,
    class_path,
    import_class,
    is_class_path,
    name_of,
    resolve_recorded_class,
)
from .hierarchical import HierarchicalVAE
from .linear_gaussian import LinearGaussianVAE
from .vae import VAE

__all__ = [
    "MODELS",
    "check_model_name",
    "import_model_class",
    "model_class",
    "build_model",
    "recorded_model_class",
    "check_hparams",
    "register_model",
]

#: built-in model kinds -> classes; a checkpoint records one of these, or a class path
MODELS: dict[str, type[LatentVariableModel]] = {
    VAE.kind: VAE,
    HierarchicalVAE.kind: HierarchicalVAE,
    LinearGaussianVAE.kind: LinearGaussianVAE,
}


def register_model(model: type[LatentVariableModel]) -> type[LatentVariableModel]:
    """Make ``--model KIND`` train ``model(x_dim, **options)`` (``--model-option KEY=VALUE``), where
    ``KIND`` is the class's :attr:`~pyrovae.models.base.LatentVariableModel.kind`, set in its body
    as a plain name; checkpoints record it, and a run is read back once the module that registers
    it is imported again. Returns ``model``, so it can decorate the class."""
    check_class(model, name_of(model), LatentVariableModel, ModelError)
    MODELS[register_name("model", model.__dict__.get("kind"), model.__module__)] = model
    return model


_HOW_TO_NAME = "pass --model {path} or --trust-model (in Python: load_vae(..., model=the class))"


def import_model_class(path: str) -> type[LatentVariableModel]:
    """Import the class that ``path`` (``package.module:ClassName``) names and check that it is a
    :class:`~pyrovae.models.base.LatentVariableModel` (refused in one line otherwise, never called).

    Call this only with a path that the person running pyrovae gave, never one read from a file.
    """
    return import_class(path, LatentVariableModel, "model", ModelError)


def model_class(name: str) -> type[LatentVariableModel]:
    """The class of a model the caller names: a built-in kind from :data:`MODELS`, or a class path,
    imported (:func:`import_model_class`)."""
    check_model_name(name)
    return MODELS[name] if name in MODELS else import_model_class(name)


def build_model(
    name: str | type[LatentVariableModel], x_dim: int, options: Mapping[str, Any] | None = None
) -> LatentVariableModel:
    """The model to train, from what the person running pyrovae named: ``cls(x_dim, **options)``.

    This is what a command-line option ``--model package.module:ClassName`` (with options such as
    ``z_dim=8``) calls; the class path is imported because the caller named it.

    :param name: a class path ``package.module:ClassName``, a built-in kind from :data:`MODELS`, or
        a :class:`~pyrovae.models.base.LatentVariableModel` subclass.
    :param int x_dim: the data dimension, the constructor's first argument.
    :param options: the constructor's other keyword arguments, plain JSON values.
    :raises ModelError: a name that is neither, a class that is not a model (not called), or a
        constructor that refuses the options, in one line.
    """
    if isinstance(name, str):
        cls = model_class(name)
    else:
        cls = check_class(name, name_of(name), LatentVariableModel, ModelError)
    options = dict(options or {})
    check_hparams(options, f"the options of {class_path(cls)}")
    return build_instance(cls, ("x_dim", x_dim), options, "model", ModelError)


def recorded_model_class(
    recorded: object, named: str | type | None = None, trust: bool = False, source: str = "the checkpoint"
) -> type[LatentVariableModel]:
    """The class of a saved model, under the rule of this module.

    :param recorded: the kind the checkpoint records (a key of :data:`MODELS` or a class path).
    :param named: what the caller names: a built-in kind, a class path, or the class. It must name
        the recorded class (the same class name; the module may have moved).
    :param bool trust: import the recorded class path without the caller naming it.
    :param str source: what the record came from, for error messages.
    """
    if isinstance(recorded, str) and recorded in MODELS:
        if named is not None and named != recorded and named is not MODELS[recorded]:
            raise ModelError(f"{source} holds the built-in model {recorded!r}, but the model named is {name_of(named)}")
        return MODELS[recorded]
    if not is_class_path(recorded):
        raise ModelError(
            f"{source} holds a model of kind {recorded!r}; expected one of {', '.join(map(repr, MODELS))} "
            "(with those of the plugins imported now: --plugin MODULE) or a class path package.module:ClassName"
        )
    if isinstance(named, str) and named in MODELS:
        raise ModelError(f"{source} was trained with the model class {recorded}, but the model named is {named!r}")
    if named is not None and not isinstance(named, (str, type)):
        raise ModelError(f"model must be a class or its path package.module:ClassName, got a {type(named).__name__}")
    base, how = LatentVariableModel, _HOW_TO_NAME
    return resolve_recorded_class(str(recorded), named, trust, source, base, "model", ModelError, how)[0]


def check_hparams(values: object, what: str) -> dict[str, Any]:
    """``values`` if it is a dict with string keys of plain JSON values (what a checkpoint loaded with
    ``weights_only=True`` can hold), else :class:`ModelError` naming the first other value."""
    if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
        raise ModelError(f"{what} must be a dict with string keys, got {type(values).__name__}")
    try:
        json.dumps(values, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise ModelError(f"{what} must hold plain JSON values (numbers, text, lists, dicts, None): {error}") from None
    return values
