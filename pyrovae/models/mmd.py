r"""The maximum mean discrepancy between two sets of samples (eq. 29-30), the divergence of InfoVAE.

For a positive-definite kernel :math:`k`, the squared MMD between distributions :math:`P` and
:math:`Q` is :math:`\mathbb E[k(a, a')] + \mathbb E[k(b, b')] - 2\,\mathbb E[k(a, b)]` with
:math:`a, a' \sim P` and :math:`b, b' \sim Q` independent; for a characteristic kernel it is zero
exactly when :math:`P = Q`. :func:`mmd` estimates it from samples, without bias by default
(eq. 29: the pairs of a sample with itself left out), and :func:`kernel_matrix` gives the kernels
of eq. 30, each a sum over several bandwidths, since no single bandwidth suits codes that are
both near and far from each other.

Pure torch: usable inside a compiled or traced training step. Squared distances come from matrix
products (never an ``(n, m, d)`` tensor); :func:`mmd` takes the two samples together, in one block
where they are small and otherwise in blocks of rows that stay near the cache, never building a
kernel matrix, and computes its gradients alongside. The kernel's sum over the scales and its slope
come from :class:`~pyrovae.models.kernel_series.KernelSeries` in a few passes over the pairs for all
scales together (the inverse multiquadratic's sum as one rational function), so the cost is those
passes and three matrix products per block
(``benchmarks/throughput.py --elbos meanfield,infovae`` times InfoVAE's step against ``meanfield``'s,
``benchmarks/mmd.py`` each MMD call between training steps).
On a CPU, samples of :data:`~pyrovae.models.mmd_tiles.MIN_ROWS` rows or more together go through
:mod:`~pyrovae.models.mmd_tiles` instead: strips of square tiles, each strip taken from its
distances to its kernel sums and slopes in one pass by a kernel ``torch.compile`` makes for the
process (the same values).

References: A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf, A. Smola, *A kernel two-sample
test*, JMLR 13, 2012 (the unbiased estimator). I. Tolstikhin, O. Bousquet, S. Gelly, B. Schölkopf,
*Wasserstein auto-encoders*, ICLR 2018 (the inverse multiquadratic kernel over several scales).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._compat import is_recording
from ..errors import ConfigError
from . import mmd_tiles
from .kernel_series import KernelSeries, t_max
from .mmd_tiles import with_ones

__all__ = ["KERNELS", "MMD_SCALES", "kernel_matrix", "mmd", "check_kernel"]

#: kernel names: ``imq`` (inverse multiquadratic) and ``rbf`` (Gaussian)
KERNELS = ("imq", "rbf")
#: the bandwidth multipliers :math:`s` the kernels sum over (eq. 30)
MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def check_kernel(kernel: str) -> str:
    """``kernel`` if it is one of :data:`KERNELS`, else a :class:`ConfigError`."""
    if kernel not in KERNELS:
        raise ConfigError(f"mmd kernel (--mmd-kernel) must be one of {', '.join(KERNELS)}, got {kernel!r}")
    return kernel


def _raw_squared_distances(
    a: torch.Tensor, b: torch.Tensor, a_norms: torch.Tensor | None = None, b_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """:math:`|a_i|^2 + |b_j|^2 - 2a_i\\cdot b_j`, shape ``(n, m)``: one matrix product, no ``(n, m, d)``
    intermediate (``a_norms``, ``b_norms``: the squared norms of the rows, if already known)."""
    a_norms = a.pow(2).sum(-1) if a_norms is None else a_norms
    b_norms = b.pow(2).sum(-1) if b_norms is None else b_norms
    return torch.addmm(b_norms[None, :], a, b.mT, alpha=-2).add_(a_norms[:, None])


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:math:`\\lVert a_i - b_j\\rVert^2`, shape ``(n, m)``, by :math:`|a|^2 + |b|^2 - 2a\\cdot b`,
    clamped at 0 against rounding."""
    return _raw_squared_distances(a, b).clamp_min_(0)


