"""CIFAR-10 from its standard binary files (the "CIFAR-10 binary version").

The folder holds ``data_batch_1.bin`` ... ``data_batch_5.bin`` (training) and ``test_batch.bin``
(test), as the archive ``cifar-10-binary.tar.gz`` unpacks them (into ``cifar-10-batches-bin/``,
which is looked in too). Each file is a sequence of 3073-byte records: one label byte (0-9), then
the 32x32 image as 3072 bytes, the red plane, then the green, then the blue, each row by row.
That is the (C, H, W) order of a flattened row here, so the image shape is ``(3, 32, 32)``; pixels
are scaled from ``0..255`` to ``k/255`` in [0, 1]. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

__all__ = [
    "read_cifar10",
    "write_cifar10_file",
    "CIFAR10_TRAIN_FILES",
    "CIFAR10_TEST_FILE",
    "CIFAR10_RECORD",
    "CIFAR10_SHAPE",
]

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_SHAPE = (3, 32, 32)
#: bytes per record: the label, then the pixels
CIFAR10_RECORD = 1 + 3 * 32 * 32

_HOW_TO_GET = (
    "download cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it, and pass the "
    "folder cifar-10-batches-bin as --data-dir"
)


def _folder(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is None:
        raise DataError(f"cifar10 has no default folder to look in: pass --data-dir; {_HOW_TO_GET}")
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"cifar10: no folder {folder}; {_HOW_TO_GET}")
    inner = folder / "cifar-10-batches-bin"
    if not (folder / CIFAR10_TEST_FILE).exists() and inner.is_dir():
        return inner
    return folder


def _read(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``(N, 3072)`` scaled to [0, 1] and labels ``(N,)`` of one file, checked."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if raw.size == 0 or raw.size % CIFAR10_RECORD:
        whole, extra = divmod(raw.size, CIFAR10_RECORD)
        raise DataError(
            f"{path} has {raw.size} bytes, not a whole number of {CIFAR10_RECORD}-byte records (1 label byte + "
            f"3072 pixel bytes): {whole} records and {extra} bytes over, so the file is truncated or not a CIFAR-10 "
            "binary file; download it again"
        )
    records = raw.reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0]
    if labels.max() > 9:
        row = int(np.argmax(labels > 9))
        raise DataError(
            f"{path}: record {row} has the label {int(labels[row])}; CIFAR-10 labels are 0 to 9, so this is not a "
            "CIFAR-10 binary file (CIFAR-100's records are 3074 bytes); download it again"
        )
    pixels = torch.from_numpy(records[:, 1:].astype(np.float32) / 255.0)
    return pixels, torch.from_numpy(labels.astype(np.int64))


def read_cifar10(
    data_dir: str | os.PathLike[str] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR-10's standard split from ``data_dir``: training pixels ``(50000, 3072)`` and labels, test
    pixels ``(10000, 3072)`` and labels (as many rows as the files hold).

    :raises DataError: one line for a missing folder or file (naming every missing file and where
        to get them), a truncated file, or labels outside 0-9.
    """
    folder = _folder(data_dir)
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(f"cifar10: {folder} lacks {', '.join(missing)} (expected {', '.join(names)}); {_HOW_TO_GET}")
    train = [_read(folder / name) for name in CIFAR10_TRAIN_FILES]
    test, test_labels = _read(folder / CIFAR10_TEST_FILE)
    return torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]), test, test_labels


def write_cifar10_file(path: str | os.PathLike[str], images: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``images`` (``(N, 3, 32, 32)`` or ``(N, 3072)`` bytes) and ``labels`` (``(N,)``, 0-9) in the
    CIFAR-10 binary format (for tests and small examples)."""
    images = np.asarray(images, dtype=np.uint8).reshape(len(labels), -1)
    if images.shape[1] != CIFAR10_RECORD - 1:
        raise DataError(f"CIFAR-10 images have 3072 bytes each, got {images.shape[1]}")
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], images], axis=1)
    path = Path(path)
    records.tofile(path)
    return path
