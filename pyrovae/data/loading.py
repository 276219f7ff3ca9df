"""How the training rows are read: all of them in one tensor (``resident``: the fastest, the
default for sets that fit) or batch by batch from disk through a DataLoader (``stream``), chosen
by ``--data-loader`` (:func:`choose_loading`)."""

from __future__ import annotations

import dataclasses

import torch

from ..errors import ConfigError, DataError
from ..memory import format_bytes
from . import budget as _budget
from .datasets import Dataset
from .rows import Rows

__all__ = ["DATA_LOADERS", "choose_loading"]

DATA_LOADERS = ("auto", "resident", "stream")


def choose_loading(data: Dataset, data_loader: str, workers: int, binarization: str = "none") -> Dataset:
    """``data`` with its training rows in memory or left on disk, as ``data_loader`` says.

    ``resident`` reads rows kept on disk (:class:`~pyrovae.data.rows.Rows`) into a tensor;
    ``stream`` leaves them there (rows already in memory are streamed from that array);
    ``auto`` streams rows kept on disk whose float size is over
    :func:`~pyrovae.data.budget.memory_budget`. Static
    binarization keeps one binarized copy of the training set, so it needs the resident path.
    The choice is noted on the start line (:attr:`~pyrovae.data.Dataset.notes`).
    """
    check_data_fields(None, None, False, data_loader, workers)
    train = data.train
    size = train.nbytes if isinstance(train, Rows) else train.numel() * train.element_size()
    why = ""
    if data_loader == "auto" and isinstance(train, Rows):  # (rows already in memory stay there)
        budget = _budget.memory_budget()
        stream = budget is None or size > budget
        what = "unknown" if budget is None else format_bytes(budget)
        why = f", auto: {format_bytes(size)} {'over' if stream else 'within'} a budget of {what}"
    else:
        stream = data_loader == "stream"
    if stream and binarization == "static":
        if data_loader == "stream":
            raise DataError(
                "static binarization keeps one binarized copy of the training set in memory: with --data-loader "
                "stream use --binarize dynamic or none, or use --data-loader resident"
            )
        stream, why = False, f"{why}; static binarization needs the rows in memory"
    if stream:
        if torch.is_tensor(train):
            train = Rows(train.cpu().numpy(), None, data.name)
        note = f"data=stream ({workers} worker{'s' * (workers != 1)}{why})"
        return dataclasses.replace(data, train=train, workers=workers, notes=(note, *data.notes))
    if isinstance(train, Rows):
        train = train.materialize()
    note = f"data=resident{why[1:] and f' ({why[2:]})'}"
    return dataclasses.replace(data, train=train, workers=0, notes=(note, *data.notes))


#: the run options of data sets beyond the name, folder, split and binarization (added in 0.3)
DATA_FIELDS = ("image_size", "cache_dir", "skip_bad_images", "data_loader", "workers")


def check_data_fields(
    image_size: int | None, cache_dir: str | None, skip_bad_images: bool, data_loader: str, workers: int
) -> dict[str, object]:
    """Check the data options of :data:`DATA_FIELDS`; returns those a data set is built with
    (:class:`~pyrovae.data.registry.DataOptions`: ``image_size``, ``cache_dir``, ``skip_bad_images``)."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive whole number of pixels (e.g. 64) or None, got {image_size!r}")
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir):
        raise ConfigError(f"cache_dir must be a folder path or None, got {cache_dir!r}")
    if not isinstance(skip_bad_images, bool):
        raise ConfigError(f"skip_bad_images must be true or false, got {skip_bad_images!r}")
    if data_loader not in DATA_LOADERS:
        raise ConfigError(f"data_loader must be one of {', '.join(DATA_LOADERS)}, got {data_loader!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be a whole number >= 0 (0: read in the training process), got {workers!r}")
    return {"image_size": image_size, "cache_dir": cache_dir, "skip_bad_images": skip_bad_images}
