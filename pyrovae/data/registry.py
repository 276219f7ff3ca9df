"""Data sets as classes (:class:`DatasetSource`), one registration each (:func:`register_dataset`).

A data set of your own is a subclass whose :meth:`~DatasetSource.load` returns a
:class:`~pyrovae.data.Dataset`, registered under a name::

    from pyrovae.data import Dataset, DatasetSource, register_dataset

    class Noise(DatasetSource):
        def load(self) -> Dataset:
            x = torch.rand(100, 16)
            return Dataset("noise", x[:80], x[80:], (4, 4))

    register_dataset("noise", Noise)   # pyrovae fit --dataset noise

The built-in data sets are registered the same way (:mod:`pyrovae.spec.datasets`): ``digits``,
``mnist``, ``fashion-mnist``, ``cifar10``, ``celeba``, ``folder:PATH`` and ``.npy`` / ``.npz`` files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import DataError
from ..spec.datasets import dataset_class, dataset_names, find_dataset, register_dataset

if TYPE_CHECKING:
    from .datasets import Dataset

__all__ = ["DataOptions", "DatasetSource", "register_dataset", "dataset_names", "source_of"]


@dataclass(frozen=True)
class DataOptions:
    """The options every data set is built with (the run spec's ``[data]`` section).

    :ivar data_dir: the folder a named data set is read from (``None``: its default).
    :ivar test_fraction: the share held out for testing where the data give no split.
    :ivar image_size: the side images are center-cropped and resized to (``None``: as they are,
        or the data set's default).
    :ivar cache_dir: where decoded images are cached (``None``: a ``.pyrovae-cache`` folder in the
        image folder).
    :ivar skip_bad_images: leave out images that cannot be decoded, and count them, rather than stop.
    """

    data_dir: str | None = None
    test_fraction: float = 0.2
    image_size: int | None = None
    cache_dir: str | None = None
    skip_bad_images: bool = False


class DatasetSource:
    """One data set: made from what follows its prefix in ``--dataset`` (``argument``: the path of
    ``folder:PATH`` or of a ``.npy`` file; ``None`` for a plain name) and the :class:`DataOptions`.

    :meth:`check` runs before a run directory is made (cheap: no data read); :meth:`load` reads the
    data. ``train`` of the :class:`~pyrovae.data.Dataset` it returns may be a
    :class:`~pyrovae.data.rows.Rows` (read from disk as batches are drawn) or a tensor.
    """

    def __init__(self, argument: str | None, options: DataOptions):
        self.argument, self.options = argument, options

    def check(self) -> None:
        """Refuse what cannot be loaded, without reading the data (default: nothing to check)."""

    def load(self) -> Dataset:
        raise NotImplementedError(f"{type(self).__name__} must define load() -> pyrovae.data.Dataset")


def source_of(dataset: str, options: DataOptions) -> DatasetSource:
    """The :class:`DatasetSource` that ``dataset`` names, built with ``options``."""
    key, argument = find_dataset(dataset)
    cls = dataset_class(key)
    if not (isinstance(cls, type) and issubclass(cls, DatasetSource)):
        raise DataError(f"data set {key!r} is registered to {cls!r}, which is not a pyrovae.data.DatasetSource")
    return cls(argument, options)
