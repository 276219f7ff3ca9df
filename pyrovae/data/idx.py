"""The IDX file format of MNIST and Fashion-MNIST: read and write, raw or gzip-compressed.

An IDX file is a header followed by the data, all big-endian::

    bytes 0-1   0x00 0x00                  (the magic number starts with two zero bytes)
    byte  2     type code: 0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions k
    4k bytes    the k sizes, unsigned 32-bit integers
    then        prod(sizes) values, row-major (C order)

MNIST stores images as ``(N, 28, 28)`` unsigned bytes (magic ``0x00000803``) and labels as
``(N,)`` unsigned bytes (``0x00000801``). Files are often shipped gzip-compressed (``.gz``); a
gzip file is recognised by its own magic bytes ``1f 8b``, whatever its name.

References:

- Y. LeCun, C. Cortes, C. J. C. Burges, *The MNIST database of handwritten digits*,
  http://yann.lecun.com/exdb/mnist/ (section "File formats for the MNIST database").
- H. Xiao, K. Rasul, R. Vollgraf, *Fashion-MNIST*, arXiv:1708.07747 (2017).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["read_idx", "write_idx", "find_idx_file", "IDX_DTYPES", "IDX_FILES"]

#: IDX type code -> NumPy dtype (big-endian, as stored in the file)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: the standard file names of an MNIST-style data set (each may also end in ``.gz``)
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_GZIP_MAGIC = b"\x1f\x8b"


def _codes() -> str:
    return ", ".join(f"0x{code:02X} ({dtype.name})" for code, dtype in IDX_DTYPES.items())


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no IDX file at {path}: check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory: expected an IDX file") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"{path} starts like a gzip file but cannot be decompressed ({error}): "
            "it is truncated or corrupted; download it again"
        ) from None


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array of its stored shape.

    The array is in native byte order and owns its memory. Gzip is detected from the first two
    bytes of the file, not from its name.

    :param path: the file to read.
    :returns: an array of shape ``(d_1, ..., d_k)`` as given in the header, e.g. ``(60000, 28, 28)``
        of ``uint8`` for MNIST training images.
    :raises ValueError: if the file is missing, is not gzip-decompressible although it starts like
        gzip, has a bad magic number or an unsupported type code, or holds more or fewer data
        bytes than its header announces (a truncated or corrupted file).
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(
            f"{path} has {len(raw)} bytes, fewer than the 4-byte IDX magic number: "
            "the file is truncated or empty; download it again"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path} has magic number 0x{raw[:4].hex().upper()}; an IDX file starts with two zero bytes "
            "(e.g. 0x00000803 for MNIST images): this is not an IDX file, or it is corrupted; download it again"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(
            f"{path} has IDX type code 0x{code:02X}; expected one of {_codes()}: the file is corrupted "
            "or not an IDX file"
        )
    if ndim == 0:
        raise DataError(f"{path} has 0 dimensions in its IDX header; expected at least 1: the file is corrupted")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"{path} has {len(raw)} bytes, fewer than the {header}-byte header of a {ndim}-dimensional IDX "
            "file: the file is truncated; download it again"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        why = "truncated" if found < expected else "longer than its header says (corrupted?)"
        raise DataError(
            f"{path} is {why}: its header says shape {shape} of {dtype.name}, i.e. {expected} data bytes, "
            f"but {found} follow the header; download it again"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a native-order, writable copy


def write_idx(path: str | os.PathLike[str], array: np.ndarray, gzip: bool = False) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed if ``gzip`` is true.

    :param path: the file to write (its name is used as given; add ``.gz`` yourself if wanted).
    :param array: an array of 1 to 255 dimensions whose dtype is one of :data:`IDX_DTYPES`
        (e.g. ``uint8`` images of shape ``(N, 28, 28)``).
    :param bool gzip: compress with gzip (a fixed timestamp, so the bytes are reproducible).
    :returns: ``path``.
    :raises ValueError: for an unsupported dtype or rank.
    """
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(
            f"IDX cannot store dtype {array.dtype}; expected one of {_codes()}: cast the array first, "
            "e.g. array.astype(np.uint8)"
        )
    if not 1 <= array.ndim <= 255:
        raise DataError(f"IDX stores arrays of 1 to 255 dimensions, got {array.ndim}: reshape the array")
    if max(array.shape) >= 2**32:
        raise DataError(f"IDX sizes are 32-bit; got shape {array.shape}")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    payload = header + body
    path = Path(path)
    if gzip:
        payload = _gzip_compress(payload)
    path.write_bytes(payload)
    return path


def _gzip_compress(payload: bytes) -> bytes:
    return gzip.compress(payload, mtime=0)


def find_idx_file(data_dir: str | os.PathLike[str], stem: str) -> Path | None:
    """The file ``stem`` or ``stem.gz`` in ``data_dir`` (also the ``train-images.idx3-ubyte``
    spelling of some mirrors), or ``None`` if none exists.
    """
    data_dir = Path(data_dir)
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    return None
