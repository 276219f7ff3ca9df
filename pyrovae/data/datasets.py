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
- ``celeba``: the aligned-and-cropped CelebA images in ``data_dir`` (:mod:`pyrovae.data.celeba`);
- ``folder:PATH``: a folder of PNG/JPEG images (:mod:`pyrovae.data.folders`);
- a path to a ``.npy`` (memory-mapped) or ``.npz`` file of your own (see :func:`load_array_dataset`).

Each is a class registered by name (:mod:`pyrovae.data.registry`); :func:`load_dataset` then keeps
the training rows in memory or streams them from disk (:func:`pyrovae.data.loading.choose_loading`).

Every loader checks what it read (:func:`validate_data`) and raises :class:`ValueError` with a
message that says what was expected, what was found and what to do.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..spec.names import ARRAY_SUFFIXES, BINARIZE, DATASETS, IDX_DATASETS, is_array_path
from .checks import as_rows, check_labels, validate_data
from .idx import IDX_FILES, find_idx_file, read_idx

__all__ = [
    "Dataset",
    "load_dataset",
    "load_digits",
    "load_idx_dataset",
    "is_array_path",
    "binarize",
    "apply_binarization",
    "check_dataset",
    "check_data_options",
    "DATASETS",
    "IDX_DATASETS",
    "ARRAY_SUFFIXES",
    "DEFAULT_DATA_DIRS",
    "BINARIZE",
]

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
    :ivar test_originals: a binarized data set's test images before binarization (grey levels, for
        pictures beside the binarized ``test``); ``None`` where ``test`` was not binarized.
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
    test_originals: torch.Tensor | None = None
    #: data-loading workers of the streaming path (``train`` a :class:`~pyrovae.data.rows.Rows`)
    workers: int = 0
    #: what the start line says of how the data are read (e.g. ``data=stream (2 workers)``)
    notes: tuple[str, ...] = ()

    @property
    def streamed(self) -> bool:
        """Whether the training rows stay on disk and are read batch by batch."""
        return not torch.is_tensor(self.train)

    @property
    def x_dim(self) -> int:
        return self.train.shape[1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """A copy with the data tensors on ``device`` and of ``dtype`` (labels keep their dtype)."""

        def move(t: torch.Tensor | None, cast: bool) -> torch.Tensor | None:
            if t is None or not torch.is_tensor(t):  # (rows on disk stay there)
                return t
            return t.to(device=device, dtype=dtype if cast else None)

        return replace(
            self,
            train=move(self.train, True),
            test=move(self.test, True),
            train_labels=move(self.train_labels, False),
            test_labels=move(self.test_labels, False),
        )


def check_data_options(
    dataset: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None,
    test_fraction: float,
    binarize: str,
    **options: object,
) -> tuple[str, str | None]:
    """Check the options of :func:`load_dataset` without loading anything (which
    :class:`pyrovae.config.FitConfig` calls before a run directory is made): the data set's name
    in the registry (:mod:`pyrovae.data.registry`) and its own cheap checks; returns ``dataset``
    and ``data_dir`` as strings. ``options``: the other :class:`~pyrovae.data.registry.DataOptions`."""
    from .registry import DataOptions, source_of

    if isinstance(dataset, os.PathLike):
        dataset = os.fspath(dataset)
    if isinstance(data_dir, os.PathLike):
        data_dir = os.fspath(data_dir)
    if not isinstance(dataset, str):
        raise DataError(f"dataset must be a name or a path, got {type(dataset).__name__}")
    if data_dir is not None and not isinstance(data_dir, str):
        raise DataError(f"data_dir must be a folder path or None, got {type(data_dir).__name__}")
    check_test_fraction(test_fraction)
    if binarize not in BINARIZE:
        raise DataError(f"binarize must be one of {', '.join(BINARIZE)}, got {binarize!r}")
    source_of(dataset, DataOptions(data_dir, test_fraction, **options)).check()  # type: ignore[arg-type]
    return dataset, data_dir


def check_test_fraction(test_fraction: float) -> None:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be a number in (0, 1), e.g. 0.2; got {test_fraction!r}")


def split_rows(n: int, test_fraction: float, split_seed: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test row indices: a permutation fixed by ``split_seed``; the test set gets
    ``round(test_fraction * n)`` rows, at least one, and the train set at least one.
    """
    check_test_fraction(test_fraction)
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
    check_test_fraction(test_fraction)
    table = np.loadtxt(_digits_file(), delimiter=",")
    x = torch.as_tensor(table[:, :-1] / 16.0, dtype=torch.float32)
    y = torch.as_tensor(table[:, -1].astype(np.int64), dtype=torch.long)
    train, test = split_rows(len(x), test_fraction, split_seed, "digits")
    return Dataset("digits", x[train], x[test], (8, 8), y[train], y[test])


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
        x = as_rows(images.astype(np.float32) / 255.0, f"{split} images of {images_path}")
        y = check_labels(read_idx(labels_path), len(x), f"the labels in {labels_path}")
        splits[split] = (x, y, tuple(images.shape[1:]))
    (train, train_y, shape), (test, test_y, test_shape) = splits["train"], splits["test"]
    if shape != test_shape:
        raise DataError(
            f"{name}: train images are {shape} but test images are {test_shape} in {folder}: "
            "the files come from different data sets; download them again"
        )
    return Dataset(name, train, test, shape, train_y, test_y)


def binarize(x: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """One draw :math:`x' \\sim \\mathrm{Bernoulli}(x)` from grey levels in [0, 1], with a fixed seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.bernoulli(x.cpu(), generator=generator).to(x.device)


def load_dataset(
    name: str | os.PathLike[str] = "digits",
    binarization: str = "none",
    data_dir: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    *,
    image_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad_images: bool = False,
    data_loader: str = "auto",
    workers: int = 0,
) -> Dataset:
    """Load a data set by name or path, choose how its training rows are read, and binarize it.

    :param name: ``digits`` (scikit-learn's 8x8 digits, offline), ``mnist`` or ``fashion-mnist``
        (IDX files, :func:`load_idx_dataset`), ``cifar10`` (its binary files,
        :func:`~pyrovae.data.cifar.read_cifar10`), ``celeba``, ``folder:PATH``, a path to a ``.npy``
        / ``.npz`` file (:func:`load_array_dataset`), or a name you registered
        (:func:`pyrovae.data.register_dataset`).
    :param str binarization: ``none`` (grey levels), ``static`` (one fixed draw for train and test)
        or ``dynamic`` (a fresh draw of the train set every epoch; the test set is drawn once).
    :param data_dir: folder of the IDX files (``mnist``, ``fashion-mnist``), of the binary files
        (``cifar10``) or of ``img_align_celeba`` (``celeba``); ignored otherwise.
    :param float test_fraction: fraction held out for testing (``digits``, image folders, and user
        files that give no split); the others use their standard test sets.
    :param image_size: image folders: the side images are center-cropped and resized to.
    :param cache_dir: image folders: where the decoded images are cached.
    :param bool skip_bad_images: image folders: leave out (and count) images that cannot be decoded.
    :param str data_loader: ``resident`` (the training rows in one tensor), ``stream`` (read batch
        by batch through a DataLoader) or ``auto`` (:func:`~pyrovae.data.loading.choose_loading`).
    :param int workers: the streaming path's worker processes (0: read in this process).
    """
    from .loading import choose_loading
    from .registry import DataOptions, source_of

    if binarization not in BINARIZE:  # before loading: a typo should not cost a 60000-image read
        raise DataError(f"binarize must be one of {BINARIZE}, got {binarization!r}")
    options = DataOptions(
        None if data_dir is None else os.fspath(data_dir), test_fraction, image_size,
        None if cache_dir is None else os.fspath(cache_dir), skip_bad_images,
    )  # fmt: skip
    source = source_of(os.fspath(name) if isinstance(name, os.PathLike) else name, options)
    data = choose_loading(source.load(), data_loader, workers, binarization)
    return apply_binarization(data, binarization)


def apply_binarization(data: Dataset, binarization: str) -> Dataset:
    """Return ``data`` binarized as ``binarization`` says (see :func:`load_dataset`)."""
    if binarization not in BINARIZE:
        raise DataError(f"binarize must be one of {BINARIZE}, got {binarization!r}")
    if binarization == "none":
        return data
    for split, x in (("train", data.train), ("test", data.test)):
        lo, hi = x.value_range() if not torch.is_tensor(x) else (0.0, 1.0) if not x.numel() else (x.min(), x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"binarization needs grey levels in [0, 1]; the {split} set has values in "
                f"[{float(lo):g}, {float(hi):g}]: rescale it first"
            )
    test = binarize(data.test, BINARIZE_SEED + 1)
    if binarization == "static":
        return replace(data, train=binarize(data.train, BINARIZE_SEED), test=test, test_originals=data.test)
    return replace(data, test=test, dynamic_binarization=True, test_originals=data.test)


def check_dataset(data: Dataset, likelihood: str) -> Dataset:
    """``data`` with both splits checked against ``likelihood`` (:func:`validate_data`; the training
    split as grey levels under dynamic binarization), marked as checked so that the training loop
    does not check it again."""
    if data.checked == likelihood:
        return data
    for split, x in (("train", data.train), ("test", data.test)):
        grey = data.dynamic_binarization and split == "train"
        what = f"the {split} set of {data.name}"
        if torch.is_tensor(x):
            validate_data(x, data.x_dim, likelihood, what, grey_levels=grey)
        else:  # (rows on disk: checked chunk by chunk)
            x.check(data.x_dim, likelihood, what, grey_levels=grey)
    return replace(data, checked=likelihood)
