"""Data sets, binarization, validation against the likelihood, and device-resident batching.

A :class:`Dataset` holds flattened train and test tensors (rows are data points) and the image
shape of one row, so pictures are drawn at the right size. Minibatches are sliced from tensors
that already live on the training device (:func:`minibatches`): no per-item collation and no
host-to-device copy per step.

Data sets by name (:func:`load_dataset`, ``pyrovae fit --dataset``):

- ``digits``: scikit-learn's embedded 8x8 digits (offline, the default);
- ``fashion-mnist``: the four IDX files of Fashion-MNIST from ``data_dir``, by default
  ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
- ``mnist``: the four IDX files of MNIST from ``data_dir``;
- ``cifar10``: CIFAR-10's six binary files from ``data_dir`` (:mod:`pyrovae.data.cifar`);
- a path to a ``.npy`` or ``.npz`` file of your own (see :func:`load_array_dataset`).

Every loader checks what it read (:func:`validate_data`) and raises :class:`ValueError` with a
message that says what was expected, what was found and what to do.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, positive_int
from ..spec.names import ARRAY_SUFFIXES, BINARIZE, DATASETS, IDX_DATASETS, is_array_path
from .cifar import CIFAR10_SHAPE, read_cifar10
from .idx import IDX_FILES, find_idx_file, read_idx

__all__ = [
    "Dataset",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "load_array_dataset",
    "is_array_path",
    "binarize",
    "apply_binarization",
    "validate_data",
    "check_dataset",
    "check_data_options",
    "minibatches",
    "split_validation",
    "DATASETS",
    "IDX_DATASETS",
    "ARRAY_SUFFIXES",
    "DEFAULT_DATA_DIRS",
    "BINARIZE",
]

#: data sets known by name; a path to a ``.npy`` / ``.npz`` file is accepted too

#: where each IDX data set is looked for when no ``data_dir`` is given (``None``: no default)
DEFAULT_DATA_DIRS: dict[str, str | None] = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": None,
    "cifar10": None,
}

#: how to get the IDX files of each data set, for error messages
_HOW_TO_GET = {
    "fashion-mnist": (
        "install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into "
        "/usr/share/datasets/fashion-mnist), or download the four files from "
        "https://github.com/zalandoresearch/fashion-mnist into a folder and pass it as data_dir / --data-dir"
    ),
    "mnist": (
        "download the four files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from http://yann.lecun.com/exdb/mnist/ "
        "or a mirror into a folder and pass it as data_dir / --data-dir"
    ),
}

#: seed of the fixed binarization of test sets (and of train sets under ``binarize="static"``)
BINARIZE_SEED = 1234


@dataclass(frozen=True)
class Dataset:
    """A train/test split of flattened data.

    :ivar train: ``(N_train, D)`` float tensor.
    :ivar test: ``(N_test, D)`` float tensor.
    :ivar image_shape: shape of one data point as an image, e.g. ``(8, 8)``.
    :ivar dynamic_binarization: if true, ``train`` holds grey levels in [0, 1] and every epoch
        trains on a fresh draw ``x ~ Bernoulli(train)``; ``test`` is already binarized once.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, ...]
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    dynamic_binarization: bool = False
    #: the likelihood whose support both splits were checked against (:func:`check_dataset`), if any
    checked: str | None = None

    @property
    def x_dim(self) -> int:
        return self.train.shape[1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """A copy with the data tensors on ``device`` and of ``dtype`` (labels keep their dtype)."""

        def move(t: torch.Tensor | None, cast: bool) -> torch.Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if cast else None)

        return replace(
            self,
            train=move(self.train, True),
            test=move(self.test, True),
            train_labels=move(self.train_labels, False),
            test_labels=move(self.test_labels, False),
        )


def check_data_options(
    dataset: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None, test_fraction: float, binarize: str
) -> tuple[str, str | None]:
    """Check the options of :func:`load_dataset` without loading anything (which
    :class:`pyrovae.config.FitConfig` calls before a run directory is made); returns ``dataset``
    and ``data_dir`` as strings."""
    if isinstance(dataset, os.PathLike):
        dataset = os.fspath(dataset)
    if isinstance(data_dir, os.PathLike):
        data_dir = os.fspath(data_dir)
    if not isinstance(dataset, str):
        raise DataError(f"dataset must be a name or a path, got {type(dataset).__name__}")
    if dataset not in DATASETS:
        if not is_array_path(dataset):
            raise DataError(
                f"dataset must be one of {', '.join(DATASETS)} or a path to a .npy/.npz file; got {dataset!r}"
            )
        if not Path(dataset).is_file():
            raise DataError(f"dataset {dataset!r} looks like a .npy/.npz path, but there is no such file")
    if data_dir is not None and not isinstance(data_dir, str):
        raise DataError(f"data_dir must be a folder path or None, got {type(data_dir).__name__}")
    _check_test_fraction(test_fraction)
    if binarize not in BINARIZE:
        raise DataError(f"binarize must be one of {', '.join(BINARIZE)}, got {binarize!r}")
    return dataset, data_dir


