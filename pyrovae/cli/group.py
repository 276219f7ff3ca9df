"""The ``pyrovae`` command group, and what its commands share: option callbacks, the options that
name a run's own classes again, and the turning of pyrovae's errors into one line.

Nothing here imports torch or Pyro: the option choices and defaults come from :mod:`pyrovae.spec`,
so ``pyrovae --help``, ``--version`` and a mistyped option answer at once; a command imports the
library when it runs.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import TRACEBACK_VARIABLE, PyrovaeError
from ..spec import RunSpec
from ..spec.datasets import find_dataset
from ..spec.names import (
    DEPRECATED_ELBOS,
    DEVICES,
    SEED_RANGE,
    check_device,
    check_model_name,
    check_prior_name,
    names_of,
    parse_options,
    parse_prior_options,
)
from .verbosity import verbosity_options

#: the default of every ``fit`` option, from its owner (the run spec): never restated here
DEFAULTS = RunSpec().to_flat()


def hidden_dims(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in value.split(","))
    except ValueError:
        example = "32,64" if param.name == "channels" else "400 or 512,256"
        raise click.BadParameter(
            f"expected comma-separated positive integers such as {example}; got {value!r}"
        ) from None
    if not dims or min(dims) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return dims


def dataset_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return value
    try:  # (the registry of pyrovae.spec.datasets: names, prefixes, suffixes; no torch imported)
        find_dataset(value)
    except PyrovaeError as error:
        raise click.BadParameter(str(error).replace("dataset must be", "expected")) from None
    return value


def elbo_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in names_of("objective") or value in DEPRECATED_ELBOS:  # pyrovae 0.1's: FitConfig warns and splits them
        return value
    raise click.BadParameter(f"expected one of {', '.join(names_of('objective'))}, got {value!r}")


def device_name_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_device(value)  # the one check of a device name (pyrovae.train.options)
    except PyrovaeError:
        raise click.BadParameter(f"expected one of {', '.join(DEVICES)} or cuda:N, got {value!r}") from None


def device_option(default: str) -> Callable[[Callable], Callable]:
    return click.option(
        "--device", default=default, show_default=True, callback=device_name_option, help="cpu, cuda, cuda:N or auto."
    )


def checked_by(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that passes an option's value through ``check`` (one of pyrovae's own
    checks) and says its :class:`~pyrovae.errors.PyrovaeError` as click's usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        try:
            return check(value)
        except PyrovaeError as error:
            raise click.BadParameter(str(error)) from None

    return callback


prior_name_option = checked_by(lambda value: value if value is None else check_prior_name(value))
prior_options_option = checked_by(parse_prior_options)
model_options_option = checked_by(lambda value: parse_options(value, "model"))
model_name_option = checked_by(lambda value: value if value is None else check_model_name(value))


def fit_option(
    flag: str, kind: click.ParamType | type | None, help: str, **extra: object
) -> Callable[[Callable], Callable]:
    """A ``fit`` option with its default from :class:`FitConfig` (the option's owner), shown in ``--help``."""
    default = DEFAULTS[flag[2:].replace("-", "_")]
    return click.option(flag, type=kind, default=default, show_default=True, help=help, **extra)  # type: ignore[call-overload]


PRIOR_NAMED = click.option(
    "--prior",
    default=None,
    callback=prior_name_option,
    metavar="PACKAGE.MODULE:CLASS",
    help="For a run trained with a prior class of yours: name that class again (a run directory alone never "
    "makes pyrovae import code it names).",
)
TRUST_PRIOR = click.option(
    "--trust-prior",
    is_flag=True,
    help="Import the prior class that the run records without naming it with --prior (only for runs you trust).",
)
MODEL_NAMED = click.option(
    "--model",
    default=None,
    callback=model_name_option,
    metavar="PACKAGE.MODULE:CLASS",
    help="For a run trained with a model class of yours: name that class again (a run directory alone never "
    "makes pyrovae import code it names).",
)
TRUST_MODEL = click.option(
    "--trust-model",
    is_flag=True,
    help="Import the model class that the run records without naming it with --model (only for runs you trust).",
)


def _threads(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None:
        import torch

        torch.set_num_threads(value)
    return value


THREADS = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    callback=_threads,
    expose_value=False,
    help="CPU threads torch computes with (default: torch's choice, about one per core). On a machine that "
    "other work shares, fewer (often 1) can be many times faster; the start line says how many are used.",
)


def _progress(ctx: click.Context, param: click.Parameter, value: bool | None) -> bool:
    return sys.stderr.isatty() if value is None else value


PROGRESS = click.option(
    "--progress/--no-progress",
    default=None,
    callback=_progress,
    help="Show a progress bar (default: when stderr is a terminal, so that a log file gets none).",
)
SEED = click.IntRange(*SEED_RANGE)


def traceback_wanted() -> bool:
    """``PYROVAE_TRACEBACK=1``: pyrovae's errors keep their traceback, and that of the user's code they chain."""
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


@contextmanager
def one_line_errors() -> Iterator[None]:
    """pyrovae's own errors (bad input) become click's one-line ``Error: ...`` and exit 1 (unless
    ``PYROVAE_TRACEBACK=1``); anything else (a bug, an error inside Pyro or torch) keeps its traceback."""
    try:
        yield
    except PyrovaeError as error:
        if traceback_wanted():
            raise
        raise click.ClickException(str(error)) from None


@contextmanager
def deprecations_as_lines() -> Iterator[None]:
    """pyrovae's deprecation warnings (:class:`FutureWarning`) raised inside said as one line of the
    command's own (``Warning: ...`` on stderr), not as a Python warning with a file and line; other
    warnings go on as they were."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        try:
            yield
        finally:
            for warning in caught:
                if issubclass(warning.category, FutureWarning):
                    click.echo(f"Warning: {warning.message}", err=True)
                else:
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


class _Group(click.Group):
    """click's group, except that a Ctrl-C in a command (while it imports the library, say) leaves as
    :class:`~pyrovae.signals.Stopped` for ``python -m pyrovae`` to report in one line with exit code
    130, instead of click's bare ``Aborted!`` and exit code 1; and pyrovae's own warnings are one line."""

    def invoke(self, ctx: click.Context) -> object:
        from ..signals import Stopped
        from .warning_lines import pyrovae_warnings_as_lines

        try:
            with pyrovae_warnings_as_lines():
                return super().invoke(ctx)
        except KeyboardInterrupt:
            stop = Stopped()
            stop.signal_name = "SIGINT"
            raise stop from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyrovae")
@verbosity_options
@click.pass_context
def main(ctx: click.Context) -> None:
    """pyrovae: variational autoencoders on Pyro.

    The generative model p(x|z)p(z) is a Pyro model, q(z|x) a Pyro guide, trained by SVI with
    Trace_ELBO (Monte Carlo KL) or TraceMeanField_ELBO (analytic KL).
    """
    from ..reporting import configure_cli

    configure_cli(ctx.meta.get("pyrovae.verbosity"))  # (a command's own --quiet/--verbose comes after)


def checkpoint_note_of(out: str | None) -> str:
    """Where the last good checkpoint of a stopped run is (none where no run directory was made yet)."""
    from .. import commands

    return "No run directory had been made yet" if out is None else commands.checkpoint_note(out)
