r"""The kernel of eq. 30 as a function of the squared distance: its value and slope for many pairs at once.

:func:`~pyrovae.models.mmd.mmd` needs, for every pair of samples at squared distance :math:`d`, the
kernel :math:`k(d)`, a sum over the bandwidths :math:`c_s`, and (for the gradients) its slope
:math:`k'(d)`. Summing scale by scale costs several passes over the pairs per scale; this module
computes both for all scales in a few passes. Distances enter relative to the largest bandwidth
:math:`c`, as :math:`t = d / c`, with the ratios :math:`\sigma_s = c_s / c \le 1`.

*Inverse multiquadratic.* :math:`k = \sum_s \sigma_s / (\sigma_s + t)` is one rational function,

.. math::

    k = \frac{P(t)}{Q(t)}, \qquad Q(t) = \prod_s (t + \sigma_s), \qquad
    P(t) = \sum_s \sigma_s \prod_{r \ne s} (t + \sigma_r),

whose coefficients are all positive: for :math:`t \ge 0` every term is positive, so neither
:math:`P` nor :math:`Q` loses digits to cancellation, and one division gives the whole sum. The slope
is :math:`-c\,k'(d) = \sum_s \sigma_s / (\sigma_s + t)^2 = (k\,Q' - P') / Q`, a difference whose two
terms are at most 10.8 times the result for the 7 default scales (from 7 times at :math:`t \to 0`
and :math:`t \to \infty`): at most 3.5 bits lost, against one division per scale saved. The powers
:math:`t, \dots, t^S` (:math:`S` scales) take :math:`S - 1` products; one matrix product with the
coefficients gives :math:`P`, :math:`Q` and the weighted :math:`P'`, :math:`Q'`; then :math:`1/Q`,
:math:`k = P/Q` and the weighted slope :math:`(P' - k Q')/Q`. Where the powers would overflow
(:math:`t^S` beyond the dtype's largest number) :math:`t` counts as :data:`t_max` of the dtype
(:math:`t \approx 6.5\cdot 10^4` in float32, far beyond any code a VAE learns: the kernel is below
:math:`3\cdot 10^{-5}` there).

*Gaussian.* :math:`k = \sum_s e^{-t/\sigma_s}` and :math:`-c\,k'(d) = \sum_s e^{-t/\sigma_s}/\sigma_s`:
the :math:`S` exponentials in one pass, then one matrix product for the value and the weighted slope.

Under a recording tracer (the compiled engine, and the tile kernel of :mod:`~pyrovae.models.mmd_tiles`)
the same sums are written as elementwise operations, which the compiler fuses into one loop: each
polynomial by Horner's rule (a product and a sum per coefficient, the slope's weight in the
coefficients of :math:`P'` and :math:`Q'`), and one reciprocal :math:`1/Q` for :math:`k` and the slope
alike; for the Gaussian, the scales one by one.
"""

from __future__ import annotations

import torch

__all__ = ["KernelSeries", "t_max"]


def t_max(dtype: torch.dtype) -> float:
    """The largest :math:`t` the powers of the inverse multiquadratic's rational form can take in
    ``dtype`` (8 scales' worth of headroom: :math:`\\text{finfo.max}^{1/8}`)."""
    return float(torch.finfo(dtype).max) ** 0.125


def _product(roots: list[float]) -> list[float]:
    """The coefficients, constant first, of :math:`\\prod_r (t + r)`."""
    coefficients = [1.0]
    for root in roots:
        shifted = [0.0, *coefficients]  # t * polynomial
        coefficients = [s + root * c for s, c in zip(shifted, [*coefficients, 0.0], strict=True)]
    return coefficients


def _derivative(coefficients: list[float]) -> list[float]:
    return [k * c for k, c in enumerate(coefficients)][1:]


