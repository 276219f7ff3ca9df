"""Pictures: grids of images (prior samples, reconstructions).

matplotlib is imported inside the functions, and only its object-oriented ``Figure`` API is used
(no pyplot global state, no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from .model import VAE

__all__ = ["save_image_grid", "save_samples", "save_reconstructions"]


def _as_images(x: torch.Tensor, image_shape: Sequence[int] | None) -> torch.Tensor:
    shape = tuple(image_shape) if image_shape else (x.shape[-1],)
    if math.prod(shape) != x.shape[-1]:
        raise ValueError(f"image_shape {shape} has {math.prod(shape)} pixels, the data have {x.shape[-1]}")
    if len(shape) == 1:  # non-image data: draw each vector as a one-pixel-high strip
        shape = (1, shape[0])
    return x.detach().cpu().float().reshape(-1, *shape[-2:])


def save_image_grid(
    x: torch.Tensor,
    path: str | Path,
    image_shape: Sequence[int] | None = None,
    ncols: int = 8,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Save the rows of ``x`` (flattened images) as a grid in a PNG file."""
    from matplotlib.figure import Figure

    images = _as_images(x, image_shape)
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to draw: x has 0 rows")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    h, w = images.shape[-2:]
    cell = 1.2 if h > 1 else 0.4
    fig = Figure(figsize=(ncols * cell * max(1.0, w / max(h, 1)) ** 0.5, nrows * cell + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < n:
            ax.imshow(images[i].numpy(), cmap="gray", vmin=0.0, vmax=1.0, aspect="auto" if h == 1 else "equal")
        else:
            ax.axis("off")
    if row_labels:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=80)
    return path


def save_samples(vae: VAE, path: str | Path, n: int = 64) -> Path:
    """Decode ``n`` prior draws and save :math:`E[x|z]` as a grid."""
    vae.eval()
    x = vae.sample(n).clamp(0, 1)
    return save_image_grid(x, path, vae.image_shape, ncols=8, title=f"{n} samples: E[x|z], z ~ p(z)")


def save_reconstructions(vae: VAE, x: torch.Tensor, path: str | Path, n: int = 8) -> Path:
    """Originals (top row) and their reconstructions at the posterior mean (bottom row)."""
    vae.eval()
    x = x[:n]
    recon = vae.reconstruct(x).clamp(0, 1)
    return save_image_grid(
        torch.cat([x, recon]),
        path,
        vae.image_shape,
        ncols=x.shape[0],
        title="data (top) / reconstruction (bottom)",
        row_labels=["data", "recon"],
    )
