"""Arrays of your own as a data set: a ``.npy`` file (one array, split into train and test) or an
``.npz`` file (``x`` [``y``], or ``train``, ``test`` [``train_labels``, ``test_labels``])."""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError, DataWarning
from ..spec.names import is_array_path
from .checks import as_rows, check_labels
from .datasets import Dataset, check_test_fraction, split_rows

__all__ = ["load_array_dataset"]


_NPZ_KEYS = ("x", "y", "train", "test", "train_labels", "test_labels")


def load_array_dataset(path: str | os.PathLike[str], test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """A data set from a ``.npy`` or ``.npz`` file of your own.

    Arrays are shaped ``(N, ...)``, one data point per row; each row is flattened, and the image
    shape is the array's trailing shape (``(N, 28, 28)`` -> ``(28, 28)``; ``(N, D)`` -> ``(D,)``).
    Values are used as they are (no rescaling): the Bernoulli likelihood needs values in
    ``[0, 1]`` (binarized, or grey levels with ``binarization="dynamic"``/``"static"``).

    - ``.npy``: one array ``x``; a test set of ``round(test_fraction * N)`` rows is held out.
    - ``.npz`` with key ``x`` (optional ``y``: one integer label per row): as ``.npy``.
    - ``.npz`` with keys ``train`` and ``test`` (optional ``train_labels``, ``test_labels``):
      that split is used. With ``train`` alone, a test set is held out as above.

    Arrays are loaded with ``allow_pickle=False``. Other keys are ignored with a warning.

    :param path: the ``.npy`` / ``.npz`` file.
    :param float test_fraction: fraction of rows held out for testing when the file gives no split.
    :param int split_seed: seed of the random train/test split.
    :raises ValueError: for an unreadable file, missing or ambiguous keys, non-numeric arrays,
        wrong rank, empty arrays, NaN/inf values, or labels that do not match the data.
    """
    path = Path(path)
    if not is_array_path(path):
        raise DataError(f"user data must be a .npy or .npz file, got {str(path)!r}")
    if not path.is_file():
        raise DataError(f"no file {path}: check the path (user data are .npy or .npz files)")
    check_test_fraction(test_fraction)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"cannot read {path} as a {path.suffix} file ({str(error).strip() or type(error).__name__}): "
            "save it with np.save / np.savez, of numeric arrays (no Python objects)"
        ) from None
    if isinstance(loaded, np.ndarray):
        arrays = {"x": loaded}
    else:
        with loaded:
            try:
                arrays = {key: loaded[key] for key in loaded.files}
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
                raise DataError(
                    f"cannot read the arrays in {path} ({str(error).strip() or type(error).__name__}): "
                    "save it with np.savez of numeric arrays (no Python objects)"
                ) from None
    if ("x" in arrays) == ("train" in arrays):
        found = ", ".join(sorted(arrays)) or "none"
        raise DataError(
            f"{path} must hold either 'x' (optional 'y') or 'train' and 'test' (optional 'train_labels', "
            f"'test_labels'); found keys: {found}: save with np.savez(path, x=x) or np.savez(path, train=..., test=...)"
        )
    unknown = sorted(set(arrays) - set(_NPZ_KEYS))
    if unknown:  # (only for a file that is otherwise usable: a refused one gets the error alone)
        warnings.warn(
            f"{path}: ignoring arrays {unknown}; the keys read are {', '.join(_NPZ_KEYS)}", DataWarning, stacklevel=2
        )
    for labels_key, data_key in (("test", "train"), ("y", "x"), ("train_labels", "train"), ("test_labels", "test")):
        if labels_key in arrays and data_key not in arrays:
            raise DataError(f"{path} has {labels_key!r} but no {data_key!r}: save the data under {data_key!r}")
    data_key = "x" if "x" in arrays else "train"
    labels_key = "y" if "x" in arrays else "train_labels"
    x = as_rows(arrays[data_key], f"{data_key!r} in {path}")
    y = check_labels(arrays[labels_key], len(x), f"{labels_key!r} in {path}") if labels_key in arrays else None
    shape = tuple(arrays[data_key].shape[1:])
    if "test" in arrays:
        test = as_rows(arrays["test"], f"'test' in {path}")
        test_shape = tuple(arrays["test"].shape[1:])
        if test_shape != shape:
            raise DataError(
                f"{path}: 'test' rows have shape {test_shape} but 'train' rows have shape {shape}: "
                "both must hold data points of the same shape"
            )
        test_y = (
            check_labels(arrays["test_labels"], len(test), f"'test_labels' in {path}")
            if "test_labels" in arrays
            else None
        )
        return Dataset(str(path), x, test, shape, y, test_y)
    train_rows, test_rows = split_rows(len(x), test_fraction, split_seed, f"{data_key!r} in {path}")
    return Dataset(
        str(path),
        x[train_rows],
        x[test_rows],
        shape,
        None if y is None else y[train_rows],
        None if y is None else y[test_rows],
    )
