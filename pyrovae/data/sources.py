"""The built-in data sets as :class:`~pyrovae.data.registry.DatasetSource` classes, registered in
:mod:`pyrovae.spec.datasets`: ``digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, and ``.npy`` /
``.npz`` files of your own (a ``.npy`` file is memory-mapped: its training rows are read as
batches are drawn, or all at once on the resident path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .cifar import CIFAR10_SHAPE, read_cifar10
from .datasets import Dataset, load_digits, load_idx_dataset, split_rows
from .registry import DatasetSource
from .rows import Rows

__all__ = ["Digits", "Mnist", "FashionMnist", "Cifar10", "NpyFile", "NpzFile"]


class Digits(DatasetSource):
    """scikit-learn's 8x8 digits (:func:`~pyrovae.data.load_digits`)."""

    def load(self) -> Dataset:
        return load_digits(self.options.test_fraction)


class Mnist(DatasetSource):
    """MNIST's four IDX files in ``--data-dir`` (:func:`~pyrovae.data.load_idx_dataset`)."""

    name = "mnist"

    def load(self) -> Dataset:
        return load_idx_dataset(self.name, self.options.data_dir)


class FashionMnist(Mnist):
    """Fashion-MNIST's four IDX files (default folder ``/usr/share/datasets/fashion-mnist``)."""

    name = "fashion-mnist"


class Cifar10(DatasetSource):
    """CIFAR-10's binary files in ``--data-dir`` (:func:`~pyrovae.data.cifar.read_cifar10`)."""

    def load(self) -> Dataset:
        train, train_labels, test, test_labels = read_cifar10(self.options.data_dir)
        return Dataset("cifar10", train, test, CIFAR10_SHAPE, train_labels, test_labels)


class _UserFile(DatasetSource):
    def check(self) -> None:
        if not Path(self.argument).is_file():
            raise DataError(f"dataset {self.argument!r} looks like a .npy/.npz path, but there is no such file")


class NpyFile(_UserFile):
    """One array ``(N, ...)`` in a ``.npy`` file, opened with ``mmap_mode="r"`` (nothing copied into
    memory); a test set of ``round(test_fraction * N)`` rows is held out (a fixed random choice)
    and read now, the training rows stay on disk until they are used. Values are used as they are."""

    def load(self) -> Dataset:
        path = Path(self.argument)
        self.check()
        try:
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError:  # (what cannot be mapped, e.g. Python objects: NumPy's own reason, read whole)
                array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise DataError(
                f"cannot read {path} as a .npy file ({str(error).strip() or type(error).__name__}): "
                "save it with np.save, of numeric arrays (no Python objects)"
            ) from None
        what = f"'x' in {path}"
        if array.dtype.kind not in "biuf":
            raise DataError(
                f"{what} must hold real numbers, got dtype {array.dtype}: save a numeric array "
                "(e.g. x.astype(np.float32))"
            )
        if array.ndim < 2:
            raise DataError(
                f"{what} must have shape (N, ...) with one data point per row (rank >= 2); got shape {array.shape}: "
                "for N scalars use x[:, None], for a single data point x[None]"
            )
        rows = Rows(array, None, str(path))
        rows.check(rows.shape[1], None, what)  # (finite numbers: one pass over the file, a chunk at a time)
        train_rows, test_rows = split_rows(array.shape[0], self.options.test_fraction, 0, what)
        test = rows.read(test_rows.numpy())
        return Dataset(str(path), rows.take(train_rows.numpy()), test, tuple(array.shape[1:]))


class NpzFile(_UserFile):
    """Arrays in an ``.npz`` file (:func:`~pyrovae.data.load_array_dataset`), read into memory."""

    def load(self) -> Dataset:
        from .arrays import load_array_dataset

        return load_array_dataset(self.argument, self.options.test_fraction)
