"""Pictures of the latent space: the posterior means of a data set in 2-D (a scatter), traversals of
the most active latent coordinates around one image's posterior mean, and interpolations between the
posterior means of two images."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError
from ..models.base import LatentVariableModel
from ..rundir import write_png
from .grids import save_image_grid

__all__ = [
    "latent_coordinates",
    "save_latent_scatter",
    "posterior_means",
    "traversal_latents",
    "interpolation_latents",
    "save_traversals",
    "save_interpolations",
]


def posterior_means(vae: LatentVariableModel, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    r""":math:`\mu_\phi(x)` of every row of ``x`` (the first latent site's), shape ``(N, z_dim)``, on the CPU."""
    with torch.no_grad():
        return torch.cat([vae.posterior_mean(b.to(vae.device, vae.dtype)).cpu() for b in x.split(batch_size)])


def latent_coordinates(
    vae: LatentVariableModel, x: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, list[str]]:
    r"""2-D coordinates of the posterior means :math:`\mu_\phi(x)` for a scatter plot.

    ``z_dim == 2``: the means themselves. ``z_dim > 2``: their projection on the first two
    principal axes (SVD of the centred means; the sign of each axis is fixed so that its largest
    loading is positive). ``z_dim == 1``: the mean against zeros.

    :returns: ``(coords, axis_labels)`` with ``coords`` of shape ``(N, 2)`` on the CPU in float64.
    """
    means = posterior_means(vae, x, batch_size).double()
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


def traversal_latents(
    means: torch.Tensor, index: int = 0, coordinates: int = 8, steps: int = 9, span: float = 2.5
) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    r"""The latent values of a traversal picture: row :math:`r` holds ``means[index]`` with its
    coordinate :math:`j_r` replaced by :math:`\mu_{j_r} + t\, s_{j_r}` for ``steps`` offsets :math:`t`
    evenly spaced in :math:`[-\text{span}, \text{span}]`, where :math:`s_j` is the standard deviation of
    coordinate :math:`j` of the posterior means over the data set, and :math:`j_1, j_2, \dots` are the
    ``coordinates`` most active coordinates (largest :math:`s_j`, the activity of Burda et al. 2015).

    :param means: posterior means of a data set, shape ``(N, z_dim)`` with ``N >= 2``.
    :returns: ``(z, order, offsets)``: ``z`` of shape ``(rows, steps, z_dim)``, the coordinates
        :math:`j_r` (``rows = min(coordinates, z_dim)``), and the offsets :math:`t`.
    """
    if means.dim() != 2 or means.shape[0] < 2:
        raise ConfigError(f"a traversal needs the posterior means of at least 2 points, got shape {tuple(means.shape)}")
    if coordinates < 1 or steps < 2:
        raise ConfigError(f"a traversal needs coordinates >= 1 and steps >= 2, got {coordinates} and {steps}")
    spread = means.std(0)
    order = torch.argsort(spread, descending=True, stable=True)[: min(coordinates, means.shape[1])].tolist()
    offsets = torch.linspace(-span, span, steps, dtype=means.dtype)
    z = means[index].expand(len(order), steps, means.shape[1]).clone()
    for row, j in enumerate(order):
        z[row, :, j] = means[index, j] + offsets * spread[j]
    return z, order, offsets


def interpolation_latents(start: torch.Tensor, end: torch.Tensor, steps: int = 9) -> torch.Tensor:
    r"""``steps`` points on the segment from ``start`` to ``end``: :math:`(1 - t)\,\mu_a + t\,\mu_b` for
    :math:`t` evenly spaced in :math:`[0, 1]`; shape ``(steps, z_dim)``."""
    if steps < 2:
        raise ConfigError(f"an interpolation needs steps >= 2, got {steps}")
    t = torch.linspace(0, 1, steps, dtype=start.dtype)[:, None]
    return (1 - t) * start + t * end


def save_traversals(
    vae: LatentVariableModel, x: torch.Tensor, path: str | Path, index: int = 0, coordinates: int = 8, steps: int = 9
) -> Path:
    """Decode :func:`traversal_latents` around the posterior mean of ``x[index]``: one row per active
    coordinate, one column per offset."""
    vae.eval()
    z, order, offsets = traversal_latents(posterior_means(vae, x), index, coordinates, steps)
    images = vae.decode(z.reshape(-1, z.shape[-1])).clamp(0, 1)
    return save_image_grid(
        images,
        path,
        vae.image_shape,
        ncols=steps,
        title=f"test image {index}: z_j moved from -{offsets[-1]:g} to +{offsets[-1]:g} s.d. of E_q[z_j]",
        row_labels=[f"z_{j + 1}" for j in order],
    )


def save_interpolations(
    vae: LatentVariableModel,
    x: torch.Tensor,
    path: str | Path,
    pairs: int = 4,
    steps: int = 9,
    originals: torch.Tensor | None = None,
) -> Path:
    """Decode :func:`interpolation_latents` between the posterior means of test images ``2i`` and
    ``2i + 1``, one row per pair, with the two images themselves at the ends of the row (as
    ``originals``, their grey levels before binarization, where given)."""
    pairs = min(pairs, x.shape[0] // 2)
    if pairs < 1:
        raise ConfigError(f"an interpolation needs at least 2 images, got {x.shape[0]}")
    vae.eval()
    ends = x[: 2 * pairs]
    means = posterior_means(vae, ends)
    rows = []
    for i in range(pairs):
        decoded = vae.decode(interpolation_latents(means[2 * i], means[2 * i + 1], steps)).clamp(0, 1).cpu()
        shown = ends if originals is None else originals[: 2 * pairs]
        first, last = (shown[j : j + 1].cpu().to(decoded.dtype) for j in (2 * i, 2 * i + 1))
        rows += [first, decoded, last]
    return save_image_grid(
        torch.cat(rows),
        path,
        vae.image_shape,
        ncols=steps + 2,
        title="test images (ends) and E[x|z] along the segment between their posterior means",
        row_labels=[f"{2 * i}-{2 * i + 1}" for i in range(pairs)],
    )
