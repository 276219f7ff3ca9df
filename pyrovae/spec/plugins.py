"""Plugins: modules of yours that register a prior, an objective, a model, an engine or a data set when imported.

``pyrovae fit --plugin mypkg.vae_parts`` (or ``plugins = ["mypkg.vae_parts"]`` at the top of a run
file) imports ``mypkg.vae_parts`` before the other options are checked, so the names it registers
(``register_prior``, ``register_objective``, ``register_model``, ``register_engine``,
``pyrovae.data.register_dataset``) are names
the options take. ``config.json`` records the plugins of a run.

The rule that keeps a run directory from running code holds for plugins as for a prior or model
class of yours: ``evaluate``, ``sample``, ``plots`` and ``fit --resume`` import a run's plugins only
when they are named again (``--plugin``) or trusted (``--trust-plugins``), never on the word of
``config.json`` alone (:func:`check_run_plugins`).

This module imports only the standard library: what a plugin imports is its own affair.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence

from ..errors import ConfigError, PyrovaeError
from .datasets import dataset_names
from .names import REGISTERED

__all__ = ["import_plugins", "check_plugin_names", "check_run_plugins", "IMPORTED"]

#: the plugins imported in this process, in order
IMPORTED: list[str] = []
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def check_plugin_names(plugins: object, where: str = "plugins") -> tuple[str, ...]:
    """``plugins`` as a tuple of module names ``package.module`` (a syntax check; imports nothing)."""
    if isinstance(plugins, str) or not isinstance(plugins, Sequence):
        raise ConfigError(f"{where} should be a list of module names such as ['mypkg.parts'], got {plugins!r}")
    for plugin in plugins:
        if not isinstance(plugin, str) or not _MODULE.fullmatch(plugin):
            raise ConfigError(f"{where}: a plugin is a module name such as mypkg.parts, got {plugin!r}")
    return tuple(plugins)


def _registered_by(module: str) -> list[str]:
    """The names that ``module`` (or a module inside it) registered."""
    owned = (owner for names in REGISTERED.values() for owner in names.values())
    return [owner for owner in owned if owner == module or owner.startswith(f"{module}.")]


def _registrations() -> int:
    """How many priors, objectives, models, engines and data sets are registered in this process."""
    return sum(len(names) for names in REGISTERED.values()) + len(dataset_names())


def import_plugins(plugins: Sequence[str], where: str = "--plugin") -> None:
    """Import each module of ``plugins`` (once per process). A module that cannot be imported, that
    fails while registering, or that registers nothing is refused in one line
    (:class:`~pyrovae.errors.ConfigError`, chained to the module's own error)."""
    for plugin in check_plugin_names(plugins, where):
        if plugin in IMPORTED:
            continue
        before = _registrations()
        try:
            importlib.import_module(plugin)
        except PyrovaeError as error:  # a registration refused (a name taken, a class of the wrong kind)
            raise ConfigError(f"{where} {plugin}: {error}") from error
        except Exception as error:  # noqa: BLE001 - the user's module: any error it raises is said in one line
            first = str(error).splitlines()[0] if str(error) else ""
            raise ConfigError(
                f"{where} {plugin} could not be imported ({type(error).__name__}: {first}): check that it is on "
                "PYTHONPATH and imports without error"
            ) from error
        if _registrations() == before and not _registered_by(plugin):
            raise ConfigError(
                f"{where} {plugin} registered nothing: a plugin calls register_prior, register_objective, "
                "register_model, register_engine or register_dataset when it is imported"
            )
        IMPORTED.append(plugin)


def check_run_plugins(
    recorded: object, named: Sequence[str] = (), trust: bool = False, source: str = "the run"
) -> None:
    """Import the plugins a run records (``config.json``'s ``plugins``) under the rule of this module:
    each must be named again (``named``, already imported by ``--plugin``) or ``trust`` must be set;
    otherwise one line says how to name it."""
    recorded = check_plugin_names(recorded or [], f"{source}'s plugins")
    missing = [plugin for plugin in recorded if plugin not in named]
    if missing and not trust:
        flags = " ".join(f"--plugin {plugin}" for plugin in missing)
        raise ConfigError(
            f"{source} was trained with the plugin {', '.join(missing)}, which pyrovae imports only when you name it: "
            f"pass {flags} (or --trust-plugins, for a run you trust)"
        )
    import_plugins([*missing], "the run's plugin")
