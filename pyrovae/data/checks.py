"""The checks of data against a likelihood's support (:func:`validate_data`): finite numbers, the
shape the model expects, and values the likelihood can score."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import DataError, DataWarning

__all__ = ["validate_data", "check_labels", "as_rows"]


def validate_data(
    x: torch.Tensor, x_dim: int, likelihood: str | None, what: str = "data", grey_levels: bool = False
) -> None:
    """Raise :class:`ValueError` unless ``x`` is a finite, non-empty ``(N, x_dim)`` float tensor in
    the likelihood's support (``{0, 1}`` for Bernoulli; ``[0, 1]`` when ``grey_levels`` is set,
    i.e. the data are binarized on the fly; any real number for Gaussian; the 256 levels
    ``k/255`` for the discretized logistic).

    :param str likelihood: ``bernoulli``, ``gaussian``, ``discretized-logistic``, or ``None`` to check
        everything but the support (what the loaders do, before a likelihood is chosen).
    :param str what: how the messages name ``x``, e.g. ``"train data"`` or ``"'x' in data.npy"``.
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise DataError(f"{what} must be a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if x.dim() != 2 or x.shape[1] != x_dim:
        raise DataError(f"{what} must have shape (N, {x_dim}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(f"{what} is empty: expected at least one row; check that the right data were saved")
    if x.shape[1] == 0:
        raise DataError(f"{what} has rows of 0 values (shape {tuple(x.shape)}): expected at least one value per row")
    finite = torch.isfinite(x)
    if not finite.all():
        bad = (~finite).nonzero()[0].tolist()
        raise DataError(
            f"{what} has {int((~finite).sum())} NaN or infinite values (the first at row {bad[0]}, column {bad[1]}): "
            "expected finite numbers; drop or replace those values"
        )
    if likelihood == "bernoulli":
        lo, hi = float(x.min()), float(x.max())
        if grey_levels:
            if lo < 0 or hi > 1:
                raise DataError(f"{what} has values in [{lo:g}, {hi:g}]; dynamic binarization needs [0, 1]: rescale it")
        elif not ((x == 0) | (x == 1)).all():
            raise DataError(
                f"{what} has values in [{lo:g}, {hi:g}] that are not all 0 or 1; the Bernoulli likelihood "
                "needs binary data: binarize it (--binarize static|dynamic) or use --likelihood gaussian"
            )
    elif likelihood == "discretized-logistic":
        levels = x * 255
        off_grid = (levels - levels.round()).abs() > 1e-3
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1 or bool(off_grid.any()):
            raise DataError(
                f"{what} has values in [{lo:g}, {hi:g}]{' off the grid k/255' if bool(off_grid.any()) else ''}; the "
                "discretized-logistic likelihood needs 8-bit pixels scaled to k/255 in [0, 1] (as the cifar10, mnist "
                "and fashion-mnist loaders give them): rescale them, or use --likelihood gaussian"
            )


def check_labels(labels: np.ndarray, n: int, what: str) -> torch.Tensor:
    """``labels`` as a long tensor, after checking it is one integer class id per data point."""
    if labels.ndim != 1:
        raise DataError(
            f"{what} must be one class id per data point, shape ({n},); got shape {labels.shape}: "
            "flatten them or, for one-hot labels, take labels.argmax(1)"
        )
    if len(labels) != n:
        raise DataError(
            f"{what} has {len(labels)} entries but the data have {n} rows: "
            "give exactly one label per data point, in the same order"
        )
    if labels.dtype.kind == "f":
        labels = _whole_numbers(labels, what)
    if labels.dtype.kind not in "biu":
        raise DataError(
            f"{what} must be integer class ids, got dtype {labels.dtype}: "
            "convert them, e.g. np.unique(labels, return_inverse=True)[1]"
        )
    return torch.as_tensor(labels.astype(np.int64))


#: the largest whole number a float64 holds exactly
_EXACT = 2.0**53


def _whole_numbers(labels: np.ndarray, what: str) -> np.ndarray:
    """Float labels that are all whole numbers, as int64 (said once with a :class:`DataWarning`);
    anything else is refused in one line naming the first label that is not a class id."""
    bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (np.abs(labels) > _EXACT)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"{what} must be integer class ids, but holds {int(bad.sum())} float(s) that are not whole numbers "
            f"(the first, {float(labels[row])!r}, at row {row}): save integer labels, e.g. "
            "np.unique(labels, return_inverse=True)[1]"
        )
    warnings.warn(
        f"{what} holds whole numbers as {labels.dtype} floats: read as integer class ids; save them as integers "
        "to be silent",
        DataWarning,
        stacklevel=3,
    )
    return labels.astype(np.int64)


def as_rows(x: np.ndarray, what: str) -> torch.Tensor:
    """``x`` of shape ``(N, ...)`` flattened to a ``(N, D)`` float tensor, checked by :func:`validate_data`."""
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{what} must hold real numbers, got dtype {x.dtype}: save a numeric array (e.g. x.astype(np.float32))"
        )
    if x.ndim < 2:
        raise DataError(
            f"{what} must have shape (N, ...) with one data point per row (rank >= 2); got shape {x.shape}: "
            "for N scalars use x[:, None], for a single data point x[None]"
        )
    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    rows = torch.as_tensor(x.reshape(x.shape[0], math.prod(x.shape[1:])), dtype=dtype)
    validate_data(rows, rows.shape[1], None, what)
    return rows
