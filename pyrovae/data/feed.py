r"""The batches of an epoch (:func:`batch_source`): sliced from device-resident rows
(:class:`ResidentBatches`) or read from disk through a ``torch.utils.data.DataLoader``
(:class:`StreamedBatches`), with the same numbers either way.

An epoch draws, from torch's global generators and in this order,

1. the order of the rows, ``torch.randperm(N)`` on the training device;
2. under dynamic binarization, one seed :math:`s` (``torch.randint`` on the CPU generator).

Batch :math:`i` holds rows ``order[i*B:(i+1)*B]``; under dynamic binarization it is
:math:`x' = [u < x]` with :math:`u \sim U(0, 1)^{B \times D}` drawn by a generator on the training
device seeded with :math:`s + i`. Every draw of batch :math:`i` depends on :math:`s` and :math:`i`
alone, so an epoch resumed at batch :math:`i` sees the batches an uninterrupted one sees, and a
rank that reads only its rows of a global batch (``shard``) binarizes them with that batch's noise.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .datasets import Dataset
from .rows import Rows

__all__ = ["batch_source", "ResidentBatches", "StreamedBatches", "binarize_batch", "PREFETCH"]

#: batches each worker reads ahead
PREFETCH = 2

Shard = Callable[[torch.Tensor], tuple[Any, ...]]


def binarize_batch(
    x: torch.Tensor, seed: int, batch: int, total: int, rows: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Rows ``x`` of grey levels drawn as :math:`[u < x]`: :math:`u` the ``(total, D)`` noise of the
    global batch ``batch`` (seeded ``seed + batch``), of which ``x`` holds rows ``rows`` (all when ``None``)."""
    generator = torch.Generator(device=x.device).manual_seed(seed + batch)
    noise = torch.rand(total, x.shape[1], generator=generator, device=x.device, dtype=x.dtype)
    if rows is not None:
        noise = noise.index_select(0, rows.to(x.device))
    return (noise < x).to(x.dtype)


def _epoch_draws(n: int, device: torch.device, dynamic: bool) -> tuple[torch.Tensor, int | None]:
    order = torch.randperm(n, device=device)
    seed = int(torch.randint(0, 2**62, ())) if dynamic else None
    return order, seed


class ResidentBatches:
    """The batches of rows held in one tensor on the training device (one ``index_select`` each)."""

    def __init__(self, data: Dataset, batch_size: int, drop_last: bool):
        self.x, self.dynamic, self.batch_size = data.train, data.dynamic_binarization, batch_size
        n = self.x.shape[0]
        self.count = n // batch_size if drop_last else math.ceil(n / batch_size)

    def epoch(self, start: int, shard: Shard) -> Iterator[tuple[Any, ...]]:
        """Draw this epoch's order (and binarization seed) now; the batches from ``start`` on, each
        ``shard``'s arguments of a step."""
        _check_start(start, self.count)
        order, seed = _epoch_draws(self.x.shape[0], self.x.device, self.dynamic)
        size = self.batch_size

        def batches() -> Iterator[tuple[Any, ...]]:
            for i in range(start, self.count):
                rows = self.x.index_select(0, order[i * size : (i + 1) * size])
                yield shard(rows if seed is None else binarize_batch(rows, seed, i, rows.shape[0]))

        return batches()


def _check_start(start: int, count: int) -> None:
    if not 0 <= start <= count:
        raise DataError(f"start must be in [0, {count}] (batches per epoch), got {start}")


class _RowReader(torch.utils.data.Dataset):
    """A map-style dataset whose items are whole batches: ``reader[indices]`` reads those rows."""

    def __init__(self, rows: Rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, indices: np.ndarray) -> torch.Tensor:
        return self.rows.read(indices)


