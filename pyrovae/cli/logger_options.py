"""The logging options of ``pyrovae fit`` (``--logger``, ``--log-every``, ``--mlflow-uri``), as click
decorators; they belong to the run's spec (``[logging]`` of a run file, :class:`pyrovae.spec.LoggingSpec`)."""

from __future__ import annotations

import click

from ..spec.loggers import check_loggers
from ..spec.sections import LOGGERS
from .group import DEFAULTS, checked_by, fit_option

#: the logging options ``--resume`` takes (a resumed run keeps its other options)
RESUMABLE_LOGGING = ("logger", "log_every", "mlflow_uri")

_loggers = checked_by(lambda value: check_loggers(value, 1, None))


LOGGER = click.option(
    "--logger",
    "logger",
    multiple=True,
    default=DEFAULTS["logger"],
    callback=_loggers,
    metavar="|".join(LOGGERS),
    help="Also log training to: csv (metrics.csv and steps.csv in the run directory), tensorboard "
    '(tensorboard/; pip install "pyrovae[tensorboard]"), mlflow (mlruns/ or --mlflow-uri; pip install '
    '"pyrovae[mlflow]"). Repeatable or comma-separated. Each epoch\'s numbers and pictures, and the loss every '
    "--log-every steps; a logger that fails stops alone, the run goes on.",
)
LOG_EVERY = fit_option(
    "--log-every",
    click.IntRange(min=1),
    "With --logger: log the step's loss every this many steps.",
    metavar="STEPS",
)
MLFLOW_URI = fit_option(
    "--mlflow-uri",
    str,
    "With --logger mlflow: the tracking URI (default: $MLFLOW_TRACKING_URI, else mlruns/ in the run directory).",
    metavar="URI",
)
