"""The ``fit`` options of image folders and of how the training rows are read (one decorator each,
added to ``pyrovae fit`` in :mod:`pyrovae.cli.fit`), and the defaults a data set sets."""

from __future__ import annotations

import click
from click.core import ParameterSource

from ..spec.datasets import dataset_defaults
from .group import fit_option

__all__ = ["IMAGE_SIZE", "CACHE_DIR", "SKIP_BAD_IMAGES", "DATA_LOADER", "WORKERS", "with_dataset_defaults"]

IMAGE_SIZE = fit_option(
    "--image-size",
    click.IntRange(min=1),
    "folder:PATH and celeba: center-crop each image to a square and resize it to this side in pixels "
    "(celeba: 64 unless given; a folder: the images' own size, which must then be the same for all).",
)
CACHE_DIR = fit_option(
    "--cache-dir",
    click.Path(file_okay=False),
    "folder:PATH and celeba: where the decoded images are cached as a memory-mapped .npy file with a "
    "manifest (default: .pyrovae-cache inside the image folder).",
)
SKIP_BAD_IMAGES = click.option(
    "--skip-bad-images",
    is_flag=True,
    default=False,
    help="folder:PATH and celeba: leave out images that cannot be decoded (counted on the start line) "
    "instead of stopping at the first one.",
)
DATA_LOADER = fit_option(
    "--data-loader",
    click.Choice(("auto", "resident", "stream")),
    "resident = every training row in one tensor on the device; stream = rows read from disk batch by "
    "batch through a DataLoader (--workers); auto = stream for sets kept on disk (.npy, image folders) "
    "larger than a quarter of the memory available. The start line says which was used.",
)
WORKERS = fit_option(
    "--workers",
    click.IntRange(min=0),
    "With the streaming path: DataLoader worker processes reading batches ahead (0: read in the training process).",
)


def with_dataset_defaults(ctx: click.Context, options: dict[str, object]) -> dict[str, object]:
    """``options`` with the defaults the data set sets (``celeba``: the conv networks, the
    discretized logistic likelihood, 64x64 images) where the command line left an option's default."""
    defaults = dataset_defaults(str(options.get("dataset")))
    unset = {
        name: value
        for name, value in defaults.items()
        if name in options and ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None)
    }
    return {**options, **unset}
