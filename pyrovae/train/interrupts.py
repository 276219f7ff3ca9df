"""SIGINT and SIGTERM as a flag that the training loop reads between steps."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import renamed_names
from ..signals import raise_if_stopped

__all__ = ["FitInterrupted", "stop_on_signals"]


class FitInterrupted(KeyboardInterrupt):
    """Training stopped at a step boundary on SIGINT or SIGTERM, after the callbacks saw it."""

    def __init__(self, signal_name: str, epoch: int, step: int):
        super().__init__(f"{signal_name} at epoch {epoch}, step {step}")
        self.signal_name, self.epoch, self.step = signal_name, epoch, step


@contextmanager
def stop_on_signals(enabled: bool) -> Iterator[dict[str, str]]:
    """Inside the block SIGINT/SIGTERM set ``caught["signal"]`` (main thread only) instead of
    stopping the process; the previous handlers come back when it ends. A stop signal that arrived
    before, during an import of the command's start (:mod:`pyrovae.signals`), is raised here, before
    the first step: the run has written nothing it would keep."""
    caught: dict[str, str] = {}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield caught
        return
    raise_if_stopped()

    def handler(signum: int, frame: Any) -> None:
        caught.setdefault("signal", signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# pyrovae 0.1's name
__getattr__ = renamed_names(__name__, {"TrainingInterrupted": "FitInterrupted"}, globals())
