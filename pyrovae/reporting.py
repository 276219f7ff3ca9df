"""How pyrovae reports: through Python's :mod:`logging`, on the logger ``"pyrovae"``.

The library never configures logging itself: a program that uses it sees pyrovae's lines as its
own logging configuration says (``logging.basicConfig(level=logging.INFO)`` shows them all; by
default Python shows warnings alone). Functions that take a ``log=`` callable still call it with
each line instead, where one is given. The ``pyrovae`` command configures the logger
(:func:`configure_cli`): lines as they are, on standard output, warnings on standard error as
``Warning: ...``; ``--quiet`` keeps warnings and errors only, ``--verbose`` adds debugging detail.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOGGER", "info", "warning", "configure_cli", "set_verbosity", "VERBOSITY"]

#: the logger every part of pyrovae reports through
LOGGER = logging.getLogger("pyrovae")

#: ``--quiet`` / ``--verbose`` -> the level they set (the command's default: INFO)
VERBOSITY = {"quiet": logging.WARNING, "verbose": logging.DEBUG}


def info(line: str) -> None:
    """Report ``line`` (a step of the work: the start line, an epoch, a file written)."""
    LOGGER.info(line)


def warning(line: str) -> None:
    """Report ``line`` as a warning (something went wrong that the work goes on without)."""
    LOGGER.warning(line)


class _Lines(logging.Handler):
    """Each record as one line: on standard output below WARNING, on standard error (``Warning: ``)
    from it on; the streams are looked up when a line is written (so a captured stream is used)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                prefix = "Warning: " if record.levelno == logging.WARNING else "Error: "
                sys.stderr.write(f"{prefix}{message}\n")
                sys.stderr.flush()
            else:
                sys.stdout.write(f"{message}\n")
                sys.stdout.flush()
        except Exception:  # noqa: BLE001 (logging's rule: a handler never raises)
            self.handleError(record)


def configure_cli(verbosity: str | None = None) -> None:
    """Set the ``pyrovae`` logger up for the command line: one :class:`_Lines` handler (added once),
    at the level of ``verbosity`` (``None``: INFO)."""
    if not any(isinstance(handler, _Lines) for handler in LOGGER.handlers):
        LOGGER.addHandler(_Lines())
    LOGGER.setLevel(VERBOSITY.get(verbosity or "", logging.INFO))


def set_verbosity(verbosity: str) -> None:
    """``quiet`` or ``verbose``: the level of the ``pyrovae`` logger from now on."""
    LOGGER.setLevel(VERBOSITY[verbosity])