class _EpochSampler(torch.utils.data.Sampler):
    """The row indices of each batch this rank reads in the current epoch (set before each epoch)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _ignore_interrupts(worker: int) -> None:
    """In a worker: leave Ctrl-C to the training process, which stops after its step and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StreamedBatches:
    """The batches of rows kept on disk, read by a ``DataLoader`` (``workers`` processes, pinned
    memory on a GPU, each worker :data:`PREFETCH` batches ahead, workers kept between epochs) and
    copied to the device one batch ahead. Each rank reads only its rows of every global batch.

    With no workers the training process reads each batch itself, as a ``DataLoader`` without
    workers would (pinned on a GPU) but without its per-batch machinery (fetcher, profiler
    annotation, conversion), which a batch of a page-cached file would otherwise spend as long in
    as in reading."""

    def __init__(self, data: Dataset, batch_size: int, drop_last: bool, device: torch.device, dtype: torch.dtype):
        rows = data.train
        self.rows, self.dynamic, self.batch_size = rows, data.dynamic_binarization, batch_size
        self.device, self.dtype = torch.device(device), dtype
        self.count = len(rows) // batch_size if drop_last else math.ceil(len(rows) / batch_size)
        self.sampler = _EpochSampler()
        workers, self.pin = data.workers, self.device.type == "cuda"
        self.loader = torch.utils.data.DataLoader(
            _RowReader(rows), batch_size=None, sampler=self.sampler, num_workers=workers,
            pin_memory=self.pin, prefetch_factor=PREFETCH, persistent_workers=True,
            worker_init_fn=_ignore_interrupts,
            generator=torch.Generator(),  # (not the global one: the run's draws stay the resident path's)
        ) if workers else None  # fmt: skip

    def epoch(self, start: int, shard: Shard) -> Iterator[tuple[Any, ...]]:
        """As :meth:`ResidentBatches.epoch`: the same draws, the same batches; this rank's rows only are read."""
        _check_start(start, self.count)
        order, seed = _epoch_draws(len(self.rows), self.device, self.dynamic)
        order, size = order.numpy(force=True), self.batch_size
        plans, reads, positions = [], [], {}
        for i in range(start, self.count):
            batch = order[i * size : (i + 1) * size]
            if len(batch) not in positions:  # (this rank's positions in a global batch of that size: one shard)
                at, *layout = shard(torch.arange(len(batch)))
                positions[len(batch)] = at, at.numpy(), layout
            at, rows, layout = positions[len(batch)]
            plans.append((i, len(batch), at, layout))
            reads.append(batch[rows])
        self.sampler.batches = reads
        return self._batches(plans, seed, reads)

    def _batches(self, plans: list, seed: int | None, reads: list[np.ndarray]) -> Iterator[tuple[Any, ...]]:
        if not plans:
            return
        read = iter(self.loader) if self.loader is not None else map(self._read, reads)
        ahead = self._to_device(self._next(read, plans[0]))
        for k, (i, total, at, layout) in enumerate(plans):
            rows = ahead
            if k + 1 < len(plans):  # (the next batch's copy starts while this one trains)
                ahead = self._to_device(self._next(read, plans[k + 1]))
            if seed is not None:
                rows = binarize_batch(rows, seed, i, total, at)
            yield (rows, *layout)

    def _read(self, at: np.ndarray) -> torch.Tensor:
        """Rows ``at``, read in this process (no workers), pinned for the copy to a GPU."""
        rows = self.rows.read(at)
        return rows.pin_memory() if self.pin else rows

    def _next(self, read: Iterator[torch.Tensor], plan: tuple) -> torch.Tensor:
        try:
            return next(read)
        except DataError as error:
            if "\n" not in str(error):  # (read in this process: its own line)
                raise
            cause = str(error).strip().splitlines()[-1].split("DataError: ", 1)[-1]
        except Exception as error:  # noqa: BLE001 (a worker's failure, re-raised here with its traceback as text)
            lines = [line for line in str(error).strip().splitlines() if line.strip()]
            cause = lines[-1].strip() if lines else type(error).__name__
        raise DataError(
            f"reading batch {plan[0] + 1} from {self.rows.source} failed ({cause}): check that file, "
            "or run with --workers 0 to read it in the training process"
        ) from None

    def _to_device(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.to(self.device, non_blocking=True).to(self.dtype)


def batch_source(
    data: Dataset, batch_size: int, drop_last: bool, device: torch.device, dtype: torch.dtype
) -> ResidentBatches | StreamedBatches:
    """The batches of ``data``'s training rows: streamed where they are on disk, else resident."""
    if data.streamed:
        return StreamedBatches(data, batch_size, drop_last, device, dtype)
    return ResidentBatches(data, batch_size, drop_last)
