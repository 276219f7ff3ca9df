"""Training curves from the per-epoch records of ``metrics.jsonl``: the ELBO of the train, validation
and test sets, their reconstruction and KL terms where the records have them, and the epoch that
model selection kept."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..rundir import write_png

__all__ = ["save_training_curves", "training_curves_figure", "selected_epoch", "curve_series", "SPLITS", "TERMS"]

#: the data splits a record may hold numbers of, in the order of the legends
SPLITS = ("train", "validation", "test")
#: the ELBO's two terms (eq. 12) a record may hold per split, as ``SPLIT_TERM``
TERMS = ("reconstruction", "kl")
#: one colour per split in every panel
_COLOURS = {"train": "C0", "validation": "C1", "test": "C2"}
#: inches of one panel
_PANEL = (5.0, 4.0)


def _number(value: Any) -> float:
    """A record's value as a float, NaN where it is missing or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def curve_series(records: Sequence[dict], quantity: str) -> dict[str, list[float]]:
    """``{split: values per epoch}`` of ``SPLIT_QUANTITY`` (e.g. ``test_kl``) for each split that at
    least one record holds; an epoch without it is NaN (a gap in the curve)."""
    return {
        split: [_number(r.get(f"{split}_{quantity}")) for r in records]
        for split in SPLITS
        if any(f"{split}_{quantity}" in r for r in records)
    }


def selected_epoch(records: Sequence[dict]) -> int | None:
    """The epoch whose parameters a run with validation rows ends with: the first one with the highest
    ``validation_elbo`` (as :class:`~pyrovae.train.selection.ModelSelection` keeps it); ``None``
    where no record holds a finite ``validation_elbo``."""
    best, best_elbo = None, -math.inf
    for record in records:
        value = _number(record.get("validation_elbo"))
        if not math.isnan(value) and (best is None or value > best_elbo):
            best, best_elbo = record["epoch"], value
    return best


def save_training_curves(records: Sequence[dict], path: str | Path) -> Path:
    """Draw :func:`training_curves_figure` of ``records`` to ``path``."""
    return write_png(path, training_curves_figure(records))


def training_curves_figure(records: Sequence[dict]) -> Any:
    """The ELBO per data point against epoch (train, validation, test), its reconstruction and KL terms
    against epoch where the records have them (one panel each), and the ELBO against cumulative
    training seconds. The epoch model selection kept is marked by a dashed line; epochs are integers.

    :param records: the per-epoch records of ``metrics.jsonl`` (``epoch``, ``train_elbo``,
        ``seconds`` = training time of that epoch; optionally ``test_elbo``, ``validation_elbo``,
        ``SPLIT_reconstruction`` and ``SPLIT_kl`` for SPLIT in :data:`SPLITS`).
    :returns: a matplotlib ``Figure`` of 5 x 4 inches per panel.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not records:
        raise ConfigError("no epochs to draw: the metrics are empty")
    missing = [key for key in ("epoch", "train_elbo", "seconds") if key not in records[0]]
    if missing:
        raise ConfigError(f"metrics records need epoch, train_elbo and seconds; missing {', '.join(missing)}")
    epochs = [r["epoch"] for r in records]
    seconds = list(itertools.accumulate(_number(r.get("seconds")) for r in records))
    elbo = curve_series(records, "elbo")
    terms = {term: series for term in TERMS if (series := curve_series(records, term))}
    chosen = selected_epoch(records)
    fig = Figure(figsize=(_PANEL[0] * (2 + len(terms)), _PANEL[1]))
    by_epoch, *by_term, by_time = fig.subplots(1, 2 + len(terms))
    panels = [(by_epoch, elbo, "ELBO (nats per data point)")]
    names = {"reconstruction": "reconstruction E_q[log p(x|z)] (nats)", "kl": "KL(q(z|x) || p(z)) (nats)"}
    panels += [(ax, terms[term], names[term]) for ax, term in zip(by_term, terms, strict=True)]
    for ax, series, label in panels:
        for split, values in series.items():
            ax.plot(epochs, values, marker="o", markersize=3, label=split, color=_COLOURS[split])
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if chosen is not None:
            ax.axvline(chosen, color="grey", linestyle="--", linewidth=1, label=f"selected epoch {chosen}")
    for split, values in elbo.items():
        by_time.plot(seconds, values, marker="o", markersize=3, label=split, color=_COLOURS[split])
    by_time.set_xlabel("training time (s, cumulative)")
    by_time.set_ylabel("ELBO (nats per data point)")
    for ax in (by_epoch, *by_term, by_time):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
