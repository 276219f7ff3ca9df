r"""The maximum mean discrepancy between two sets of samples (eq. 29-30), the divergence of InfoVAE.

For a positive-definite kernel :math:`k`, the squared MMD between distributions :math:`P` and
:math:`Q` is :math:`\mathbb E[k(a, a')] + \mathbb E[k(b, b')] - 2\,\mathbb E[k(a, b)]` with
:math:`a, a' \sim P` and :math:`b, b' \sim Q` independent; for a characteristic kernel it is zero
exactly when :math:`P = Q`. :func:`mmd` estimates it from samples, without bias by default
(eq. 29: the pairs of a sample with itself left out), and :func:`kernel_matrix` gives the kernels
of eq. 30, each a sum over several bandwidths, since no single bandwidth suits codes that are
both near and far from each other.

Pure torch: usable inside a compiled or traced training step. Squared distances come from matrix
products (never an ``(n, m, d)`` tensor); :func:`mmd` goes through blocks of rows small enough to
stay in cache, never building a kernel matrix, and computes its gradients alongside, so its cost
is a few passes per scale over the pairs of samples and four matrix products per block
(``benchmarks/throughput.py --elbos meanfield,infovae`` times InfoVAE's step against ``meanfield``'s).

References: A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf, A. Smola, *A kernel two-sample
test*, JMLR 13, 2012 (the unbiased estimator). I. Tolstikhin, O. Bousquet, S. Gelly, B. Schölkopf,
*Wasserstein auto-encoders*, ICLR 2018 (the inverse multiquadratic kernel over several scales).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._compat import is_recording
from ..errors import ConfigError

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


#: the kernel values :func:`mmd` holds at a time (rows of a block times columns): a block, and the few
#: tensors of its size the sum needs, stay in a core's cache while every scale passes over them
BLOCK_ELEMENTS = 1 << 16


def _kernel_sum(
    u: torch.Tensor,
    v: torch.Tensor,
    kernel: str,
    bandwidths: tuple[float, ...],
    weight: float,
    within: bool,
    unbiased: bool,
    wants: tuple[bool, bool] = (False, False),
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    r""":math:`S = \sum_{i, j} k(u_i, v_j)` (eq. 30; without the pairs :math:`i = j` where ``within``,
    ``v`` being ``u``, and ``unbiased``) and the gradients of :math:`w S` (``weight``) with respect to
    ``u`` and to ``v`` where ``wants`` says so (else ``None``; never for ``v`` where ``within``).

    Computed over blocks of rows of ``u`` (:data:`BLOCK_ELEMENTS`), never a whole kernel matrix. With
    :math:`d_{ij} = |u_i|^2 + |v_j|^2 - 2u_i\cdot v_j` clamped at 0 and
    :math:`G_{ij} = w\,\partial k / \partial d_{ij}` (0 on the left-out diagonal):

    .. math::

        \frac{\partial\, wS}{\partial u_i} = 2\Big(\sum_j G_{ij}\Big) u_i - 2 (G v)_i, \qquad
        \frac{\partial\, wS}{\partial v_j} = 2\Big(\sum_i G_{ij}\Big) v_j - 2 (G^\top u)_j,

    each entry adding to the rows of both samples it involves. Within a sample, where :math:`d` is
    symmetric, a block of rows takes only the columns from its first row on and counts the pairs
    :math:`i < j` beyond its own rows twice: half the work of the whole matrix. The derivative of a
    scale's kernel is :math:`-c/(c + d)^2` (imq) or :math:`-e^{-d/c}/c` (rbf).

    Where rounding makes :math:`d_{ij}` negative (two rows equal to about :math:`\sqrt{\epsilon}` of
    their norms) it counts as 0, and the pair's term :math:`G_{ij}(u_i - v_j)` stays in the gradient:
    the derivative of the distance itself, of the order of that rounding (autograd through
    :meth:`torch.Tensor.clamp_min` would give 0 there; a mask to reproduce that cost a fifth of the
    step).

    Each block is one pass per operation over cache-resident buffers reused from block to block:
    per scale, the shifted distance, its reciprocal or exponential, and one accumulation each into
    the kernel sum and (with gradients) into :math:`G`, whose constants carry :math:`w`.
    """
    grad_u = torch.zeros_like(u) if wants[0] else None
    grad_v = torch.zeros_like(v) if wants[1] and not within else None
    want_grad = grad_u is not None or grad_v is not None
    u_norms, v_norms = u.pow(2).sum(-1), v.pow(2).sum(-1)
    rows = max(1, BLOCK_ELEMENTS // max(1, v.shape[0]))
    # buffers of one block, reused (views of their first numbers for a smaller block): the kernel sum,
    # one scale's values, and G; not where autograd or a tracer records these operations (the
    # compiled engine tracing the step): an operation writing into a buffer cannot be differentiated, so each one
    # then makes a new tensor
    capacity = 0 if torch.is_grad_enabled() or is_recording() else min(rows, u.shape[0]) * v.shape[0]
    sums, values = u.new_empty(capacity), u.new_empty(capacity)
    slopes = u.new_empty(capacity) if want_grad else None
    # within a sample the pairs beyond the block's rows count twice: G carries 2w there, and w on the
    # block's own rows (halved where they are)
    scale = 2 * weight if within else weight
    total = u.new_zeros(())
    for start in range(0, u.shape[0], rows):
        block = u[start : start + rows]
        size = block.shape[0]
        # within a sample, the columns from the block's first row on: the block's own rows (both
        # orders), then the pairs i < j, once each, which stand for (j, i) too
        columns, column_norms = (v[start:], v_norms[start:]) if within else (v, v_norms)
        distances = _raw_squared_distances(block, columns, u_norms[start : start + size], column_norms).clamp_min_(0)
        kernel_sum, value_buffer, slope = (_buffer(store, distances) for store in (sums, values, slopes))
        imq = kernel == "imq"
        for index, c in enumerate(bandwidths):
            if imq:  # c / (c + d), slope -c / (c + d)^2
                value = torch.add(distances, c, out=value_buffer).reciprocal_()
                factor, slope_factor = c, -c * scale
            else:  # exp(-d / c), slope -exp(-d / c) / c
                value = torch.mul(distances, -1.0 / c, out=value_buffer).exp_()
                factor, slope_factor = 1.0, -scale / c
            # (the first scale writes the sums, the others add to them)
            if index == 0:
                kernel_sum = torch.mul(value, factor, out=kernel_sum)
            else:
                kernel_sum.add_(value, alpha=factor)
            if not want_grad:
                continue
            if index == 0:
                slope = torch.mul(value, value if imq else 1.0, out=slope).mul_(slope_factor)
            elif imq:
                slope.addcmul_(value, value, value=slope_factor)
            else:
                slope.add_(value, alpha=slope_factor)
        if within:
            total = total + kernel_sum[:, :size].sum() + 2 * kernel_sum[:, size:].sum()
            if unbiased:
                total = total - kernel_sum.diagonal().sum()
        else:
            total = total + kernel_sum.sum()
        if want_grad:
            g = slope
            if within:
                g[:, :size].mul_(0.5)
                if unbiased:
                    g.diagonal().zero_()
            if grad_u is not None:
                grad_u[start : start + size] += 2 * torch.addmm(g.sum(1)[:, None] * block, g, columns, alpha=-1)
            grad_columns = grad_u[start:] if within and grad_u is not None else grad_v
            if grad_columns is not None:
                grad_columns += 2 * torch.addmm(g.sum(0)[:, None] * columns, g.mT, block, alpha=-1)
    return total, grad_u, grad_v


def _buffer(store: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """The first numbers of ``store`` as a tensor of ``like``'s shape, or ``None`` (a new tensor
    wanted) where ``store`` is ``None`` or empty."""
    if store is None or store.numel() == 0:
        return None
    return store[: like.numel()].view_as(like)


class _MMD(torch.autograd.Function):
    """:func:`mmd`'s estimate, with its gradients computed block by block in the forward pass (the
    estimate is a number, so the backward pass only scales them): autograd would keep every
    elementwise tensor of every scale, several times the size of a kernel matrix."""

    @staticmethod
    def forward(
        ctx: Any, a: torch.Tensor, b: torch.Tensor, kernel: str, bandwidths: tuple[float, ...], unbiased: bool
    ) -> torch.Tensor:
        n, m = a.shape[0], b.shape[0]
        want_a, want_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        norm_a, norm_b = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
        s_aa, grad_aa, _ = _kernel_sum(a, a, kernel, bandwidths, 1 / norm_a, True, unbiased, (want_a, False))
        s_bb, grad_bb, _ = _kernel_sum(b, b, kernel, bandwidths, 1 / norm_b, True, unbiased, (want_b, False))
        s_ab, grad_ab_a, grad_ab_b = _kernel_sum(
            a, b, kernel, bandwidths, -2 / (n * m), False, unbiased, (want_a, want_b)
        )
        ctx.save_for_backward(
            grad_aa + grad_ab_a if grad_aa is not None and grad_ab_a is not None else None,
            grad_bb + grad_ab_b if grad_bb is not None and grad_ab_b is not None else None,
        )
        return s_aa / norm_a + s_bb / norm_b - 2 * s_ab / (n * m)

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

    The sums are taken over blocks of rows that stay in cache (:data:`BLOCK_ELEMENTS`), never
    building a kernel matrix, and the gradients are computed alongside (:class:`_MMD`): the cost is a
    few passes over ``n * m`` numbers per scale and four matrix products per pair of samples. The
    result is differentiable once.
    """
    n, m = a.shape[0], b.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ConfigError(
            f"the unbiased MMD needs at least 2 samples on each side, got {n} and {m}: use a batch of at least 2 rows"
        )
    return _MMD.apply(a, b, kernel, _bandwidths(a, b, kernel, scales, bandwidth), unbiased)
