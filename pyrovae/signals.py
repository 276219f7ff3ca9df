"""SIGTERM while a command starts or finishes: a clean stop with a message, not a silent death.

Python turns SIGINT into :class:`KeyboardInterrupt` by itself, but dies on SIGTERM without a word
or any clean-up. :func:`stop_on_sigterm` makes SIGTERM raise :class:`Stopped` instead, so the
command can say where it stopped and exit with 143 (128 + 15, the shell's code for SIGTERM).
Training installs its own handlers for the time it runs (it stops at a step boundary and writes a
checkpoint) and puts this one back afterwards.

A signal that arrives while a module is being imported is not raised there: torch's imports call
into C++ that calls back into Python (while ``torch.distributed`` is imported, say), and an
exception raised from the handler inside such a callback cannot pass back through the C++ frames:
the process ends with "terminate called after throwing an instance of
'pybind11::error_already_set'" and SIGABRT instead of a one-line stop. Such a signal is recorded
(:func:`received`) and sent again :data:`RETRY_SECONDS` later, until it arrives outside every
import or a command's check (:func:`raise_if_stopped`; the training loop's first) raises the stop
first.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["Stopped", "stop_on_sigterm", "exit_code", "received", "raise_if_stopped"]

#: the stop signals that arrived while :func:`stop_on_sigterm` was active, in order
_RECEIVED: list[str] = []
#: how long a stop signal that arrived during an import waits before it is sent again
RETRY_SECONDS = 0.05
#: the timers that will send a signal again (:func:`send_again`), and the signals they sent that
#: have not arrived yet; whether a stop has been raised (a signal sent again is then let go)
_RETRIES: list[threading.Timer] = []
_SENT_AGAIN: set[int] = set()
_RAISED = False


def importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` (a signal handler's) runs inside an import: some frame of its stack is
    the import machinery's."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def send_again(signum: int) -> None:
    """Send ``signum`` to this process again :data:`RETRY_SECONDS` from now (from a timer thread),
    unless a stop is raised before then."""

    def send() -> None:
        _SENT_AGAIN.add(signum)
        os.kill(os.getpid(), signum)

    timer = threading.Timer(RETRY_SECONDS, send)
    timer.daemon = True
    _RETRIES.append(timer)
    timer.start()


def _stopping() -> None:
    """A stop is being raised: no signal needs sending again."""
    global _RAISED
    _RAISED = True
    while _RETRIES:
        _RETRIES.pop().cancel()


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
    if name is None:
        return
    _stopping()
    if name == "SIGTERM":
        raise Stopped()
    raise KeyboardInterrupt


def exit_code(stop: BaseException) -> int:
    """128 + the signal number: 130 for SIGINT (a plain ``KeyboardInterrupt``), 143 for SIGTERM."""
    name = getattr(stop, "signal_name", "SIGINT")
    return 128 + int(signal.Signals[name])


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """While inside (main thread only), SIGTERM raises :class:`Stopped` and SIGINT
    :class:`KeyboardInterrupt`, and both are remembered (:func:`received`); during an import, a
    moment later (:func:`importing`, :func:`send_again`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(name: str, stop: type[BaseException]) -> Callable[[int, FrameType | None], None]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            if signum in _SENT_AGAIN:  # (this module sent it again: the same stop, already recorded)
                _SENT_AGAIN.discard(signum)
                if _RAISED:
                    return
            else:
                _RECEIVED.append(name)
            if importing(frame):  # (raised here, it could end the process with SIGABRT: see above)
                send_again(signum)
                return
            _stopping()
            raise stop

        return on_signal

    on_term, on_int = handler("SIGTERM", Stopped), handler("SIGINT", KeyboardInterrupt)
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_term),
        signal.SIGINT: signal.signal(signal.SIGINT, on_int),
    }
    try:
        yield
    finally:
        for sig, earlier in previous.items():
            signal.signal(sig, earlier)
