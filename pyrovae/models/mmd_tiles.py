r"""Eq. 29's sums over large samples on a CPU, a strip of square tiles at a time through one compiled kernel.

:func:`~pyrovae.models.mmd.mmd` goes over the pairs of its two samples in blocks of rows, a few
torch operations per block: each reads and writes every pair's numbers once more (the powers of
:math:`t`, the polynomials, their quotients, the weights), so at a thousand or more codes a side the
passes over memory, not the arithmetic, set the time. Here the stacked samples :math:`z = (a; b)`
are cut into blocks of :data:`TILE` rows; a block meets the blocks from itself on in strips of up to
:data:`STRIP_TILES` square tiles, whose distances one matrix product writes into one buffer, the same
for every strip; then one call of a kernel compiled by ``torch.compile`` takes the whole strip from
its distances to its weighted kernel sums per row, and leaves its weighted slopes in the buffer in
their place. A strip of rows :math:`I` and columns :math:`J` gives, with :math:`W_{ij}` each pair's
weight in eq. 29,

.. math::

    r_i = \sum_{j \in J} W_{ij}\, k(d_{ij}), \qquad G_{ij} = W_{ij}\, \frac{\partial k}{\partial d_{ij}},

and the gradients are gathered from the strip's :math:`G` by two matrix products, as in the blocks of
rows.
:math:`W` is :math:`2/(n(n-1))` within :math:`a`, :math:`2/(m(m-1))` within :math:`b` (the pairs
:math:`i < j`, counted once for both orders), :math:`-2/(nm)` between them, and 0 on the rows padding
:math:`z` to whole tiles. A tile of the diagonal holds both orders of its pairs: its values count
half in :math:`r`, while its :math:`G` keeps the whole weight, since a pair's two entries there
serve one row's gradient each (no columns are gathered from a tile of the diagonal). A strip no
gradient passes through (in training, the prior's draws among themselves: 10 of the 36 tiles, in 4
of the 8 strips, at 1024 codes a side) takes a second kernel that gives :math:`r` alone, without the
slopes' polynomials.

The strips of a call differ in width, so each kernel is compiled twice per process, kernel and
bandwidths, and dtype: for the first width it meets, then, at the second, for any width
(``torch.compile``'s automatic dynamic shapes). That takes seconds: the tiles are used only for
samples of at least :data:`MIN_ROWS` rows together, where the steps they save repay it. Where the
kernel cannot be compiled (no C++ compiler, say), :func:`~pyrovae.models.mmd.mmd` says so once and
goes on with the blocks of rows, whose results are the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from .._compat import is_recording, own_code
from .kernel_series import KernelSeries, t_max

__all__ = ["TILE", "STRIP_TILES", "MIN_ROWS", "wanted", "estimate", "with_ones"]

log = logging.getLogger("pyrovae")

#: the side of a tile: 256 x 256 pairs, a few numbers each, stay within a core's cache
TILE = 256
#: the tiles of one strip: a block of rows meets the columns of this many tiles at once, their
#: distances from one matrix product into one buffer (8 x 256 x 256 float32 numbers: 2 MiB), the
#: same buffer for every strip of a call, and one kernel call takes them all. At 2 x 1024 codes of 50
#: on a 2-core Xeon with AVX-512 (36 tiles in 8 strips), the MMD with its gradients took 5.6-6.3 ms
#: against 6.9-7.5 ms with one kernel call a tile, and 5.7-5.9 against 6.9-7.5 ms between training
#: steps (thread time, medians of 30 calls)
STRIP_TILES = 8
#: the fewest rows of the two samples together (``n + m``) that take the tiles; ``None``: never
MIN_ROWS: int | None = 1024

#: what the tile kernels ask of ``torch.compile`` beyond its defaults: let the C++ compiler contract a
#: product and the sum after it into one fused multiply-add (inductor leaves this off, so that its
#: code rounds as eager torch does). The kernel's polynomials, by Horner's rule
#: (:class:`~pyrovae.models.kernel_series.KernelSeries`), then take one instruction per coefficient,
#: each rounded once instead of twice. On a 2-core Intel Xeon with AVX-512, a tile with slopes (its
#: distances' matrix product included) took 128 us against 164 us for the sums in pairs over the
#: powers of t without contraction (8 tiles of 256 x 256 pairs, 300 interleaved rounds, thread time)
COMPILE_OPTIONS = {"cpp.enable_floating_point_contract_flag": "fast"}

_kernels: dict[tuple, Callable[..., torch.Tensor]] = {}
_failed: list[str] = []  # why the kernel could not be compiled (then never tried again)


def wanted(z: torch.Tensor) -> bool:
    """Whether :func:`estimate` takes the stacked samples ``z``: on a CPU, outside a recording
    tracer, with at least :data:`MIN_ROWS` rows, and the kernel not known to fail here."""
    return (
        MIN_ROWS is not None
        and not _failed
        and z.device.type == "cpu"
        and z.shape[0] >= MIN_ROWS
        and not is_recording()
    )


def _kernel(series: KernelSeries, dtype: torch.dtype, slopes: bool = True) -> Callable[..., torch.Tensor]:
    """The compiled strip kernel for ``series`` and ``dtype`` (made on first use). It takes a strip
    of tiles, :math:`d_{ij}/c` from the distances' matrix product (0 where a row meets itself), the
    rows' kinds (whether of :math:`a`, of :math:`b`), the columns' weights for rows of :math:`a` and
    of :math:`b`, and the values' factor per column (1/2 on a tile of the diagonal), and gives the
    strip's weighted kernel sums per row; with ``slopes``, it also overwrites the strip with the
    weighted slopes :math:`G`, else it leaves the strip as it is (a strip no gradient passes
    through: the prior's draws among themselves)."""
    key = (series.kernel, series.ratios, series.unit, dtype, TILE, slopes)
    if key not in _kernels:
        limit = t_max(dtype)

        def strip(
            t: torch.Tensor, rows: torch.Tensor, of_a: torch.Tensor, of_b: torch.Tensor, halves: torch.Tensor
        ) -> torch.Tensor:
            # clamped at 0 against rounding
            value, slope = series._elementwise(t.clamp(0, limit), 1.0 if slopes else None)
            weight = rows[0][:, None] * of_a[None, :] + rows[1][:, None] * of_b[None, :]
            if slope is not None:
                t.copy_(slope * weight)
            return (value * weight * halves[None, :]).sum(1)

        log.info(
            "compiling the MMD's strip kernel (%s kernel, %s, %s; twice per process, a few seconds)",
            series.kernel,
            dtype,
            "with slopes" if slopes else "values only",
        )
        # (a code object of its own: two kernels, two dtypes, two tile sizes would use up torch.compile's
        # allowance of variants per code object. Not fullgraph: where torch.compile finds nothing to
        # compile, under a dispatch mode that sees every operation, say, the strip runs as written,
        # with the same values. dynamic=None: compiled for the first strip's width, then once more for
        # any width)
        function = own_code(strip, f"mmd_strip_{len(_kernels)}")
        try:
            _kernels[key] = torch.compile(function, dynamic=None, options=COMPILE_OPTIONS)
        except RuntimeError:  # a torch whose inductor has no such option: its defaults (values alike to rounding)
            _kernels[key] = torch.compile(function, dynamic=None)
    return _kernels[key]


def with_ones(z: torch.Tensor, pad: bool = True, rows: int | None = None) -> torch.Tensor:
    """:math:`(z, 1)`, what the gradients' matrix products gather :math:`Gz` and the sums of
    :math:`G` with; with ``pad``, zero columns after it up to a multiple of 8, with which those
    products run faster (on a 2-core AVX2 CPU a 256 x 256 by 256 x 56 product took three quarters of
    the time of 256 x 51); ``rows``: zero rows after it up to that many."""
    width = z.shape[1] + 1
    out = z.new_zeros(z.shape[0] if rows is None else rows, -(-width // 8) * 8 if pad else width)
    out[: z.shape[0], : z.shape[1]], out[: z.shape[0], z.shape[1]] = z, 1
    return out


def _padded(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``x`` with zero rows after it up to ``rows`` rows."""
    out = x.new_zeros(rows, *x.shape[1:])
    out[: x.shape[0]] = x
    return out


def estimate(
    z: torch.Tensor,
    n: int,
    left: torch.Tensor,
    right: torch.Tensor,
    series: KernelSeries,
    weights: tuple[float, float, float],
    wants: tuple[bool, bool],
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    r"""The weighted kernel sum over the pairs of ``z`` (``n`` rows of :math:`a`, then :math:`b`) and
    what the gradients gather, :math:`(Gz, \sum_j G_{ij})` per row (``None`` where no sample wants a
    gradient); ``None`` where the kernel cannot be compiled here (said once in the log).

    ``left``, ``right``: the factors of :math:`d_{ij} / c` (:math:`c` the largest bandwidth);
    ``weights``: :math:`(w_a, w_b, w_{ab})`, a pair's weight within :math:`a` and within :math:`b`
    for one order of it (:math:`1/(n(n-1))`, unbiased), and the weight of a pair between them
    (:math:`-2/(nm)`, each such pair met once). The diagonal's pairs are in the sum, at :math:`k(0)`,
    with their weights :math:`w_a` and :math:`w_b`.
    """
    size = z.shape[0]
    padded = math.ceil(size / TILE) * TILE
    within_a, within_b, cross = weights
    if padded != size:
        left, right = _padded(left, padded), _padded(right, padded)
    ones_z = with_ones(z, rows=padded) if wants[0] or wants[1] else None
    row_a, row_b = z.new_zeros(padded), z.new_zeros(padded)
    row_a[:n], row_b[n:size] = 1, 1
    column_a, column_b = row_a * (2 * within_a) + row_b * cross, row_a * cross + row_b * (2 * within_b)
    blocks = padded // TILE

    # the operands of each block of rows, taken apart once. The kernel's tensors each start their
    # storage (a view at an offset would make torch.compile compile the kernel once more for offset 0)
    lefts = left.split(TILE)
    row_kinds = [kinds.clone() for kinds in torch.stack([row_a, row_b]).view(2, blocks, TILE).transpose(0, 1)]
    # the values' factor per column: 1/2 on the first tile of a strip that starts on the diagonal, else 1
    on_diagonal, off_diagonal = z.new_ones(STRIP_TILES * TILE), z.new_ones(STRIP_TILES * TILE)
    on_diagonal[:TILE] = 0.5
    # every strip the same buffer, the same strides
    strip = z.new_empty(TILE, STRIP_TILES * TILE)
    parts: list[torch.Tensor] = []
    gathered = z.new_zeros(ones_z.shape) if ones_z is not None else None
    kernels: dict[bool, Callable[..., torch.Tensor]] = {}  # (with slopes or not: looked up once a call)

    def wants_rows(block: int) -> bool:  # the block's rows hold a sample that wants gradients
        first = block * TILE
        return (wants[0] and first < n) or (wants[1] and first + TILE > n and first < size)

    wanting = [gathered is not None and wants_rows(k) for k in range(blocks)]
    for r in range(blocks):
        rows = slice(r * TILE, (r + 1) * TILE)
        for first in range(r, blocks, STRIP_TILES):  # the row's tiles from the diagonal on, a strip at a time
            last = min(blocks, first + STRIP_TILES)
            columns = slice(first * TILE, last * TILE)
            distances = strip[:, : (last - first) * TILE]
            torch.mm(lefts[r], right[columns].mT, out=distances)
            if first == r:  # each row meets itself at distance 0 exactly (the product leaves rounding)
                distances[:, :TILE].diagonal().zero_()
            # the slopes where a gradient passes: the rows' sample wants one, or the columns' (off the
            # diagonal; on it, the rows are the columns)
            slopes = wanting[r] or any(wanting[c] for c in range(max(first, r + 1), last))
            try:
                if slopes not in kernels:
                    kernels[slopes] = _kernel(series, z.dtype, slopes)
                halves = (on_diagonal if first == r else off_diagonal)[: (last - first) * TILE]
                of_a, of_b = column_a[columns].clone(), column_b[columns].clone()
                parts.append(kernels[slopes](distances, row_kinds[r], of_a, of_b, halves))
            except Exception as error:  # the compiler, not the numbers: the blocks of rows take over
                _failed.append(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
                log.warning(
                    "the compiled MMD kernel is not available here (%s); the MMD is computed without it "
                    "(same values, slower at large batches)",
                    _failed[0],
                )
                return None
            if gathered is None:
                continue
            # the strip's G gathered by two matrix products: for its rows (every tile of a row that
            # wants gradients has its slopes), and for the columns past the diagonal that want them
            if wanting[r]:
                gathered[rows].addmm_(distances, ones_z[columns])
            wanted_columns = [c for c in range(max(first, r + 1), last) if wanting[c]]
            if wanted_columns:  # (consecutive: the blocks that want gradients are one run)
                low, high = wanted_columns[0], wanted_columns[-1] + 1
                block = distances[:, (low - first) * TILE : (high - first) * TILE]
                gathered[low * TILE : high * TILE].addmm_(block.mT, ones_z[rows])
    total = torch.cat(parts).sum()
    return total, None if gathered is None else gathered[:size]
