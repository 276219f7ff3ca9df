"""``--quiet`` and ``--verbose``, on the group (``pyrovae --quiet fit ...``) or on a command
(``pyrovae fit --quiet ...``): the level of the ``pyrovae`` logger, through which the library
reports (:mod:`pyrovae.reporting`)."""

from __future__ import annotations

from collections.abc import Callable

import click

__all__ = ["verbosity_options"]


def _verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        from ..reporting import set_verbosity

        ctx.meta["pyrovae.verbosity"] = param.name  # (read by the group, which configures the logger)
        set_verbosity(str(param.name))
    return value


def verbosity_options(command: Callable) -> Callable:
    """``--quiet`` (warnings and errors only) and ``--verbose`` (also debugging detail), on the group
    (``pyrovae --quiet fit ...``) or on a command (``pyrovae fit --quiet ...``)."""
    quiet = click.option(
        "--quiet", is_flag=True, expose_value=False, callback=_verbosity,
        help="Say only warnings and errors (no start line, no line per epoch).",
    )  # fmt: skip
    verbose = click.option(
        "--verbose", is_flag=True, expose_value=False, callback=_verbosity, help="Also say debugging detail."
    )
    return quiet(verbose(command))
