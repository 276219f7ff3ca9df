"""Histograms of what ``pyrovae evaluate`` measured per test point: the IWAE estimate of log p(x)
and the Pareto k-hat of the importance weights (read from ``evaluation.json``'s ``per_point``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..rundir import write_png

__all__ = ["histogram", "save_histogram", "save_evaluation_histograms", "HISTOGRAMS"]

#: the per-point column of ``evaluation.json`` each histogram draws, and its file name
HISTOGRAMS = {"log_px": "log_px_histogram.png", "khat": "khat_histogram.png"}
_AXIS = {
    "log_px": "log p(x), IWAE estimate (nats)",
    "khat": "Pareto k-hat of the importance weights",
}
_FIGSIZE = (6.0, 4.0)


def histogram(values: Sequence[float | None], bins: int = 40) -> tuple[np.ndarray, np.ndarray, int]:
    """``(counts, edges, left_out)``: :func:`numpy.histogram` of the finite values (``None``, NaN and
    infinities, which ``evaluation.json`` writes as ``null``, are counted in ``left_out``)."""
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        raise ConfigError(f"no finite value to draw among {array.size}")
    counts, edges = np.histogram(finite, bins=bins)
    return counts, edges, int(array.size - finite.size)


def save_histogram(
    values: Sequence[float | None], path: str | Path, column: str, mark: float | None = None, bins: int = 40
) -> Path:
    """A histogram of the per-point ``column`` (a key of :data:`HISTOGRAMS`) of an evaluation, with a
    dashed line at ``mark`` (for ``khat``: the threshold above which importance sampling is unreliable)."""
    from matplotlib.figure import Figure

    counts, edges, left_out = histogram(values, bins)
    fig = Figure(figsize=_FIGSIZE)
    ax = fig.subplots()
    ax.stairs(counts, edges, fill=True, alpha=0.7)
    if mark is not None:
        ax.axvline(mark, color="red", linestyle="--", linewidth=1, label=f"{column} = {mark:g}")
        ax.legend()
    ax.set_xlabel(_AXIS.get(column, column))
    ax.set_ylabel("test points")
    note = f"; {left_out} not finite, left out" if left_out else ""
    ax.set_title(f"{int(counts.sum())} test points{note}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return write_png(path, fig)


def save_evaluation_histograms(per_point: dict, folder: str | Path, khat_threshold: float) -> list[Path]:
    """The histograms of :data:`HISTOGRAMS` from ``evaluation.json``'s ``per_point`` into ``folder``
    (k-hat's with ``khat_threshold`` marked); a column that is absent, ``null`` (no k-hat for k < 21)
    or without a finite value gets no picture."""
    folder = Path(folder)
    marks = {"khat": khat_threshold}
    return [
        save_histogram(per_point[column], folder / name, column, marks.get(column))
        for column, name in HISTOGRAMS.items()
        if per_point.get(column) and any(v is not None and np.isfinite(v) for v in per_point[column])
    ]
