"""Argument checks and error types shared by every layer (imports nothing from pyrovae)."""

from __future__ import annotations

from typing import Any

__all__ = ["positive_int", "RunDirectoryError", "RunFileError", "NotEnoughMemoryError"]


class RunDirectoryError(ValueError):
    """A run directory cannot be used now: another process holds it, or the operating system refused
    to create, read or write one of its files (disk full, read-only, name too long...)."""


class RunFileError(ValueError):
    """A run file (``config.json``, ``metrics.jsonl``, ``checkpoint.pt``) is missing, unreadable, or
    parses but does not have the structure pyrovae writes."""


class NotEnoughMemoryError(ValueError):
    """A setting asks for more memory than the device has (estimated up front, or an allocation failed)."""


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int (not a bool) ``>= minimum``, else raise :class:`ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value
