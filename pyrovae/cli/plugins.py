"""The command line's plugin options: ``--plugin`` (import a module of yours that registers names before
any other option is read), ``--trust-plugins`` (import a run's recorded plugins without naming them),
``--objective-option`` (an option of an objective a plugin registered), and the check of a name
against the registries (built-in names, and those the plugins registered).

Nothing here imports torch: a plugin does, when it is named.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import click

from ..errors import PyrovaeError
from ..spec.names import names_of, parse_options
from .group import checked_by


def _import(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    if value:
        from ..spec.plugins import import_plugins

        try:
            import_plugins(value)
        except PyrovaeError as error:
            if _traceback():
                raise
            raise click.ClickException(str(error)) from None
    ctx.meta["pyrovae.plugins"] = value
    return value


def _traceback() -> bool:
    from .group import traceback_wanted

    return traceback_wanted()


def _help(command: str) -> str:
    return (
        "Import this module of yours first (repeatable): it registers a prior, objective, model or engine "
        "(pyrovae.register_prior, register_objective, register_model, register_engine) whose name the other "
        + ("options may then use; config.json records it." if command == "fit" else "options may use; name the "
           "plugins of a run trained with them again here (or pass --trust-plugins).")
    )  # fmt: skip


def plugin_option(command: str, expose: bool = True) -> Callable[[Callable], Callable]:
    """``--plugin PACKAGE.MODULE`` (repeatable), imported before the command's other options are read."""
    return click.option(
        "--plugin", "plugins", multiple=True, default=(), is_eager=True, callback=_import, expose_value=expose,
        metavar="PACKAGE.MODULE", help=_help(command),
    )  # fmt: skip


def _trust(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta["pyrovae.trust_plugins"] = value
    return value


TRUST_PLUGINS = click.option(
    "--trust-plugins",
    is_flag=True,
    callback=_trust,
    expose_value=False,
    help="Import the plugins that the run records without naming them with --plugin (only for runs you trust).",
)


def run_plugins(run_dir: str | Path) -> None:
    """Import the plugins the run in ``run_dir`` records, as its command's ``--plugin`` and
    ``--trust-plugins`` allow (:func:`pyrovae.spec.plugins.check_run_plugins`)."""
    from ..spec.plugins import check_run_plugins

    try:
        recorded = json.loads((Path(run_dir) / "config.json").read_text()).get("plugins", [])
    except (OSError, ValueError, AttributeError):
        return  # (the command says what is wrong with the run directory)
    if recorded:
        meta = click.get_current_context().meta
        named, trust = meta.get("pyrovae.plugins", ()), meta.get("pyrovae.trust_plugins", False)
        check_run_plugins(recorded, named, trust, f"the run in {run_dir}")


def registered(kind: str) -> Callable[[click.Context, click.Parameter, str], str]:
    """A callback that takes a built-in or registered name of ``kind``."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        if value in names_of(kind):
            return value
        raise click.BadParameter(f"expected one of {', '.join(names_of(kind))}, got {value!r}")

    return check


_objective_options = checked_by(lambda value: parse_options(value, "objective"))


OBJECTIVE_OPTION = click.option(
    "--objective-option",
    "objective_options",
    multiple=True,
    callback=_objective_options,
    metavar="KEY=VALUE",
    help="An option of an objective a plugin registered (repeatable; [objective.NAME] in a run file).",
)
