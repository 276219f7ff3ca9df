"""Data sets, binarization, validation against the likelihood, and device-resident batching.

A :class:`Dataset` holds flattened train and test tensors (rows are data points) and the image
shape of one row, so pictures are drawn at the right size. Minibatches are sliced from tensors
that already live on the training device (:func:`minibatches`): no per-item collation and no
host-to-device copy per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

__all__ = ["Dataset", "load_dataset", "load_digits", "binarize", "validate_data", "minibatches", "DATASETS", "BINARIZE"]

DATASETS = ("digits",)
BINARIZE = ("none", "static", "dynamic")

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


def load_digits(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    """scikit-learn's embedded 8x8 digits (1797 images), grey levels scaled to [0, 1].

    The train/test split is fixed by ``split_seed`` (default: 1437 train, 360 test).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    order = torch.as_tensor(np.random.RandomState(split_seed).permutation(len(x)))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], x[test], (8, 8), y[train], y[test])


def binarize(x: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """One draw :math:`x' \\sim \\mathrm{Bernoulli}(x)` from grey levels in [0, 1], with a fixed seed."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.bernoulli(x.cpu(), generator=generator).to(x.device)


def load_dataset(name: str = "digits", binarization: str = "none") -> Dataset:
    """Load a data set by name and binarize it.

    :param str name: one of :data:`DATASETS`.
    :param str binarization: ``none`` (grey levels), ``static`` (one fixed draw for train and test)
        or ``dynamic`` (a fresh draw of the train set every epoch; the test set is drawn once).
    """
    if name == "digits":
        data = load_digits()
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    return apply_binarization(data, binarization)


def apply_binarization(data: Dataset, binarization: str) -> Dataset:
    """Return ``data`` binarized as ``binarization`` says (see :func:`load_dataset`)."""
    if binarization not in BINARIZE:
        raise ValueError(f"binarize must be one of {BINARIZE}, got {binarization!r}")
    if binarization == "none":
        return data
    for split, x in (("train", data.train), ("test", data.test)):
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(
                f"binarization needs grey levels in [0, 1]; the {split} set has values in "
                f"[{float(x.min()):g}, {float(x.max()):g}]: rescale it first"
            )
    test = binarize(data.test, BINARIZE_SEED + 1)
    if binarization == "static":
        return replace(data, train=binarize(data.train, BINARIZE_SEED), test=test)
    return replace(data, test=test, dynamic_binarization=True)


def validate_data(x: torch.Tensor, x_dim: int, likelihood: str, what: str = "data", grey_levels: bool = False) -> None:
    """Raise :class:`ValueError` unless ``x`` is a finite ``(N, x_dim)`` float tensor in the
    likelihood's support (``{0, 1}`` for Bernoulli; ``[0, 1]`` when ``grey_levels`` is set,
    i.e. the data are binarized on the fly).
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"{what} must be a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}")
    if x.dim() != 2 or x.shape[1] != x_dim:
        raise ValueError(f"{what} must have shape (N, {x_dim}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} is empty: expected at least one row")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} has NaN or infinite values: expected finite numbers")
    if likelihood == "bernoulli":
        lo, hi = float(x.min()), float(x.max())
        if grey_levels:
            if lo < 0 or hi > 1:
                raise ValueError(
                    f"{what} has values in [{lo:g}, {hi:g}]; dynamic binarization needs [0, 1]: rescale it"
                )
        elif not ((x == 0) | (x == 1)).all():
            raise ValueError(
                f"{what} has values in [{lo:g}, {hi:g}] that are not all 0 or 1; the Bernoulli likelihood "
                "needs binary data: binarize it (--binarize static|dynamic) or use --likelihood gaussian"
            )


def minibatches(
    x: torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Minibatches of the rows of ``x``, sliced on ``x``'s own device.

    With ``shuffle``, one permutation per call (an epoch) is drawn on the device; each batch is a
    single ``index_select``. ``drop_last`` drops a final batch smaller than ``batch_size``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = x.shape[0]
    count = n // batch_size if drop_last else math.ceil(n / batch_size)
    if shuffle:
        order = torch.randperm(n, device=x.device, generator=generator)
        for i in range(count):
            yield x.index_select(0, order[i * batch_size : (i + 1) * batch_size])
    else:
        for i in range(count):
            yield x[i * batch_size : (i + 1) * batch_size]
