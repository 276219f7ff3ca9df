"""Grids of images: prior samples and reconstructions beside the original images."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ..errors import ConfigError
from ..image_grid import grid_png
from ..models.base import LatentVariableModel
from ..rundir import write_bytes

__all__ = ["save_image_grid", "save_samples", "save_reconstructions", "as_images"]


def as_images(x: torch.Tensor, image_shape: Sequence[int] | None) -> torch.Tensor:
    """One picture per row of ``x``: ``(n, H, W)`` grey or ``(n, H, W, C)`` colour.

    ``(H, W)`` and ``(1, H, W)`` / ``(H, W, 1)`` are grey; ``(3|4, H, W)`` and ``(H, W, 3|4)`` are RGB(A);
    a vector ``(D,)`` is drawn as a one-pixel-high strip; other shapes as ``(prod(leading), last)``.
    """
    shape = tuple(image_shape) if image_shape else (x.shape[-1],)
    if math.prod(shape) != x.shape[-1]:
        raise ConfigError(f"image_shape {shape} has {math.prod(shape)} pixels, the data have {x.shape[-1]}")
    x = x.detach().cpu().float()
    n = x.shape[0]
    if len(shape) == 3 and shape[-1] in (3, 4):
        return x.reshape(n, *shape)
    if len(shape) == 3 and shape[0] in (3, 4):
        return x.reshape(n, *shape).permute(0, 2, 3, 1)
    if len(shape) == 3 and 1 in (shape[0], shape[-1]):
        shape = tuple(d for d in shape if d != 1) if shape != (1, 1, 1) else (1, 1)
    if len(shape) == 1:
        shape = (1, shape[0])
    elif len(shape) > 2:
        shape = (math.prod(shape[:-1]), shape[-1])
    return x.reshape(n, *shape)


def save_image_grid(
    x: torch.Tensor,
    path: str | Path,
    image_shape: Sequence[int] | None = None,
    ncols: int = 8,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Save the rows of ``x`` (flattened images) as a grid in a PNG file (drawn by
    :func:`pyrovae.image_grid.grid_png`: one canvas, no matplotlib axes)."""
    images = as_images(x, image_shape)
    n = images.shape[0]
    if n == 0:
        raise ConfigError("no images to draw: x has 0 rows")
    if not torch.isfinite(images).all():
        raise ConfigError("the images to draw hold NaN or infinite values")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    h, w = images.shape[1], images.shape[2]
    cell = 1.2 if h > 1 else 0.4
    inches = (ncols * cell * max(1.0, w / max(h, 1)) ** 0.5, nrows * cell + (0.4 if title else 0))
    png = grid_png(images.numpy(), ncols, inches, title=title, row_labels=row_labels, stretch=h == 1)
    return write_bytes(path, png)


def save_samples(vae: LatentVariableModel, path: str | Path, n: int = 64) -> Path:
    """Decode ``n`` prior draws and save :math:`E[x|z]` as a grid."""
    vae.eval()
    x = vae.sample(n).clamp(0, 1)
    return save_image_grid(x, path, vae.image_shape, ncols=8, title=f"{n} samples: E[x|z], z ~ p(z)")


def save_reconstructions(
    vae: LatentVariableModel, x: torch.Tensor, path: str | Path, n: int = 8, originals: torch.Tensor | None = None
) -> Path:
    """The first ``n`` rows of ``x`` and their reconstructions :math:`E[x|z]` at the posterior mean.

    ``originals``: the same rows before binarization (grey levels), drawn in a first row above the
    binarized ``x`` the model encoded; without them (or where they equal ``x``) the grid has two rows,
    data and reconstruction.
    """
    vae.eval()
    x = x[:n]
    recon = vae.reconstruct(x).clamp(0, 1).cpu()
    rows, labels = [x.cpu()], ["data"]
    if originals is not None:
        grey = originals[: x.shape[0]].to(device="cpu", dtype=recon.dtype)
        if grey.shape != x.shape:
            raise ConfigError(f"originals must have the shape of x, {tuple(x.shape)}, got {tuple(grey.shape)}")
        if not torch.equal(grey, x.cpu().to(grey.dtype)):
            rows, labels = [grey, x.cpu()], ["original", "binarized"]
    return save_image_grid(
        torch.cat([*(r.to(recon.dtype) for r in rows), recon]),
        path,
        vae.image_shape,
        ncols=x.shape[0],
        title=" / ".join(labels) + " / reconstruction (top to bottom)",
        row_labels=[*labels, "recon"],
    )
