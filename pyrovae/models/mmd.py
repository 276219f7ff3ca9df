r"""The maximum mean discrepancy between two sets of samples (eq. 29-30), the divergence of InfoVAE.

For a positive-definite kernel :math:`k`, the squared MMD between distributions :math:`P` and
:math:`Q` is :math:`\mathbb E[k(a, a')] + \mathbb E[k(b, b')] - 2\,\mathbb E[k(a, b)]` with
:math:`a, a' \sim P` and :math:`b, b' \sim Q` independent; for a characteristic kernel it is zero
exactly when :math:`P = Q`. :func:`mmd` estimates it from samples, without bias by default
(eq. 29: the pairs of a sample with itself left out), and :func:`kernel_matrix` gives the kernels
of eq. 30, each a sum over several bandwidths, since no single bandwidth suits codes that are
both near and far from each other.

Pure torch: usable inside a compiled or traced training step. The squared distances come from
one matrix product per pair of samples (never an ``(n, m, d)`` tensor), and :func:`mmd` sums the
kernel without building its matrices, so that its cost stays a few passes over ``n * m`` numbers
per scale (``benchmarks/throughput.py`` times ``--elbo infovae`` against ``meanfield``).

References: A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf, A. Smola, *A kernel two-sample
test*, JMLR 13, 2012 (the unbiased estimator). I. Tolstikhin, O. Bousquet, S. Gelly, B. Schölkopf,
*Wasserstein auto-encoders*, ICLR 2018 (the inverse multiquadratic kernel over several scales).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable

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


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:math:`\\lVert a_i - b_j\\rVert^2`, shape ``(n, m)``, by :math:`|a|^2 + |b|^2 - 2a\\cdot b`
    (one matrix product, no ``(n, m, d)`` intermediate), clamped at 0 against rounding."""
    return torch.addmm(b.pow(2).sum(-1)[None, :], a, b.mT, alpha=-2).add_(a.pow(2).sum(-1)[:, None]).clamp_min_(0)


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
    base = 2.0 * int(a.shape[1]) if bandwidth is None else float(bandwidth)
    return tuple(s * base for s in scales)


class _KernelSums(torch.autograd.Function):
    r"""Eq. 30's kernel summed over each of consecutive segments of a flat tensor of squared
    distances :math:`d` (segment lengths ``sizes``): :math:`\sum_{t} \sum_s k_s(d_t)` with
    :math:`k_s(d) = c_s / (c_s + d)` (imq) or :math:`\exp(-d / c_s)` (rbf).

    The values are those :func:`kernel_matrix` adds up, but no kernel matrix is built: each scale
    takes a few in-place passes over :math:`d`, which also accumulate the derivative
    :math:`\sum_s k_s'(d)`, with :math:`k_s'(d) = -c_s / (c_s + d)^2` (imq) or :math:`-k_s(d) / c_s`
    (rbf), so the backward pass is one product instead of autograd's walk through every scale (and
    cannot be differentiated again).
    """

    @staticmethod
    def forward(
        ctx: Any, distances: torch.Tensor, sizes: tuple[int, ...], kernel: str, bandwidths: tuple[float, ...]
    ) -> torch.Tensor:
        slope = torch.zeros_like(distances) if ctx.needs_input_grad[0] else None
        per_scale = []
        for c in bandwidths:
            if kernel == "imq":
                inverse = (distances + c).reciprocal_()
                if slope is not None:
                    slope.addcmul_(inverse, inverse, value=-c)
                per_scale.append(c * torch.stack([segment.sum() for segment in inverse.split(sizes)]))
            else:
                value = (distances * (-1.0 / c)).exp_()
                if slope is not None:
                    slope.add_(value, alpha=-1.0 / c)
                per_scale.append(torch.stack([segment.sum() for segment in value.split(sizes)]))
        ctx.sizes = sizes
        ctx.save_for_backward(slope)
        return torch.stack(per_scale).sum(0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (slope,) = ctx.saved_tensors
        per_element = torch.cat([g.expand(size) for g, size in zip(grad, ctx.sizes, strict=True)])
        return slope * per_element, None, None, None


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

    The three sums are taken without building the kernel matrices: the squared distances of the
    three pairs of samples (and, for the unbiased estimate, the diagonals of the first two, which are
    subtracted from their sums) go through the kernel in one flat tensor.
    """
    n, m = a.shape[0], b.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ConfigError(
            f"the unbiased MMD needs at least 2 samples on each side, got {n} and {m}: use a batch of at least 2 rows"
        )
    bandwidths = _bandwidths(a, b, kernel, scales, bandwidth)
    blocks = [_squared_distances(a, a), _squared_distances(b, b), _squared_distances(a, b)]
    segments = [block.reshape(-1) for block in blocks]
    if unbiased:
        segments += [blocks[0].diagonal(), blocks[1].diagonal()]
    # plain ints (here and in _bandwidths): torch.jit.trace cannot hand traced sizes to an autograd Function
    sums = _KernelSums.apply(
        torch.cat(segments), tuple(int(segment.shape[0]) for segment in segments), kernel, bandwidths
    )
    if unbiased:
        within_a = (sums[0] - sums[3]) / (n * (n - 1))
        within_b = (sums[1] - sums[4]) / (m * (m - 1))
    else:
        within_a, within_b = sums[0] / (n * n), sums[1] / (m * m)
    return within_a + within_b - 2 * sums[2] / (n * m)
