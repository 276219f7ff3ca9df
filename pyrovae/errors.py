"""Argument checks shared by every layer (imports nothing from pyrovae)."""

from __future__ import annotations

from typing import Any

__all__ = ["positive_int"]


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` if it is an int (not a bool) ``>= minimum``, else raise :class:`ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value
