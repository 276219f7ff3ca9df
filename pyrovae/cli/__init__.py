"""The ``pyrovae`` command line: parses options, calls the library (:mod:`pyrovae.commands`), turns
pyrovae's errors into one line. One module per command; none imports torch before it runs."""

from __future__ import annotations

from . import export, fit, run_commands  # noqa: F401 (each registers its commands with the group)
from .group import main

__all__ = ["main"]
