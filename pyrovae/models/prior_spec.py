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

This module is the one place that parses, checks, imports and describes such priors.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..errors import PriorError
from ..spec.names import (
    OptionValue,
    check_prior_name,
    check_prior_options,
    parse_options,
    parse_prior_options,
    register_name,
)
from .class_path import (
    build_instance,
    class_path,
    default_device,
    import_class,
    is_class_path,
    name_of,
    resolve_recorded_class,
)
from .prior_check import check_prior
from .priors import PRIORS, Prior

__all__ = [
    "is_class_path",
    "check_prior_name",
    "check_prior_options",
    "check_prior",
    "parse_prior_options",
    "parse_options",
    "class_path",
    "describe_prior",
    "import_prior_class",
    "build_prior",
    "prior_for_training",
    "rebuild_prior",
    "register_prior",
    "REGISTERED_PRIORS",
]

#: priors that plugins registered (:func:`register_prior`): name -> class, built as ``cls(z_dim, **options)``
REGISTERED_PRIORS: dict[str, type[Prior]] = {}


def register_prior(name: str, prior: type[Prior]) -> type[Prior]:
    """Make ``--prior NAME`` train with ``prior(z_dim, **options)`` (``--prior-option KEY=VALUE``):
    ``prior`` is a :class:`Prior` subclass; checkpoints record ``NAME``, and a run is read back
    once the module that registers it is imported again. Returns ``prior``."""
    if not (isinstance(prior, type) and issubclass(prior, Prior)):
        raise PriorError(f"register_prior takes a subclass of pyrovae.models.Prior, got {prior!r}")
    REGISTERED_PRIORS[register_name("prior", name, prior.__module__)] = prior
    return prior


def describe_prior(prior: str | nn.Module) -> str:
    """What a checkpoint records of a VAE's prior: its built-in or registered name, or its class path."""
    if isinstance(prior, str):
        return prior
    names = [name for name, cls in REGISTERED_PRIORS.items() if cls is type(prior)]
    return names[0] if names else class_path(type(prior))


def import_prior_class(path: str) -> type[Prior]:
    """Import the class that ``path`` (``package.module:ClassName``) names and check it is a :class:`Prior`.

    Call this only with a path that the person running pyrovae gave, never one read from a file.
    """
    return import_class(path, Prior, "prior", PriorError)


def build_prior(cls: type[Prior], z_dim: int, options: Mapping[str, OptionValue] | None = None) -> Prior:
    """``cls(z_dim, **options)``, with an error that says which call failed."""
    prior = build_instance(cls, ("z_dim", z_dim), dict(options or {}), "prior", PriorError)
    if getattr(prior, "z_dim", z_dim) != z_dim:
        raise PriorError(f"the prior {class_path(cls)} has z_dim={prior.z_dim}, the VAE has z_dim={z_dim}")
    return prior


def prior_for_training(name: str, z_dim: int, options: Mapping[str, OptionValue] | None = None) -> str | Prior:
    """What :class:`pyrovae.VAE` takes as ``prior`` for a run the caller configured: a built-in name
    as it is, a class path imported (the caller named it), built with ``options`` and checked
    against the Prior contract (:func:`~pyrovae.models.prior_check.check_prior`; not on the ``meta``
    device, where no value can be read)."""
    check_prior_name(name)
    check_prior_options(name, options or {})
    if name in PRIORS:
        return name
    cls = REGISTERED_PRIORS[name] if name in REGISTERED_PRIORS else import_prior_class(name)
    prior = build_prior(cls, z_dim, options)
    return prior if default_device().type == "meta" else check_prior(prior, z_dim, name)


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
            raise PriorError(f"{source} has the built-in prior {recorded!r}, but the prior named is {name_of(named)}")
        return recorded
    if isinstance(recorded, str) and recorded in REGISTERED_PRIORS:
        if named is not None and named != recorded and named is not REGISTERED_PRIORS[recorded]:
            raise PriorError(f"{source} has the prior {recorded!r}, but the prior named is {name_of(named)}")
        return build_prior(REGISTERED_PRIORS[recorded], z_dim, options)
    if not is_class_path(recorded):
        raise PriorError(
            f"{source} records the prior {recorded!r}, which is neither built in nor a class path, nor a name that a "
            "plugin imported now registers (--plugin MODULE)"
        )
    if isinstance(named, str) and named in PRIORS:
        raise PriorError(f"{source} was trained with the prior class {recorded}, but the prior named is {named!r}")
    how = "pass --prior {path} or --trust-prior (in Python: load_vae(..., prior=the class))"
    cls, prior = resolve_recorded_class(str(recorded), named, trust, source, Prior, "prior", PriorError, how)
    return prior if prior is not None else build_prior(cls, z_dim, options)
