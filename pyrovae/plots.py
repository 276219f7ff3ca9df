"""Pictures: grids of images (prior samples, reconstructions), latent scatter plots, training curves.

Grids of images are drawn with Pillow (:mod:`pyrovae.image_grid`); matplotlib is imported inside the
other functions, and only its object-oriented ``Figure`` API is used (no pyplot global state, no
display needed). Each picture is rendered in memory and written
atomically (:func:`pyrovae.rundir.write_png`), to exactly the path given.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import ConfigError
from .image_grid import grid_png
from .models.base import LatentVariableModel
from .rundir import write_bytes, write_png

__all__ = [
    "save_image_grid",
    "save_samples",
    "save_reconstructions",
    "latent_coordinates",
    "save_latent_scatter",
    "save_training_curves",
]


def _as_images(x: torch.Tensor, image_shape: Sequence[int] | None) -> torch.Tensor:
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
    images = _as_images(x, image_shape)
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


def save_reconstructions(vae: LatentVariableModel, x: torch.Tensor, path: str | Path, n: int = 8) -> Path:
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


def latent_coordinates(
    vae: LatentVariableModel, x: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, list[str]]:
    r"""2-D coordinates of the posterior means :math:`\mu_\phi(x)` for a scatter plot.

    ``z_dim == 2``: the means themselves. ``z_dim > 2``: their projection on the first two
    principal axes (SVD of the centred means; the sign of each axis is fixed so that its largest
    loading is positive). ``z_dim == 1``: the mean against zeros.

    :returns: ``(coords, axis_labels)`` with ``coords`` of shape ``(N, 2)`` on the CPU in float64.
    """
    with torch.no_grad():
        means = torch.cat([vae.posterior_mean(b.to(vae.device, vae.dtype)) for b in x.split(batch_size)]).double().cpu()
    if means.shape[1] == 1:
        return torch.cat([means, torch.zeros_like(means)], 1), ["E_q[z_1]", ""]
    if means.shape[1] == 2:
        return means, ["E_q[z_1]", "E_q[z_2]"]
    centred = means - means.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * signs
    explained = singular[:2] ** 2 / (singular**2).sum().clamp(min=torch.finfo(singular.dtype).tiny)
    labels = [f"PC {i + 1} of E_q[z] ({100 * float(e):.0f}% of variance)" for i, e in enumerate(explained)]
    return centred @ axes.mT, labels


def save_latent_scatter(
    vae: LatentVariableModel,
    x: torch.Tensor,
    path: str | Path,
    labels: torch.Tensor | None = None,
    batch_size: int = 1000,
) -> Path:
    """Scatter the posterior means of ``x`` in 2-D (:func:`latent_coordinates`), coloured by ``labels``."""
    from matplotlib.figure import Figure

    if x.shape[0] == 0:
        raise ConfigError("no points to draw: x has 0 rows")
    if labels is not None and labels.shape[0] != x.shape[0]:
        raise ConfigError(f"labels must have one entry per row of x ({x.shape[0]}), got {labels.shape[0]}")
    vae.eval()
    coords, axis_labels = latent_coordinates(vae, x, batch_size)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.7)
    else:
        values = labels.cpu().numpy()
        lo, hi = float(values.min()), float(values.max())
        discrete = not labels.is_floating_point() and hi - lo < 20
        style = {"cmap": "tab10" if hi - lo < 10 else "tab20", "vmin": lo - 0.5, "vmax": hi + 0.5} if discrete else {}
        points = ax.scatter(coords[:, 0], coords[:, 1], c=values, s=6, alpha=0.8, **style)
        colorbar = fig.colorbar(points, ax=ax, label="label")
        if discrete:
            colorbar.set_ticks(sorted(set(values.tolist())))
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(f"posterior means of {x.shape[0]} points (z_dim={vae.z_dim})")
    fig.tight_layout()
    return write_png(path, fig)


def save_training_curves(records: Sequence[dict], path: str | Path) -> Path:
    """ELBO per data point against epoch and against cumulative training seconds.

    :param records: the per-epoch records of ``metrics.jsonl`` (``epoch``, ``train_elbo``,
        optionally ``test_elbo``, ``seconds`` = training time of that epoch).
    """
    from matplotlib.figure import Figure

    if not records:
        raise ConfigError("no epochs to draw: the metrics are empty")
    missing = [key for key in ("epoch", "train_elbo", "seconds") if key not in records[0]]
    if missing:
        raise ConfigError(f"metrics records need epoch, train_elbo and seconds; missing {', '.join(missing)}")
    epochs = [r["epoch"] for r in records]
    seconds = list(itertools.accumulate(r["seconds"] for r in records))
    series = {"train": [r["train_elbo"] for r in records]}
    if all("test_elbo" in r for r in records):
        series["test"] = [r["test_elbo"] for r in records]
    fig = Figure(figsize=(10, 4))
    by_epoch, by_time = fig.subplots(1, 2)
    for name, values in series.items():
        by_epoch.plot(epochs, values, marker="o", markersize=3, label=f"{name} ELBO")
        by_time.plot(seconds, values, marker="o", markersize=3, label=f"{name} ELBO")
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("training time (s, cumulative)")
    for ax in (by_epoch, by_time):
        ax.set_ylabel("ELBO (nats per data point)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return write_png(path, fig)
