"""``--dataset celeba``: the aligned-and-cropped CelebA images (:class:`CelebA`). Nothing is
downloaded: put the folder ``img_align_celeba/`` (202,599 JPEG files, 178x218) and, if you have it,
the official partition file ``list_eval_partition.txt`` in ``--data-dir``."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .datasets import Dataset, split_rows
from .folders import images_dataset
from .image_cache import decoded_images
from .registry import DatasetSource

__all__ = ["CelebA", "CELEBA_SIZE", "CELEBA_FOLDER", "CELEBA_PARTITION"]

CELEBA_SIZE = 64
CELEBA_FOLDER = "img_align_celeba"
CELEBA_PARTITION = "list_eval_partition.txt"
_HOW = (
    f"put the aligned-and-cropped CelebA images in DIR/{CELEBA_FOLDER}/ (and {CELEBA_PARTITION} in DIR), "
    "and pass --data-dir DIR"
)


class CelebA(DatasetSource):
    """CelebA's aligned-and-cropped faces, center-cropped to a square and resized to
    ``image_size`` (default :data:`CELEBA_SIZE`), RGB, pixels ``k/255``. With the partition file,
    the training set is partition 0 and the test set partition 2 (partition 1, the validation
    images, is not used: hold out rows with ``--validation``); without it, ``test_fraction``."""

    def _folder(self) -> Path:
        if self.options.data_dir is None:
            raise DataError(f"celeba has no default folder to look in: {_HOW}")
        root = Path(self.options.data_dir)
        for folder in (root / CELEBA_FOLDER, root / "celeba" / CELEBA_FOLDER):
            if folder.is_dir():
                return folder
        raise DataError(f"celeba: no folder {root / CELEBA_FOLDER}; {_HOW}")

    def check(self) -> None:
        self._folder()

    def load(self) -> Dataset:
        folder, options = self._folder(), self.options
        images = decoded_images(folder, options.image_size or CELEBA_SIZE, options.cache_dir, options.skip_bad_images)
        partition = _read_partition(folder.parent / CELEBA_PARTITION)
        if partition is None:
            train, test = split_rows(len(images.names), options.test_fraction, 0, "the celeba images")
            train, test = train.tolist(), test.tolist()
        else:
            unknown = [name for name in images.names if name not in partition]
            if unknown:
                raise DataError(
                    f"{folder / unknown[0]} is not in {folder.parent / CELEBA_PARTITION} ({len(unknown)} images are "
                    "not): use the partition file of these images, or remove it to split by --test-fraction"
                )
            train = [i for i, name in enumerate(images.names) if partition[name] == 0]
            test = [i for i, name in enumerate(images.names) if partition[name] == 2]
            if not train or not test:
                raise DataError(
                    f"{folder.parent / CELEBA_PARTITION} puts {len(train)} of these images in partition 0 (train) and "
                    f"{len(test)} in partition 2 (test): both need at least one"
                )
        return images_dataset("celeba", images, train, test)


def _read_partition(path: Path) -> dict[str, int] | None:
    """``{file name: partition}`` from CelebA's ``list_eval_partition.txt`` (``000001.jpg 0`` per
    line; the CSV form ``image_id,partition`` is read too); ``None`` where there is no file."""
    if not path.is_file():
        return None
    partition = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path} ({error}): check it, or remove it to split by --test-fraction") from None
    for number, line in enumerate(lines, 1):
        fields = line.replace(",", " ").split()
        if not fields or fields == ["image_id", "partition"]:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise DataError(
                f"{path}, line {number}: expected 'FILE.jpg 0|1|2', found {line.strip()!r}: use CelebA's own "
                "list_eval_partition.txt, or remove it to split by --test-fraction"
            )
        partition[fields[0]] = int(fields[1])
    return partition
