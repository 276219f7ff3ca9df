"""``--dataset folder:PATH``: a folder tree of images (:class:`ImageFolder`), decoded once into a
memory-mapped cache (:mod:`pyrovae.data.image_cache`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .datasets import Dataset, split_rows
from .image_cache import DecodedImages, decoded_images
from .registry import DatasetSource
from .rows import Rows

__all__ = ["ImageFolder", "images_dataset"]


def images_dataset(name: str, images: DecodedImages, train: list[int], test: list[int]) -> Dataset:
    """A :class:`~pyrovae.data.Dataset` of decoded ``images``: rows ``train`` left on disk (read as
    they are used, or all at once on the resident path), rows ``test`` read now; pixels scaled to
    ``k/255``. Grey images have the shape ``(H, W)``, RGB images ``(3, H, W)``."""
    rows = Rows(images.array, None, str(images.path), pixels=True)
    return Dataset(name, rows.take(train), rows.read(test), tuple(images.array.shape[1:]), notes=tuple(images.notes))


class ImageFolder(DatasetSource):
    """The PNG/JPEG/... images in the folder ``PATH`` and its subfolders (sorted by name), grey or
    RGB (one kind per folder), center-cropped and resized to ``image_size`` (or all of one size);
    a test set of ``round(test_fraction * N)`` images is held out (a fixed random choice)."""

    def check(self) -> None:
        if not Path(self.argument).is_dir():
            raise DataError(
                f"no folder {self.argument}: --dataset folder:PATH needs a folder of images (PNG, JPEG, ...)"
            )

    def load(self) -> Dataset:
        options = self.options
        images = decoded_images(self.argument, options.image_size, options.cache_dir, options.skip_bad_images)
        train, test = split_rows(len(images.array), options.test_fraction, 0, f"the images of {self.argument}")
        return images_dataset(f"folder:{self.argument}", images, train.tolist(), test.tolist())
