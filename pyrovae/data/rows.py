"""Rows of an array that stays where it is (:class:`Rows`): a memory-mapped ``.npy`` file or the
decoded cache of an image folder, read a few rows at a time.

A :class:`~pyrovae.data.Dataset` whose ``train`` is a :class:`Rows` is trained on through the
streaming path (:mod:`pyrovae.data.feed`); :meth:`Rows.read` is the one conversion of stored values
to the floats a model sees, so the resident path (:meth:`Rows.materialize`) and the streaming path
see the same numbers.
"""

from __future__ import annotations

import math
import mmap
import os

import numpy as np
import torch

from ..errors import DataError
from .budget import reads_through_mapping
from .checks import validate_data

__all__ = ["Rows", "CHUNK_ROWS"]

#: rows read at a time where a whole set is gone through (checks, the first rows of a set)
CHUNK_ROWS = 4096


class Rows:
    """Rows ``index`` of ``array`` (shape ``(M, ...)``; all of them when ``index`` is ``None``), as
    flattened float rows: ``uint8`` pixels become ``k/255`` when ``pixels`` is set, ``float64`` stays
    ``float64`` and everything else becomes ``float32`` (as the resident loaders convert them).

    :param array: a NumPy array, typically ``np.load(path, mmap_mode="r")`` (nothing read yet).
    :param index: the rows of ``array`` that belong to these rows, in their order.
    :param str source: the file the rows come from, as messages name it.
    :param bool pixels: the values are 8-bit pixels, scaled to ``[0, 1]``.
    """

    def __init__(
        self,
        array: np.ndarray,
        index: np.ndarray | None,
        source: str,
        pixels: bool = False,
        file: _RowFile | None = None,
    ):
        if array.ndim < 2 or array.dtype.kind not in "biuf":
            raise DataError(
                f"{source} holds an array of shape {array.shape} and dtype {array.dtype}; expected numbers of shape "
                "(N, ...), one data point per row: save a numeric array with np.save"
            )
        self.array, self.source, self.pixels = array, source, pixels
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.dtype = torch.float64 if array.dtype == np.float64 and not pixels else torch.float32
        #: how the rows of ``array``'s file are read (shared with the rows :meth:`take` makes); ``None``: not a file
        self.file = file if file is not None else _RowFile(array) if _file_rows(array) else None

    @property
    def shape(self) -> tuple[int, int]:
        n = self.array.shape[0] if self.index is None else len(self.index)
        return n, math.prod(self.array.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes these rows take as float rows."""
        n, d = self.shape
        return n * d * (8 if self.dtype == torch.float64 else 4)

    def take(self, rows: np.ndarray | torch.Tensor) -> Rows:
        """These rows' rows ``rows`` (positions in this set), still unread."""
        rows = np.asarray(rows.cpu() if torch.is_tensor(rows) else rows, dtype=np.int64)
        at = rows if self.index is None else self.index[rows]
        return Rows(self.array, at, self.source, self.pixels, self.file)

    def read(self, rows: np.ndarray | torch.Tensor | slice) -> torch.Tensor:
        """Rows ``rows`` (positions in this set) as a ``(len(rows), D)`` float tensor on the CPU, in
        the order asked. Rows of a file are read as :class:`_RowFile` decides (the same values either way)."""
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows.cpu() if torch.is_tensor(rows) else rows, dtype=np.int64)
        at = rows if self.index is None else self.index[rows]
        try:
            values = self.array[at] if self.file is None else self.file.read(at)
        except OSError as error:
            raise DataError(f"cannot read rows of {self.source} ({error}): check the disk and the file") from None
        flat = values.reshape(len(at), -1)
        if self.pixels:
            flat = flat.astype(np.float32)
            flat /= 255.0
        elif flat.dtype != np.float64:
            flat = flat.astype(np.float32, copy=False)  # (values is already a copy of its own)
        return torch.from_numpy(np.ascontiguousarray(flat))

    def chunks(self, size: int = CHUNK_ROWS):
        """``(first row, rows)`` of the whole set, ``size`` rows at a time."""
        for start in range(0, len(self), size):
            yield start, self.read(slice(start, start + size))

    def materialize(self) -> torch.Tensor:
        """Every row, in memory (the resident path)."""
        return self.read(slice(None))

    def check(self, x_dim: int, likelihood: str | None, what: str, grey_levels: bool = False) -> None:
        """:func:`~pyrovae.data.validate_data` on every chunk, naming the first bad row by its number."""
        if len(self) == 0:
            raise DataError(f"{what} is empty: expected at least one row; check that the right data were saved")
        for start, chunk in self.chunks():
            try:
                validate_data(chunk, x_dim, likelihood, what, grey_levels=grey_levels)
            except DataError as error:
                raise DataError(f"{error} (rows {start} to {start + len(chunk) - 1} of {self.source})") from None

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest value (read chunk by chunk)."""
        lo, hi = math.inf, -math.inf
        for _, chunk in self.chunks():
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        return lo, hi

    def __repr__(self) -> str:
        return f"Rows({self.source}, shape={self.shape})"


def _file_rows(array: np.ndarray) -> bool:
    """Whether ``array`` is a whole C-ordered memory map of a file (as ``np.load(..., mmap_mode="r")``
    gives), whose rows can be read with ``os.preadv``."""
    return (
        isinstance(array, np.memmap)
        and isinstance(array.base, mmap.mmap)
        and getattr(array, "filename", None) is not None
        and array.flags.c_contiguous
        and hasattr(os, "preadv")
    )


class _RowFile:
    """The file behind a memory-mapped array, and how its rows are read: through the mapping (NumPy
    indexing) where the whole file is within the memory budget, else with ``os.preadv``
    (:func:`~pyrovae.data.budget.reads_through_mapping` says why). Decided at the first read, once
    for the file; the descriptor ``os.preadv`` reads from is opened once per process (DataLoader
    workers open their own) and closed with this object."""

    def __init__(self, array: np.memmap):
        self.array, self.path, self.offset = array, array.filename, array.offset
        self.values = array.view(np.ndarray)  # (the same bytes, indexed without np.memmap's Python-level __getitem__)
        self.row_bytes = array.dtype.itemsize * math.prod(array.shape[1:])
        self.end = self.offset + array.shape[0] * self.row_bytes  # (the file's size, whole)
        self.mapped: bool | None = None  # (decided at the first read)
        self._fd: int | None = None
        self._pid: int | None = None

    def read(self, at: np.ndarray) -> np.ndarray:
        """Rows ``at`` of the file, in that order."""
        if self.mapped is not False:
            # the size, read before each read through the mapping: a page of it past a file cut short
            # since would end the process (SIGBUS), so that is the error preadv gives (a microsecond a batch)
            size = os.path.getsize(self.path)
            if self.mapped is None:  # (a file cut short since it was opened is read with os.preadv, which says so)
                self.mapped = size >= self.end and reads_through_mapping(size)
            if self.mapped:
                if size < self.end:
                    raise OSError(f"the file is shorter than its {self.array.shape[0]} rows: it was cut short")
                return self.values[at]
        order = np.argsort(at, kind="stable")  # (read in file order: each page touched once)
        values = np.empty((len(at), *self.array.shape[1:]), dtype=self.array.dtype)
        values[order] = self._pread(at[order])
        return values

    def _pread(self, at: np.ndarray) -> np.ndarray:
        """Rows ``at`` (ascending), read with ``os.preadv`` into one buffer (consecutive rows in one
        call). The bytes go through the page cache, not through this process's mapping: touching a
        row of a mapped file maps whole pages (and the kernel maps more around them), so a set larger
        than memory read through the mapping grows the process with it."""
        array, row_bytes = self.array, self.row_bytes  # (array: its dtype and shape)
        buffer = np.empty(len(at) * row_bytes, dtype=np.uint8)
        view = memoryview(buffer)
        fd = self._descriptor()
        breaks = np.flatnonzero(np.diff(at) != 1) + 1  # (runs of consecutive rows)
        for first, stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(at)], strict=True):
            want = (stop - first) * row_bytes
            got = os.preadv(fd, [view[first * row_bytes : stop * row_bytes]], self.offset + int(at[first]) * row_bytes)
            if got != want:
                raise OSError(f"the file ends before row {int(at[stop - 1])}: it was cut short")
        return buffer.view(array.dtype).reshape(len(at), *array.shape[1:])

    def _descriptor(self) -> int:
        """This process's descriptor of the file (a worker forked with the parent's opens its own)."""
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}  # (a descriptor means nothing in another process)

    def __del__(self, _getpid=os.getpid, _close=os.close) -> None:
        # (os's functions bound at definition: at interpreter exit the module may be torn down first)
        if self._fd is not None and self._pid == _getpid():
            try:
                _close(self._fd)
            except OSError:  # (already closed: nothing to give back)
                pass
