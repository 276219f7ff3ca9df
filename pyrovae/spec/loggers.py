"""The one check of the logging options (``--logger``, ``--log-every``, ``--mlflow-uri``); imports
no torch, so the command line and the config file use it alike."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ConfigError
from .sections import LOGGERS

__all__ = ["check_loggers", "split_loggers"]


def split_loggers(values: Iterable[str]) -> tuple[str, ...]:
    """``("csv", "tensorboard,mlflow")`` -> ``("csv", "tensorboard", "mlflow")`` (each name once, in order)."""
    names = [name.strip() for value in values for name in str(value).split(",") if name.strip()]
    return tuple(dict.fromkeys(names))


def check_loggers(loggers: Iterable[str] | str, log_every: int, mlflow_uri: str | None) -> tuple[str, ...]:
    """The loggers as a tuple of known names; a one-line :class:`~pyrovae.errors.ConfigError` for an
    unknown name, a ``log_every`` below 1 or an empty ``mlflow_uri``."""
    if isinstance(loggers, str):
        loggers = [loggers]
    if not isinstance(loggers, (list, tuple)) or not all(isinstance(name, str) for name in loggers):
        raise ConfigError(f"logger must be a list of names among {', '.join(LOGGERS)}, got {loggers!r}")
    names = split_loggers(loggers)
    unknown = [name for name in names if name not in LOGGERS]
    if unknown:
        raise ConfigError(
            f"--logger must name some of {', '.join(LOGGERS)} (repeated or comma-separated), got {unknown[0]!r}"
        )
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ConfigError(f"log_every (--log-every) must be a whole number of steps >= 1, got {log_every!r}")
    if mlflow_uri is not None and (not isinstance(mlflow_uri, str) or not mlflow_uri.strip()):
        raise ConfigError(
            f"mlflow_uri (--mlflow-uri) must be a tracking URI such as http://host:5000, got {mlflow_uri!r}"
        )
    return names