class KernelSeries:
    """Eq. 30's kernel for the bandwidths ``bandwidths``, as a function of the squared distance.

    :param kernel: ``"imq"`` or ``"rbf"``.
    :param bandwidths: the :math:`c_s` (positive).
    """

    def __init__(self, kernel: str, bandwidths: tuple[float, ...]):
        self.kernel = kernel
        #: :math:`c`, the largest bandwidth: distances enter as :math:`t = d / c`
        self.unit = max(bandwidths)
        self.ratios = tuple(c / self.unit for c in bandwidths)
        #: :math:`k(0)`: every scale's kernel is 1 at distance 0
        self.at_zero = float(len(bandwidths))
        self._made: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        if kernel == "imq":
            q = _product(list(self.ratios))
            p = [0.0] * len(self.ratios)
            for s, ratio in enumerate(self.ratios):
                others = _product([r for k, r in enumerate(self.ratios) if k != s])
                p = [a + ratio * b for a, b in zip(p, others, strict=True)]
            p.append(0.0)
            # the rows P, Q, P', Q' over the powers t^0 .. t^S
            self._rows = [p, q, [*_derivative(p), 0.0], [*_derivative(q), 0.0]]

    @property
    def features(self) -> int:
        """How many numbers per pair :meth:`evaluate` holds at a time (its ``work`` rows)."""
        return len(self.ratios) + (4 if self.kernel == "imq" else 3)

    def _coefficients(self, slope: float | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The constants of :meth:`evaluate`'s matrix product, the slope's rows weighted by
        ``slope / c`` (no slope rows where ``slope`` is ``None``), made once per weight, dtype and
        device: for the inverse multiquadratic (the constant terms, the matrix over :math:`t^1 ..
        t^S`) of :math:`P`, :math:`Q`, :math:`P'`, :math:`Q'`; for the Gaussian (the rates
        :math:`-1/\sigma_s`, the matrix over the exponentials) of the value and the slope."""
        key = (slope, like.dtype, like.device)
        if key not in self._made:
            scale = 0.0 if slope is None else slope / self.unit
            if self.kernel == "imq":
                p, q, dp, dq = self._rows
                rows = [p, q] if slope is None else [p, q, [scale * x for x in dp], [scale * x for x in dq]]
                matrix = torch.tensor(rows, dtype=like.dtype, device=like.device)
                self._made[key] = matrix[:, 0], matrix[:, 1:]
            else:
                rows = [[1.0] * len(self.ratios)] + ([] if slope is None else [[-scale / r for r in self.ratios]])
                rates = torch.tensor([-1.0 / r for r in self.ratios], dtype=like.dtype, device=like.device)
                self._made[key] = rates, torch.tensor(rows, dtype=like.dtype, device=like.device)
        return self._made[key]

    def evaluate(
        self, t: torch.Tensor, slope: float | None = None, work: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        r"""The kernel :math:`k` at ``t`` (:math:`d / c`, clamped to :math:`[0, t_{max}]` by the
        caller) and, where ``slope`` (:math:`w`) is given, :math:`w\,k'(d)`; each of ``t``'s shape.

        ``work``: a buffer of at least :attr:`features` times ``t.numel()`` numbers whose first
        ``t.numel()`` hold ``t`` (the results are views of it, overwritten by the next call); without
        it every operation makes a new tensor (what autograd and tracers record).
        """
        if work is None:
            return self._elementwise(t, slope)
        size, terms = t.numel(), len(self.ratios)
        constants, matrix = self._coefficients(slope, t)
        # the inverse multiquadratic's powers t^1 .. t^S start at t; the Gaussian's exponentials after it
        first = 0 if self.kernel == "imq" else size
        features = work[first : first + terms * size].view(terms, size)
        end = first + terms * size
        rows = work[end : end + matrix.shape[0] * size].view(matrix.shape[0], size)
        if self.kernel == "rbf":
            torch.mul(t.reshape(1, size), constants[:, None], out=features).exp_()
            torch.mm(matrix, features, out=rows)
            return rows[0].view_as(t), None if slope is None else rows[1].view_as(t)
        # features[k] = t^(k + 1) (features[0] is t already): each product doubles the powers known,
        # t^(j + 1) = t^(j + 1 - known) * t^known for the next known of them
        known = 1
        while known < terms:
            more = min(known, terms - known)
            torch.mul(features[:more], features[known - 1 : known], out=features[known : known + more])
            known += more
        torch.addmm(constants[:, None], matrix, features, out=rows)
        value = rows[0]
        if slope is None:
            return value.div_(rows[1]).view_as(t), None
        reciprocal = rows[1].reciprocal_()
        value.mul_(reciprocal)
        weighted = rows[2].addcmul_(value, rows[3], value=-1).mul_(reciprocal)
        return value.view_as(t), weighted.view_as(t)

    def _elementwise(self, t: torch.Tensor, slope: float | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`evaluate` in elementwise operations only, none in place."""
        scale = None if slope is None else slope / self.unit
        if self.kernel == "rbf":
            value, weighted = torch.zeros_like(t), torch.zeros_like(t) if scale is not None else None
            for ratio in self.ratios:
                term = torch.exp(t * (-1.0 / ratio))
                value = value + term
                if weighted is not None:
                    weighted = weighted + term * (-scale / ratio)
            return value, weighted
        p, q = (self._horner(row, t) for row in self._rows[:2])
        # one division, for the value and the slope alike (so both round the value the same way)
        reciprocal = 1 / q
        value = p * reciprocal
        if scale is None:
            return value, None
        # the slope's polynomials with the weight in their coefficients
        dp, dq = (self._horner([scale * a for a in row], t) for row in self._rows[2:])
        return value, (dp - value * dq) * reciprocal

    @staticmethod
    def _horner(coefficients: list[float], t: torch.Tensor) -> torch.Tensor:
        """:math:`\\sum_k a_k t^k` (``coefficients`` constant first) by Horner's rule,
        :math:`(\\dots(a_S t + a_{S-1})\\,t + \\dots)\\,t + a_0`: a product and a sum per coefficient,
        which a compiler allowed to contract them (the tile kernel of :mod:`~pyrovae.models.mmd_tiles`)
        makes one fused multiply-add. Every coefficient is positive and :math:`t \\ge 0`, so no step
        cancels digits."""
        while len(coefficients) > 1 and coefficients[-1] == 0:
            coefficients = coefficients[:-1]
        if len(coefficients) == 1:
            return torch.full_like(t, coefficients[0])
        *lower, top = coefficients
        total = t + lower[-1] if top == 1 else t * top + lower[-1]
        for coefficient in reversed(lower[:-1]):
            total = total * t + coefficient
        return total
