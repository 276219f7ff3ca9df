"""SIGTERM while a command starts or finishes: a clean stop with a message, not a silent death.

Python turns SIGINT into :class:`KeyboardInterrupt` by itself, but dies on SIGTERM without a word
or any clean-up. :func:`stop_on_sigterm` makes SIGTERM raise :class:`Stopped` instead, so the
command can say where it stopped and exit with 143 (128 + 15, the shell's code for SIGTERM).
Training installs its own handlers for the time it runs (it stops at a step boundary and writes a
checkpoint) and puts this one back afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Stopped", "stop_on_sigterm", "exit_code", "received", "raise_if_stopped"]

#: the stop signals that arrived while :func:`stop_on_sigterm` was active, in order
_RECEIVED: list[str] = []


def received() -> str | None:
    """The first stop signal (``"SIGINT"`` or ``"SIGTERM"``) that arrived while :func:`stop_on_sigterm`
    was active, or ``None``. An exception raised at an arbitrary point can leave a half-imported
    module behind, whose next use fails in its own way (a ``RecursionError`` inside NumPy's lazy
    imports, say): after a stop signal, such a failure is that stop, not a bug to show."""
    return _RECEIVED[0] if _RECEIVED else None


class Stopped(BaseException):
    """SIGTERM arrived outside the training loop. A ``BaseException``, like ``KeyboardInterrupt``,
    so that no ``except Exception`` swallows it."""

    signal_name = "SIGTERM"


def raise_if_stopped() -> None:
    """Raise the stop a signal asked for where a library swallowed it: some of what a command imports
    catches every exception (a bare ``except:``), the ``KeyboardInterrupt`` of a Ctrl-C included, so
    a command checks :func:`received` once its imports are done, before it writes anything."""
    name = received()
    if name == "SIGTERM":
        raise Stopped()
    if name == "SIGINT":
        raise KeyboardInterrupt


def exit_code(stop: BaseException) -> int:
    """128 + the signal number: 130 for SIGINT (a plain ``KeyboardInterrupt``), 143 for SIGTERM."""
    name = getattr(stop, "signal_name", "SIGINT")
    return 128 + int(signal.Signals[name])


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside (main thread only), SIGTERM raises :class:`Stopped` and SIGINT
    :class:`KeyboardInterrupt`, and both are remembered (:func:`received`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        _RECEIVED.append("SIGTERM")
        raise Stopped()

    def on_int(signum: int, frame: Any) -> None:
        _RECEIVED.append("SIGINT")
        raise KeyboardInterrupt

    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
        signal.SIGINT: signal.signal(signal.SIGINT, on_int),
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
