r"""The maximum mean discrepancy between two sets of samples (eq. 29-30), the divergence of InfoVAE.

For a positive-definite kernel :math:`k`, the squared MMD between distributions :math:`P` and
:math:`Q` is :math:`\mathbb E[k(a, a')] + \mathbb E[k(b, b')] - 2\,\mathbb E[k(a, b)]` with
:math:`a, a' \sim P` and :math:`b, b' \sim Q` independent; for a characteristic kernel it is zero
exactly when :math:`P = Q`. :func:`mmd` estimates it from samples, without bias by default
(eq. 29: the pairs of a sample with itself left out), and :func:`kernel_matrix` gives the kernels
of eq. 30, each a sum over several bandwidths, since no single bandwidth suits codes that are
both near and far from each other.

Pure torch: usable inside a compiled or traced training step.

References: A. Gretton, K. Borgwardt, M. Rasch, B. Schölkopf, A. Smola, *A kernel two-sample
test*, JMLR 13, 2012 (the unbiased estimator). I. Tolstikhin, O. Bousquet, S. Gelly, B. Schölkopf,
*Wasserstein auto-encoders*, ICLR 2018 (the inverse multiquadratic kernel over several scales).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
    (no ``(n, m, d)`` intermediate), clamped at 0 against rounding."""
    cross = a @ b.mT
    return (a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2 * cross).clamp_min(0)


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
    check_kernel(kernel)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ConfigError(
            f"kernel_matrix needs two tensors of shapes (n, d) and (m, d), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not scales:
        raise ConfigError("kernel_matrix needs at least one scale")
    base = 2.0 * a.shape[1] if bandwidth is None else float(bandwidth)
    distances = _squared_distances(a, b)
    total = torch.zeros_like(distances)
    for s in scales:
        c = s * base
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
    """
    n, m = a.shape[0], b.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ConfigError(
            f"the unbiased MMD needs at least 2 samples on each side, got {n} and {m}: use a batch of at least 2 rows"
        )
    k_aa = kernel_matrix(a, a, kernel, scales, bandwidth)
    k_bb = kernel_matrix(b, b, kernel, scales, bandwidth)
    k_ab = kernel_matrix(a, b, kernel, scales, bandwidth)
    if unbiased:
        within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
        within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    else:
        within_a, within_b = k_aa.mean(), k_bb.mean()
    return within_a + within_b - 2 * k_ab.mean()
