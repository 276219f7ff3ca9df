"""A folder of images decoded once (:func:`decoded_images`): every image center-cropped and resized
to one size, stored as one ``uint8`` array in a ``.npy`` file beside a manifest (the format
version, the size asked, the list of files with their sizes and modification times), and
memory-mapped from then on.

The cache lives in ``.pyrovae-cache`` inside the folder (or in ``cache_dir``). It is used while the
manifest matches the folder, and decoded again when a file is added, removed or changed. Two
processes that build it at once take turns (a file lock, which the operating system releases when
its holder dies, so a killed builder blocks no one); each file is written under a temporary name
and renamed into place, the manifest last (the old one is removed before the array is replaced),
so a cache is either whole or not used. What a killed builder leaves (its temporary files) is
removed by the next build. Every image that cannot be
used stops the build with one line naming it (or, with ``skip_bad_images``, is left out and counted).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, import_optional

__all__ = ["IMAGE_SUFFIXES", "CACHE_FORMAT", "CACHE_FOLDER", "DecodedImages", "decoded_images", "list_images"]

#: the files read as images (by suffix, any case); others are ignored and counted
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: the version of the cache's layout; a cache of another version is decoded again
CACHE_FORMAT = 1
CACHE_FOLDER = ".pyrovae-cache"
_GREY = ("1", "L", "LA", "I", "I;16", "F")
_SKIP = "or pass --skip-bad-images to leave such files out"


@dataclass
class DecodedImages:
    """The decoded images of a folder: ``array`` ``(N, H, W)`` (grey) or ``(N, 3, H, W)`` (RGB),
    ``uint8``, memory-mapped from ``path``; ``names`` their files (relative to the folder);
    ``notes`` what the start line says (bad images left out, the first decode's rate)."""

    array: np.ndarray
    names: list[str]
    path: Path
    notes: list[str] = field(default_factory=list)


def _pillow() -> Any:
    return import_optional("PIL.Image", "reading image folders", "images")


def list_images(folder: Path) -> tuple[list[list[Any]], list[str]]:
    """``([[name, size, mtime_ns], ...], other files)`` of ``folder`` and its subfolders, sorted by
    name; hidden files and folders (such as the cache) are passed over."""
    found, others = [], []
    for root, dirs, files in os.walk(folder, onerror=_walk_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                others.append(relative)
                continue
            try:
                stat = path.stat()
            except OSError as error:
                raise DataError(f"cannot read {path} ({error.strerror or error}): check it, or remove it") from None
            found.append([relative, stat.st_size, stat.st_mtime_ns])
    return found, others


def _walk_error(error: OSError) -> None:
    raise DataError(f"cannot list {error.filename} ({error.strerror or error}): check its permissions") from None


def _decode(pil: Any, path: Path, size: int | None) -> tuple[np.ndarray, bool]:
    """``(pixels, grey)``: the image at ``path`` as ``(H, W)`` or ``(3, H, W)`` ``uint8``,
    center-cropped to a square and resized to ``size`` when given."""
    with pil.open(path) as image:
        if size is not None and image.format == "JPEG":
            image.draft(image.mode, (size, size))  # (JPEG decodes at a reduced scale where it can: faster)
        image.load()
        grey = image.mode in _GREY
        image = image.convert("L" if grey else "RGB")
        if size is not None:
            width, height = image.size
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            image = image.crop((left, top, left + side, top + side))
            if side != size:
                image = image.resize((size, size), pil.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = np.asarray(image, dtype=np.uint8)
    return (pixels if grey else pixels.transpose(2, 0, 1)), grey


def _problem(error: BaseException) -> str:
    """What was wrong with a file, in words."""
    name = type(error).__name__
    if name == "UnidentifiedImageError":
        return "is not an image Pillow can read"
    if isinstance(error, PermissionError):
        return f"cannot be read ({error.strerror})"
    text = str(error).strip().splitlines()[0] if str(error).strip() else name
    if "truncated" in text:
        return f"is truncated ({text})"
    return f"is damaged or unreadable ({text})"


def decoded_images(
    folder: str | os.PathLike[str],
    image_size: int | None,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad_images: bool = False,
) -> DecodedImages:
    """The images of ``folder`` decoded (from the cache where it matches the folder; else decoded
    now and cached), each ``image_size`` pixels square, or of its own size (the same for all).

    :raises DataError: for a missing or empty folder, an image that cannot be decoded (unless
        ``skip_bad_images``), grey and RGB images together, images of different sizes without
        ``image_size``, a cache that cannot be written, or one cut short.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"no folder {folder}: --dataset folder:PATH needs a folder of images (PNG, JPEG, ...)")
    files, others = list_images(folder)
    if not files:
        extra = f" (it has {len(others)} other files, such as {others[0]})" if others else ""
        raise DataError(
            f"{folder} holds no images{extra}: expected files ending in {', '.join(IMAGE_SUFFIXES)}; check the path"
        )
    where = Path(cache_dir) if cache_dir is not None else folder / CACHE_FOLDER
    stem = f"images-{image_size or 'native'}"
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot make the image cache folder {where} ({error.strerror or error}): "
            "pass --cache-dir a writable folder"
        ) from None
    from filelock import FileLock, Timeout

    notes = [f"ignored {len(others)} files that are not images (such as {others[0]})"] if others else []

    def cached() -> DecodedImages | None:
        manifest = _read_manifest(where / f"{stem}.json")
        if manifest is not None and manifest.get("format") != CACHE_FORMAT:
            notes.append(f"the cache {where / stem}.npy was written by another version of pyrovae: decoded again")
        elif manifest is not None and manifest.get("files") == files and manifest.get("image_size") == image_size:
            return _open(where / f"{stem}.npy", manifest, skip_bad_images, folder, [*notes, f"read from {where}"])
        return None

    try:
        with FileLock(str(where / f"{stem}.lock"), timeout=3600):  # (another process may be decoding the same folder)
            found = cached()
            if found is not None:
                return found
            built = _build(folder, files, image_size, where, stem, skip_bad_images)
            return _open(where / f"{stem}.npy", built, skip_bad_images, folder, notes + built["notes"])
    except Timeout:
        raise DataError(f"waited an hour for the lock {where / stem}.lock: remove it if no pyrovae runs") from None
    except PermissionError as error:
        found = cached()  # (a read-only folder whose cache is already there: read it without the lock)
        if found is not None:
            return found
        raise DataError(
            f"cannot write the image cache in {where} ({error.strerror}): pass --cache-dir a writable folder"
        ) from None


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # (absent or unreadable: decoded again)
    return manifest if isinstance(manifest, dict) else None


def _open(path: Path, manifest: dict[str, Any], skip_bad_images: bool, folder: Path, notes: list[str]) -> DecodedImages:
    skipped = manifest.get("skipped", [])
    if skipped and not skip_bad_images:
        name, problem = skipped[0]
        raise DataError(f"{folder / name} {problem}: remove or replace it, {_SKIP}")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(
            f"the image cache {path} is cut short or damaged ({error}): delete it, and pyrovae decodes the folder again"
        ) from None
    if list(array.shape) != manifest.get("shape") or array.dtype != np.uint8:
        raise DataError(
            f"the image cache {path} holds {array.dtype} {array.shape}, its manifest says uint8 "
            f"{manifest.get('shape')}: delete it, and pyrovae decodes the folder again"
        )
    if skipped:
        notes = [f"skipped {len(skipped)} bad images (such as {skipped[0][0]}: it {skipped[0][1]})", *notes]
    return DecodedImages(array, manifest["names"], path, notes)


def _build(
    folder: Path, files: list[list[Any]], image_size: int | None, where: Path, stem: str, skip: bool
) -> dict[str, Any]:
    """Decode every image into ``where/stem.npy`` and write its manifest; returns the manifest."""
    pil = _pillow()
    start = time.perf_counter()
    _remove_stale(where, stem)
    temporary = where / f"{stem}.npy.{os.getpid()}.tmp"
    temporary_manifest = where / f"{stem}.json.{os.getpid()}.tmp"
    out, names, skipped, first = None, [], [], None
    try:
        for name, *_ in files:
            try:
                pixels, grey = _decode(pil, folder / name, image_size)
            except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as error:
                if not skip:
                    raise DataError(f"{folder / name} {_problem(error)}: remove or replace it, {_SKIP}") from None
                skipped.append([name, _problem(error)])
                continue
            if first is None:
                first = (name, grey, pixels.shape)
                out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=(len(files), *pixels.shape))
            elif grey != first[1]:
                kinds = {True: "grey", False: "RGB"}
                raise DataError(
                    f"{folder} holds grey and RGB images ({first[0]} is {kinds[first[1]]}, {name} is {kinds[grey]}): "
                    "convert them to one mode, or keep one kind in the folder"
                )
            elif pixels.shape != first[2]:
                raise DataError(
                    f"{folder / name} is {_size(pixels.shape)} but {first[0]} is {_size(first[2])}: the images of a "
                    "folder must have one size; pass --image-size N to center-crop and resize them all to N x N"
                )
            out[len(names)] = pixels
            names.append(name)
        if out is None:
            raise DataError(f"no image of {folder} could be decoded ({skipped[0][0]} {skipped[0][1]}): check the files")
        out.flush()
        shape = [len(names), *first[2]]
        if len(names) < len(files):  # (bad images left out: the rows decoded, in a file of their number)
            kept = np.lib.format.open_memmap(f"{temporary}.kept", mode="w+", dtype=np.uint8, shape=tuple(shape))
            kept[:] = out[: len(names)]
            kept.flush()
            del out, kept
            os.replace(f"{temporary}.kept", temporary)
        else:
            del out
        # the manifest goes first and comes back last: one always describes the array beside it
        (where / f"{stem}.json").unlink(missing_ok=True)
        os.replace(temporary, where / f"{stem}.npy")
        seconds = time.perf_counter() - start
        manifest = {"format": CACHE_FORMAT, "image_size": image_size, "shape": shape, "files": files, "names": names,
                    "skipped": skipped}  # fmt: skip
        temporary_manifest.write_text(json.dumps(manifest))
        os.replace(temporary_manifest, where / f"{stem}.json")
    finally:
        for path in (temporary, Path(f"{temporary}.kept"), temporary_manifest):
            path.unlink(missing_ok=True)
    rate = len(files) / seconds if seconds > 0 else float("inf")
    manifest["notes"] = [f"decoded {len(files)} images in {seconds:.1f} s ({rate:.0f} images/s) into {where}"]
    return manifest


def _remove_stale(where: Path, stem: str) -> None:
    """Remove what a builder killed mid-build left (its temporary files, named by its process id):
    whoever holds the lock is the only builder, so every temporary file of ``stem`` is stale."""
    for pattern in (f"{stem}.npy.*.tmp", f"{stem}.npy.*.tmp.kept", f"{stem}.json.*.tmp"):
        for path in where.glob(pattern):
            path.unlink(missing_ok=True)


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[-1]}x{shape[-2]}"