def _bandwidths(
    a: torch.Tensor, b: torch.Tensor, kernel: str, scales: Sequence[float], bandwidth: float | None
) -> tuple[float, ...]:
    """The bandwidths :math:`s\\,C` of eq. 30 for samples ``a`` and ``b``, after checking the arguments
    of :func:`kernel_matrix` and :func:`mmd`."""
    check_kernel(kernel)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(
            f"kernel_matrix needs two tensors of shapes (n, d) and (m, d), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not scales:
        raise ConfigError("kernel_matrix needs at least one scale")
    # a plain float: torch.jit.trace cannot hand a traced size to an autograd Function
    base = 2.0 * int(a.shape[1]) if bandwidth is None else float(bandwidth)
    return tuple(s * base for s in scales)


#: the pairs :func:`mmd` holds at a time (rows of a block times columns; samples of up to twice as
#: many pairs in all are taken whole): a block, and the few numbers per pair its kernel sum needs
#: (:attr:`KernelSeries.features`), stay near the cache. Measured on a 2-core CPU at 2 x 1024 codes of
#: 50: blocks of 2^16 pairs beat 2^15 and 2^17 narrowly, 2^13 took twice as long (per-block overhead)
BLOCK_ELEMENTS = 1 << 16


def _estimate(
    a: torch.Tensor,
    b: torch.Tensor,
    series: KernelSeries,
    unbiased: bool,
    wants: tuple[bool, bool] = (False, False),
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    r"""Eq. 29's estimate and its gradients with respect to ``a`` and to ``b`` where ``wants`` says
    so (else ``None``), over blocks of rows (:data:`BLOCK_ELEMENTS`), never a whole kernel matrix.

    The two samples are stacked, :math:`z = (a; b)`, and a block of rows of :math:`z` takes the
    columns from its first row on: its own rows (both orders), then the pairs :math:`i < j`, once
    each, which stand for :math:`(j, i)` too. A block of :math:`a`'s rows so meets the rest of
    :math:`a` and all of :math:`b`; one of :math:`b`'s rows, the rest of :math:`b`. Each pair's
    kernel is weighted as eq. 29 counts it: :math:`w_a = 1/(n(n-1))` on a block's own rows of
    :math:`a` (:math:`1/n^2` for the biased estimate), :math:`2w_a` on the other pairs within
    :math:`a`, :math:`-2/(nm)` between the samples, and alike for :math:`b`; the unbiased estimate
    then leaves out the pairs :math:`i = i`, at distance 0, by :math:`w_a\,n\,k(0) + w_b\,m\,k(0)`.

    With :math:`d_{ij}` the squared distance (:math:`|z_i|^2 + |z_j|^2 - 2z_i\cdot z_j`, one matrix
    product, clamped at 0) and :math:`G_{ij}` the pair's weight times :math:`\partial k/\partial
    d_{ij}`, each pair adds :math:`2G_{ij}(z_i - z_j)` to :math:`z_i`'s gradient and
    :math:`2G_{ij}(z_j - z_i)` to :math:`z_j`'s: :math:`2(\sum_j G_{ij}) z_i - 2(Gz)_i`, gathered
    by two matrix products per block with :math:`(z, 1)` (the second column block: the sums of
    :math:`G`). Where rounding makes :math:`d_{ij}` negative it counts as 0 and the pair's term
    stays in the gradient (the derivative of the distance itself, of the order of that rounding;
    autograd through the clamp would give 0 there). The pairs' kernels and slopes come from
    :class:`~pyrovae.models.kernel_series.KernelSeries` in a few passes per block.
    """
    n, m = a.shape[0], b.shape[0]
    z = torch.cat([a, b])
    unit, ones = series.unit, z.new_ones(n + m, 1)
    squares = z.pow(2).sum(-1, keepdim=True) / unit
    # d_ij / c = left_i . right_j: the norms ride in the matrix product
    left, right = torch.cat([z, squares, ones], 1), torch.cat([z * (-2 / unit), ones, squares], 1)
    within_a, within_b = (1 / (n * (n - 1)), 1 / (m * (m - 1))) if unbiased else (1 / n**2, 1 / m**2)
    cross = -2 / (n * m)
    # the pairs of a sample with itself, at k(0) in the weighted sums: left out of the unbiased estimate
    diagonal = series.at_zero * (n * within_a + m * within_b) if unbiased else 0.0
    if mmd_tiles.wanted(z):
        tiled = mmd_tiles.estimate(z, n, left, right, series, (within_a, within_b, cross), wants)
        if tiled is not None:
            return _result(*tiled, z, n, diagonal, wants)
    want_grad = wants[0] or wants[1]
    # buffers reused from block to block; none where a tracer records (every operation then makes a
    # new tensor, and one block takes all of a sample's rows: a graph of a few operations)
    recording = is_recording()
    # (z, 1) and what the blocks gather into: G z and the sums of G, per row of z
    ones_z = with_ones(z, pad=not recording) if want_grad else None
    gathered = z.new_zeros(ones_z.shape) if ones_z is not None else None
    whole = (n + m) ** 2 <= 2 * BLOCK_ELEMENTS
    largest = (n + m) ** 2 if whole else max(BLOCK_ELEMENTS, n + m)
    work = None if recording else z.new_empty(series.features * largest)
    if whole:
        pair_weights = z.new_full((n + m, n + m), cross / 2)
        pair_weights[:n, :n], pair_weights[n:, n:] = within_a, within_b
        if unbiased:
            pair_weights.diagonal().zero_()
        return _whole(z, n, left, right, ones_z, pair_weights, series, work, wants)
    totals = [] if recording else None
    row_values = None if recording else z.new_empty(n + m)
    limit = t_max(z.dtype)
    # per sample: its rows, the weight within it, whether its pairs need slopes, the column weights
    # (2w within, the cross weight on b's columns) from each row on
    samples = ((0, n, within_a, want_grad), (n, n + m, within_b, wants[1]))
    for first, last, within, slopes in samples:
        weights = z.new_full((n + m - first,), 2 * within)
        weights[n - first :] = cross if first == 0 else 2 * within
        start = first
        while start < last:
            columns = n + m - start
            size = last - start if recording else min(last - start, max(1, BLOCK_ELEMENTS // columns))
            rows = slice(start, start + size)
            # a pair of a row with itself is at distance 0 exactly (the product leaves rounding there)
            if work is None:
                t = (left[rows] @ right[start:].mT).clamp(0, limit)
                t = t.diagonal_scatter(t.new_zeros(size))
            else:
                t = torch.mm(left[rows], right[start:].mT, out=work[: size * columns].view(size, columns))
                t.clamp_(0, limit).diagonal().zero_()
            value, g = series.evaluate(t, 2 * within if slopes else None, work)
            # the block's own rows count w, not 2w: halve them in the values (and in G below)
            if totals is not None:
                totals.append((value @ weights[start - first :]).sum() - within * value[:, :size].sum())
            else:
                value[:, :size].mul_(0.5)
                torch.mv(value, weights[start - first :], out=row_values[rows])
            if g is not None:
                _gather(g, gathered, ones_z, rows, start, size, first, n, cross / (2 * within_a), wants, recording)
            start += size
    total = torch.stack(totals).sum() if totals is not None else row_values.sum()
    return _result(total, gathered, z, n, diagonal, wants)


def _result(
    total: torch.Tensor,
    gathered: torch.Tensor | None,
    z: torch.Tensor,
    n: int,
    diagonal: float,
    wants: tuple[bool, bool],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Eq. 29's estimate from the weighted kernel sum ``total`` less ``diagonal`` (the pairs of a
    sample with itself, left out of the unbiased estimate), and the gradients
    :math:`2(\\sum_j G_{ij}) z_i - 2(Gz)_i` from what the blocks ``gathered``."""
    total = total - diagonal if diagonal else total
    grads: list[torch.Tensor | None] = [None, None]
    if gathered is not None:
        d = z.shape[1]
        grad = 2 * (gathered[:, d : d + 1] * z - gathered[:, :d])
        grads = [grad[:n] if wants[0] else None, grad[n:] if wants[1] else None]
    return total, grads[0], grads[1]


def _whole(
    z: torch.Tensor,
    n: int,
    left: torch.Tensor,
    right: torch.Tensor,
    ones_z: torch.Tensor | None,
    weights: torch.Tensor,
    series: KernelSeries,
    work: torch.Tensor | None,
    wants: tuple[bool, bool],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    r""":func:`_estimate` for samples small enough to take every ordered pair of :math:`z` (``n``
    rows of :math:`a`, then :math:`b`) in one block: a few operations in all, for a third more
    pairs than the blocks of rows. ``weights``: each ordered pair's weight in eq. 29 (0 on the
    diagonal where unbiased). Every pair is there in both orders, so a row's gradient takes its own
    row of :math:`G = 2 W \odot \partial k/\partial d` alone."""
    size = z.shape[0]
    if work is None:
        t = (left @ right.mT).clamp(0, t_max(z.dtype))
        t = t.diagonal_scatter(t.new_zeros(size))
    else:
        t = torch.mm(left, right.mT, out=work[: size * size].view(size, size))
        t.clamp_(0, t_max(z.dtype)).diagonal().zero_()
    value, g = series.evaluate(t, 2.0 if ones_z is not None else None, work)
    total = torch.dot(value.reshape(-1), weights.reshape(-1))
    if ones_z is None or g is None:
        return total, None, None
    g = g * weights if work is None else g.mul_(weights)
    rows = slice(0 if wants[0] else n, size if wants[1] else n)
    gathered, d = g[rows] @ ones_z, z.shape[1]
    grad = 2 * (gathered[:, d : d + 1] * z[rows] - gathered[:, :d])
    return total, grad[:n] if wants[0] else None, grad[-(size - n) :] if wants[1] else None


def _gather(
    g: torch.Tensor,
    gathered: torch.Tensor,
    ones_z: torch.Tensor,
    rows: slice,
    start: int,
    size: int,
    first: int,
    n: int,
    cross: float,
    wants: tuple[bool, bool],
    recording: bool,
) -> None:
    """Add a block's :math:`G z` and sums of :math:`G` to ``gathered``, for its rows and for its
    columns where the sample they belong to wants a gradient. ``g`` is :math:`2w\\,\\partial
    k/\\partial d` (:math:`w` the weight within the block's sample): halved on the block's own rows,
    and times ``cross`` (the cross weight over :math:`2w_a`) on :math:`b`'s columns of a block of
    :math:`a`'s rows."""
    in_a = first == 0
    split = n - start if in_a else 0  # b's columns start here (a block of b's rows has none of a's)
    if recording:
        scale = [0.5] * size + [1.0] * (split - size) + [cross if in_a else 1.0] * (g.shape[1] - max(split, size))
        g = g * g.new_tensor(scale)
    else:
        g[:, :size].mul_(0.5)
        if in_a and split < g.shape[1]:
            g[:, split:].mul_(cross)
    if wants[0 if in_a else 1]:
        gathered[rows].addmm_(g, ones_z[start:])
    # the columns: a's (from the block on) if a wants them, b's if b does
    low = 0 if wants[0] or not in_a else split
    high = g.shape[1] if wants[1] else split
    if low < high:
        gathered[start + low : start + high].addmm_(g[:, low:high].mT, ones_z[rows])


@functools.lru_cache(maxsize=16)
def _series(kernel: str, bandwidths: tuple[float, ...]) -> KernelSeries:
    """The :class:`KernelSeries` of a kernel and its bandwidths, made once (its coefficients are
    worked out in Python)."""
    return KernelSeries(kernel, bandwidths)


class _MMD(torch.autograd.Function):
    """:func:`mmd`'s estimate, with its gradients computed block by block in the forward pass (the
    estimate is a number, so the backward pass only scales them): autograd would keep every
    elementwise tensor of every block."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, b: torch.Tensor, kernel: str, bandwidths: tuple[float, ...], unbiased: bool
    ) -> torch.Tensor:
        wants = (bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]))
        value, grad_a, grad_b = _estimate(a, b, _series(kernel, bandwidths), unbiased, wants)
        ctx.save_for_backward(grad_a, grad_b)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_a, grad_b = ctx.saved_tensors
        return (
            None if grad_a is None else grad * grad_a,
            None if grad_b is None else grad * grad_b,
            None,
            None,
            None,
        )


def kernel_matrix(
    a: torch.Tensor,
    b: torch.Tensor,
    kernel: str = "imq",
    scales: Sequence[float] = MMD_SCALES,
    bandwidth: float | None = None,
) -> torch.Tensor:
    r"""The kernel of eq. 30 between every row of ``a`` and every row of ``b``, shape ``(n, m)``.

    .. math::

        k_{\mathrm{imq}}(a, b) = \sum_s \frac{s\,C}{s\,C + \lVert a - b\rVert^2}, \qquad
        k_{\mathrm{rbf}}(a, b) = \sum_s \exp\Big(-\frac{\lVert a - b\rVert^2}{s\,C}\Big),

    with :math:`C = 2d` by default (twice the expected squared norm per coordinate of a
    :math:`\mathcal N(0, I_d)` code, so the scales are relative to the standard-normal prior).

    :param a: shape ``(n, d)``. :param b: shape ``(m, d)``.
    :param kernel: ``"imq"`` or ``"rbf"``.
    :param scales: the multipliers :math:`s`.
    :param bandwidth: :math:`C` (default :math:`2d`).
    """
    bandwidths = _bandwidths(a, b, kernel, scales, bandwidth)
    distances = _squared_distances(a, b)
    total = torch.zeros_like(distances)
    for c in bandwidths:
        total = total + (c / (c + distances) if kernel == "imq" else torch.exp(-distances / c))
    return total


def mmd(
    a: torch.Tensor,
    b: torch.Tensor,
    kernel: str = "imq",
    scales: Sequence[float] = MMD_SCALES,
    bandwidth: float | None = None,
    unbiased: bool = True,
) -> torch.Tensor:
    r"""The squared MMD between the samples ``a`` (``n`` rows) and ``b`` (``m`` rows), eq. 29.

    .. math::

        \widehat{\mathrm{MMD}}{}^2_u = \frac{1}{n(n-1)} \sum_{i \ne j} k(a_i, a_j)
            + \frac{1}{m(m-1)} \sum_{i \ne j} k(b_i, b_j) - \frac{2}{nm} \sum_{i, j} k(a_i, b_j),

    an unbiased estimate (it can be negative when the two distributions are close); with
    ``unbiased=False`` the pairs :math:`i = j` are kept and divided by :math:`n^2` and :math:`m^2`
    (biased upwards, never negative). Kernel arguments as in :func:`kernel_matrix`.

    The sums are taken over blocks that stay near the cache (:data:`BLOCK_ELEMENTS`), never
    building a kernel matrix, and the gradients are computed alongside (:class:`_MMD`): the cost is a
    few passes over the pairs for all scales together and three matrix products per block. The
    result is differentiable once.

    Where a tracer records the operations (the compiled engine), they are recorded with the
    gradients they compute, as :math:`\widehat{\mathrm{MMD}}{}^2 + g_a\cdot(a - \bar a) + g_b\cdot
    (b - \bar b)` (:math:`g` and :math:`\bar a` constants of the same values, so the sum equals the
    estimate and its derivatives are the gradients): the recorded backward pass is then two products,
    not the derivative of every elementwise operation of the kernels.
    """
    n, m = a.shape[0], b.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ConfigError(
            f"the unbiased MMD needs at least 2 samples on each side, got {n} and {m}: use a batch of at least 2 rows"
        )
    bandwidths = _bandwidths(a, b, kernel, scales, bandwidth)
    if not is_recording():
        return _MMD.apply(a, b, kernel, bandwidths, unbiased)
    # a recorded graph is differentiated later, with respect to tensors it cannot see now: both
    # samples' gradients, carried by terms that are 0 in value
    value, grad_a, grad_b = _estimate(a, b, _series(kernel, bandwidths), unbiased, (True, True))
    value = value.detach()
    for grad, sample in ((grad_a, a), (grad_b, b)):
        carried = (grad.detach() * sample).sum()
        value = value + (carried - carried.detach())
    return value