def _check_test_fraction(test_fraction: float) -> None:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be a number in (0, 1), e.g. 0.2; got {test_fraction!r}")


def _split(n: int, test_fraction: float, split_seed: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test row indices: a permutation fixed by ``split_seed``; the test set gets
    ``round(test_fraction * n)`` rows, at least one, and the train set at least one.
    """
    _check_test_fraction(test_fraction)
    if n < 2:
        raise DataError(
            f"{what} has {n} row(s); holding out a test set needs at least 2: add data, or give a "
            "separate test set (an .npz file with 'train' and 'test')"
        )
    order = torch.as_tensor(np.random.RandomState(split_seed).permutation(n))
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    return order[n_test:], order[:n_test]


def _digits_file() -> Path:
    """Where scikit-learn keeps its digits (found without importing it)."""
    spec = importlib.util.find_spec("sklearn")
    path = None if spec is None or spec.origin is None else Path(spec.origin).parent / "datasets/data/digits.csv.gz"
    if path is None or not path.is_file():
        raise DataError(
            "the digits data set is scikit-learn's (sklearn/datasets/data/digits.csv.gz), which was not found: "
            "pip install scikit-learn"
        )
    return path


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's embedded 8x8 digits (1797 images), grey levels scaled to [0, 1].

    The train/test split is fixed by ``split_seed`` (default: 1438 train, 359 test). The values are
    those of ``sklearn.datasets.load_digits``, read from the file scikit-learn ships
    (``sklearn/datasets/data/digits.csv.gz``: 64 grey levels 0..16 and the label per line) without
    importing scikit-learn, which costs seconds at start-up.
    """
    _check_test_fraction(test_fraction)
    table = np.loadtxt(_digits_file(), delimiter=",")
    x = torch.as_tensor(table[:, :-1] / 16.0, dtype=torch.float32)
    y = torch.as_tensor(table[:, -1].astype(np.int64), dtype=torch.long)
    train, test = _split(len(x), test_fraction, split_seed, "digits")
    return Dataset("digits", x[train], x[test], (8, 8), y[train], y[test])


def _check_labels(labels: np.ndarray, n: int, what: str) -> torch.Tensor:
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
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "biu":
        raise DataError(
            f"{what} must be integer class ids, got dtype {labels.dtype}: "
            "convert them, e.g. np.unique(labels, return_inverse=True)[1]"
        )
    return torch.as_tensor(labels.astype(np.int64))


def _as_rows(x: np.ndarray, what: str) -> torch.Tensor:
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


def load_idx_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """MNIST or Fashion-MNIST from the four standard IDX files in ``data_dir``.

    The files are ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or gzip-compressed
    (``.gz``). Grey levels are scaled from ``0..255`` to ``[0, 1]``; the image shape is read from
    the files (28x28 for both data sets). The split is the standard one (60000 train, 10000 test).

    :param str name: ``mnist`` or ``fashion-mnist``.
    :param data_dir: the folder holding the files; default :data:`DEFAULT_DATA_DIRS` (for
        ``fashion-mnist``: ``/usr/share/datasets/fashion-mnist``, Debian package
        ``dataset-fashion-mnist``; ``mnist`` has no default).
    :raises ValueError: if a file is missing (the message says where it looked and how to get the
        files), truncated or corrupted, or the images and labels do not match.
    """
    if name not in IDX_DATASETS:
        raise DataError(f"IDX data set must be one of {', '.join(IDX_DATASETS)}; got {name!r}")
    if data_dir is None:
        data_dir = DEFAULT_DATA_DIRS[name]
        if data_dir is None:
            raise DataError(f"{name} has no default folder to look in; {_HOW_TO_GET[name]}")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"{name}: no folder {folder} (looked for its IDX files there); {_HOW_TO_GET[name]}")
    files = {key: find_idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [f"{IDX_FILES[key]}[.gz]" for key, found in files.items() if found is None]
    if missing:
        raise DataError(
            f"{name}: {folder} lacks {', '.join(missing)} (expected the four IDX files "
            f"{', '.join(IDX_FILES.values())}, raw or .gz); {_HOW_TO_GET[name]}"
        )
    splits = {}
    for split in ("train", "test"):
        images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
        images = read_idx(images_path)
        if images.dtype != np.uint8 or images.ndim < 2:
            raise DataError(
                f"{images_path} holds an array of shape {images.shape} and dtype {images.dtype}; expected "
                "unsigned-byte images of shape (N, height, width): is it a labels file under an images name?"
            )
        x = _as_rows(images.astype(np.float32) / 255.0, f"{split} images of {images_path}")
        y = _check_labels(read_idx(labels_path), len(x), f"the labels in {labels_path}")
        splits[split] = (x, y, tuple(images.shape[1:]))
    (train, train_y, shape), (test, test_y, test_shape) = splits["train"], splits["test"]
    if shape != test_shape:
        raise DataError(
            f"{name}: train images are {shape} but test images are {test_shape} in {folder}: "
            "the files come from different data sets; download them again"
        )
    return Dataset(name, train, test, shape, train_y, test_y)


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
    _check_test_fraction(test_fraction)
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
        warnings.warn(f"{path}: ignoring arrays {unknown}; the keys read are {', '.join(_NPZ_KEYS)}", stacklevel=2)
    for labels_key, data_key in (("test", "train"), ("y", "x"), ("train_labels", "train"), ("test_labels", "test")):
        if labels_key in arrays and data_key not in arrays:
            raise DataError(f"{path} has {labels_key!r} but no {data_key!r}: save the data under {data_key!r}")
    data_key = "x" if "x" in arrays else "train"
    labels_key = "y" if "x" in arrays else "train_labels"
    x = _as_rows(arrays[data_key], f"{data_key!r} in {path}")
    y = _check_labels(arrays[labels_key], len(x), f"{labels_key!r} in {path}") if labels_key in arrays else None
    shape = tuple(arrays[data_key].shape[1:])
    if "test" in arrays:
        test = _as_rows(arrays["test"], f"'test' in {path}")
        test_shape = tuple(arrays["test"].shape[1:])
        if test_shape != shape:
            raise DataError(
                f"{path}: 'test' rows have shape {test_shape} but 'train' rows have shape {shape}: "
                "both must hold data points of the same shape"
            )
        test_y = (
            _check_labels(arrays["test_labels"], len(test), f"'test_labels' in {path}")
            if "test_labels" in arrays
            else None
        )
        return Dataset(str(path), x, test, shape, y, test_y)
    train_rows, test_rows = _split(len(x), test_fraction, split_seed, f"{data_key!r} in {path}")
    return Dataset(
        str(path),
        x[train_rows],
        x[test_rows],
        shape,
        None if y is None else y[train_rows],
        None if y is None else y[test_rows],
    )


def binarize(x: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """One draw :math:`x' \\sim \\mathrm{Bernoulli}(x)` from grey levels in [0, 1], with a fixed seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.bernoulli(x.cpu(), generator=generator).to(x.device)


def load_dataset(
    name: str | os.PathLike[str] = "digits",
    binarization: str = "none",
    data_dir: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
) -> Dataset:
    """Load a data set by name or path, and binarize it.

    :param name: ``digits`` (scikit-learn's 8x8 digits, offline), ``mnist`` or ``fashion-mnist``
        (IDX files, :func:`load_idx_dataset`), ``cifar10`` (its binary files,
        :func:`~pyrovae.data.cifar.read_cifar10`), or a path to a ``.npy`` / ``.npz`` file
        (:func:`load_array_dataset`).
    :param str binarization: ``none`` (grey levels), ``static`` (one fixed draw for train and test)
        or ``dynamic`` (a fresh draw of the train set every epoch; the test set is drawn once).
    :param data_dir: folder of the IDX files (``mnist``, ``fashion-mnist``) or of the binary files
        (``cifar10``); ignored otherwise.
    :param float test_fraction: fraction held out for testing (``digits``, and user files that
        give no split); MNIST and Fashion-MNIST use their standard test sets.
    """
    if binarization not in BINARIZE:  # before loading: a typo should not cost a 60000-image read
        raise DataError(f"binarize must be one of {BINARIZE}, got {binarization!r}")
    if name == "digits":
        data = load_digits(test_fraction)
    elif name in IDX_DATASETS:
        data = load_idx_dataset(str(name), data_dir)
    elif name == "cifar10":
        train, train_labels, test, test_labels = read_cifar10(data_dir)
        data = Dataset("cifar10", train, test, CIFAR10_SHAPE, train_labels, test_labels)
    elif is_array_path(name):
        data = load_array_dataset(name, test_fraction)
    else:
        raise DataError(
            f"dataset must be one of {', '.join(DATASETS)} or a path to a .npy/.npz file; got {str(name)!r}"
        )
    return apply_binarization(data, binarization)


def apply_binarization(data: Dataset, binarization: str) -> Dataset:
    """Return ``data`` binarized as ``binarization`` says (see :func:`load_dataset`)."""
    if binarization not in BINARIZE:
        raise DataError(f"binarize must be one of {BINARIZE}, got {binarization!r}")
    if binarization == "none":
        return data
    for split, x in (("train", data.train), ("test", data.test)):
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise DataError(
                f"binarization needs grey levels in [0, 1]; the {split} set has values in "
                f"[{float(x.min()):g}, {float(x.max()):g}]: rescale it first"
            )
    test = binarize(data.test, BINARIZE_SEED + 1)
    if binarization == "static":
        return replace(data, train=binarize(data.train, BINARIZE_SEED), test=test)
    return replace(data, test=test, dynamic_binarization=True)


#: seed of the fixed choice of validation rows (:func:`split_validation`)
VALIDATION_SEED = 4321


def split_validation(data: Dataset, rows: int, seed: int = VALIDATION_SEED) -> tuple[Dataset, torch.Tensor]:
    """Hold out ``rows`` training rows for validation: ``(data with the other training rows, validation rows)``.

    The rows are a random choice fixed by ``seed`` (the same whatever the run's seed, so runs that
    differ in their seed select on the same rows); the test set is never touched. Under dynamic
    binarization the validation rows are binarized once, with a fixed seed, like the test set.
    """
    n = data.train.shape[0]
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 < rows < n:
        raise DataError(
            f"validation must hold out between 1 and {n - 1} of the {n} training rows of {data.name}, got {rows!r}: "
            "lower --validation"
        )
    order = torch.as_tensor(np.random.RandomState(seed).permutation(n), device=data.train.device)
    held, kept = order[:rows], order[rows:]
    validation = data.train.index_select(0, held)
    if data.dynamic_binarization:
        validation = binarize(validation, BINARIZE_SEED + 2)
    labels = data.train_labels
    kept_labels = None if labels is None else labels.index_select(0, kept.to(labels.device))
    return replace(data, train=data.train.index_select(0, kept), train_labels=kept_labels), validation


def check_dataset(data: Dataset, likelihood: str) -> Dataset:
    """``data`` with both splits checked against ``likelihood`` (:func:`validate_data`; the training
    split as grey levels under dynamic binarization), marked as checked so that the training loop
    does not check it again."""
    if data.checked == likelihood:
        return data
    for split, x in (("train", data.train), ("test", data.test)):
        grey = data.dynamic_binarization and split == "train"
        validate_data(x, data.x_dim, likelihood, f"the {split} set of {data.name}", grey_levels=grey)
    return replace(data, checked=likelihood)


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


def minibatches(
    x: torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    start: int = 0,
) -> Iterator[torch.Tensor]:
    """Minibatches of the rows of ``x``, sliced on ``x``'s own device.

    With ``shuffle``, one permutation (an epoch's) is drawn on the device when this is called, not
    lazily; each batch is then a single ``index_select``. ``drop_last`` drops a final batch
    smaller than ``batch_size``. ``start`` skips the first ``start`` batches of the epoch (after the
    permutation is drawn, so a resumed epoch sees the same batches as an uninterrupted one).
    """
    positive_int("batch_size", batch_size)
    n = x.shape[0]
    count = n // batch_size if drop_last else math.ceil(n / batch_size)
    if not 0 <= start <= count:
        raise DataError(f"start must be in [0, {count}] (batches per epoch), got {start}")
    order = torch.randperm(n, device=x.device, generator=generator) if shuffle else None

    def batches() -> Iterator[torch.Tensor]:
        for i in range(start, count):
            if order is None:
                yield x[i * batch_size : (i + 1) * batch_size]
            else:
                yield x.index_select(0, order[i * batch_size : (i + 1) * batch_size])

    return batches()
