"""pyrovae's own warnings (:class:`~pyrovae.errors.PyrovaeWarning`) on the command line: one line,
``Warning: ...`` on stderr, instead of Python's file, line number and source line."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import PyrovaeWarning

__all__ = ["pyrovae_warnings_as_lines"]


@contextmanager
def pyrovae_warnings_as_lines() -> Iterator[None]:
    """Inside, a :class:`PyrovaeWarning` is shown as one line of the command's own (Python's filters
    still decide how often: once per place, by default); other warnings are shown as before."""
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], filename: str, lineno: int, *rest: Any, **more: Any) -> None:
            if issubclass(category, PyrovaeWarning):
                click.echo(f"Warning: {message}", err=True)
            else:
                shown(message, category, filename, lineno, *rest, **more)

        warnings.showwarning = show
        yield
