"""Minibatches of device-resident rows (:func:`minibatches`) and the training rows held out for
model selection (:func:`split_validation`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch

from ..errors import ConfigError, DataError, positive_int
from .checks import validate_data
from .datasets import BINARIZE_SEED, Dataset, binarize
from .rows import Rows

__all__ = ["minibatches", "split_validation", "VALIDATION_SEED", "as_dataset", "train_elbo_rows", "training_rows"]

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
    if isinstance(data.train, Rows):  # (rows on disk: the validation rows are read, the others stay there)
        order = np.random.RandomState(seed).permutation(n)
        held, kept = order[:rows], order[rows:]
        validation = data.train.read(held).to(data.test.device, data.test.dtype)
        train = data.train.take(kept)
        kept = torch.as_tensor(kept)
    else:
        order = torch.as_tensor(np.random.RandomState(seed).permutation(n), device=data.train.device)
        held, kept = order[:rows], order[rows:]
        validation, train = data.train.index_select(0, held), data.train.index_select(0, kept)
    if data.dynamic_binarization:
        validation = binarize(validation, BINARIZE_SEED + 2)
    labels = data.train_labels
    kept_labels = None if labels is None else labels.index_select(0, kept.to(labels.device))
    return replace(data, train=train, train_labels=kept_labels), validation


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


def as_dataset(
    data: Dataset | torch.Tensor, x_dim: int, likelihood: str, device: torch.device, dtype: torch.dtype
) -> Dataset:
    """``data`` (a :class:`Dataset`, or a ``(N, x_dim)`` tensor of training rows) on ``device`` in
    ``dtype``, checked against ``likelihood`` unless :func:`~pyrovae.data.check_dataset` did so."""
    if not isinstance(data, Dataset):
        if not torch.is_tensor(data):
            raise ConfigError(f"data must be a pyrovae Dataset or a tensor, got {type(data).__name__}")
        data = Dataset("tensor", data, data[:0], (x_dim,))
    data = data.to(device, dtype)
    if data.x_dim == x_dim and data.checked == likelihood:  # (checked once, by pyrovae.data.check_dataset)
        return data
    if isinstance(data.train, Rows):
        data.train.check(x_dim, likelihood, "train data", grey_levels=data.dynamic_binarization)
    else:
        validate_data(data.train, x_dim, likelihood, "train data", grey_levels=data.dynamic_binarization)
    if data.test.shape[0] > 0:
        validate_data(data.test, x_dim, likelihood, "test data")
    return data


def train_elbo_rows(data: Dataset, rows: int) -> torch.Tensor:
    """The first ``rows`` training rows, binarized once (with a fixed seed) under dynamic binarization:
    where the training ELBO is estimated for an objective that is not the ELBO."""
    first = data.train[:rows] if torch.is_tensor(data.train) else data.train.read(slice(rows))
    first = first.to(data.test.device, data.test.dtype)
    return binarize(first) if data.dynamic_binarization else first


#: at most this many training rows are what a model's data-dependent start (:meth:`initialize_from_data`) sees
INIT_ROWS = 10_000


def training_rows(data: Dataset, seed: int | None = 0) -> torch.Tensor:
    """The training rows a model's data-dependent start sees (a VampPrior's pseudo-inputs are drawn
    from them), as a tensor: all of them up to :data:`INIT_ROWS` rows; of a larger set, a random
    subset of :data:`INIT_ROWS` rows from across the whole set, in the set's order, drawn by a
    generator of its own seeded with ``seed`` (the run's draws are not moved). The resident and
    the streaming path (which reads just those rows) give the same rows."""
    train, n = data.train, data.train.shape[0]
    if n <= INIT_ROWS:
        return train if torch.is_tensor(train) else train.read(slice(None))
    generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
    rows = torch.randperm(n, generator=generator)[:INIT_ROWS].sort().values
    return train.index_select(0, rows.to(train.device)) if torch.is_tensor(train) else train.read(rows)
