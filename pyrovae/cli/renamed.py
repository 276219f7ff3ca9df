"""Options given a new name: the old spelling keeps working, hidden from ``--help``, and says once, in
one line of pyrovae's own, which name to use instead (a :class:`FutureWarning` that
:func:`~pyrovae.cli.group.deprecations_as_lines` prints)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import click

__all__ = ["renamed_option", "take_renamed"]

_META = "pyrovae.renamed"


def renamed_option(*old: str, new: str, name: str, type: Any = None) -> Callable[[Any], Any]:
    """A hidden option ``old`` (e.g. ``"-n", "--n"``) that stands for the option ``new`` (whose
    parameter is ``name``); :func:`take_renamed` moves its value to ``name``."""

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault(_META, {})[name] = (value, "/".join(old), new)

    return click.option(
        *old, f"renamed_{name}", type=type, default=None, hidden=True, expose_value=False, callback=remember
    )


def take_renamed(options: dict[str, Any], command: str) -> dict[str, Any]:
    """``options`` with the values given under an old spelling moved to their new name, each with a
    :class:`FutureWarning`; the two spellings together are a usage error."""
    ctx = click.get_current_context()
    for name, (value, old, new) in ctx.meta.get(_META, {}).items():
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"{old} and {new} are the same option: give {new} alone")
        warnings.warn(f"{old} of pyrovae {command} is deprecated: use {new} {value}", FutureWarning, stacklevel=2)
        options[name] = value
    return options
