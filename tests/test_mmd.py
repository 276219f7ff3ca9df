"""The MMD of InfoVAE (eq. 29-30) against a direct O(n^2) computation, the kernel matrices it used to
build, and its expectation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from pyrovae.errors import ConfigError
from pyrovae.models import mmd as mmd_module
from pyrovae.models import mmd_tiles
from pyrovae.models.kernel_series import KernelSeries, t_max
from pyrovae.models.mmd import KERNELS, MMD_SCALES, kernel_matrix, mmd


def direct_kernel(a, b, kernel, scales, bandwidth):
    """Eq. 30 one pair at a time, in Python loops."""
    out = torch.zeros(len(a), len(b))
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            distance = float(((ai - bj) ** 2).sum())
            for s in scales:
                c = s * bandwidth
                out[i, j] += c / (c + distance) if kernel == "imq" else math.exp(-distance / c)
    return out


def direct_mmd(a, b, kernel, scales, bandwidth, unbiased):
    """Eq. 29 with its sums written as loops over the pairs (i != j where unbiased)."""
    n, m = len(a), len(b)
    k_aa, k_bb, k_ab = (direct_kernel(u, v, kernel, scales, bandwidth) for u, v in ((a, a), (b, b), (a, b)))
    pairs_a = sum(float(k_aa[i, j]) for i in range(n) for j in range(n) if i != j or not unbiased)
    pairs_b = sum(float(k_bb[i, j]) for i in range(m) for j in range(m) if i != j or not unbiased)
    cross = sum(float(k_ab[i, j]) for i in range(n) for j in range(m))
    norm_a, norm_b = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    return pairs_a / norm_a + pairs_b / norm_b - 2 * cross / (n * m)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("scales, bandwidth", [(MMD_SCALES, None), ((0.5, 3.0), 1.7)], ids=["default", "custom"])
def test_kernel_matrix_equals_eq30_pair_by_pair(float64, kernel, scales, bandwidth):
    a, b = torch.randn(7, 3), torch.randn(5, 3) + 0.5
    expected = direct_kernel(a, b, kernel, scales, 2.0 * 3 if bandwidth is None else bandwidth)
    torch.testing.assert_close(kernel_matrix(a, b, kernel, scales, bandwidth), expected, rtol=1e-12, atol=1e-12)
    # a point's kernel with itself is the number of scales (distance 0)
    diagonal = kernel_matrix(a, a, kernel, scales, bandwidth).diagonal()
    torch.testing.assert_close(diagonal, torch.full((7,), 1.0 * len(scales)))


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
def test_mmd_equals_eq29_summed_pair_by_pair(float64, kernel, unbiased):
    a, b = torch.randn(6, 2), 0.7 * torch.randn(9, 2) + 0.3
    got = mmd(a, b, kernel, unbiased=unbiased)
    assert got.item() == pytest.approx(direct_mmd(a, b, kernel, MMD_SCALES, 4.0, unbiased), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_unbiased_mmd_is_zero_in_expectation_when_the_distributions_agree(float64, kernel):
    # 2,000 estimates from n = m = 10 draws of N(0, I_3) each: the mean is within 4 standard errors
    # of 0, while the biased estimator's is far above 0 (it adds the pairs of a draw with itself)
    unbiased = torch.stack([mmd(torch.randn(10, 3), torch.randn(10, 3), kernel) for _ in range(2000)])
    biased = torch.stack([mmd(torch.randn(10, 3), torch.randn(10, 3), kernel, unbiased=False) for _ in range(2000)])
    se = unbiased.std() / math.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 4 * se, (unbiased.mean(), se)
    assert biased.mean() > 20 * biased.std() / math.sqrt(len(biased))
    assert (unbiased < 0).any()  # an unbiased estimate of 0 goes negative


def test_mmd_is_positive_in_expectation_when_the_distributions_differ(float64):
    estimates = torch.stack([mmd(torch.randn(10, 3), torch.randn(10, 3) + 1.0) for _ in range(500)])
    assert estimates.mean() > 10 * estimates.std() / math.sqrt(len(estimates))


def test_mmd_refuses_what_it_cannot_compute():
    with pytest.raises(ConfigError, match="at least 2 samples on each side, got 1 and 4"):
        mmd(torch.randn(1, 2), torch.randn(4, 2))
    with pytest.raises(ConfigError, match="must be one of imq, rbf, got 'laplace'"):
        mmd(torch.randn(3, 2), torch.randn(3, 2), kernel="laplace")
    with pytest.raises(ConfigError, match=r"shapes \(n, d\) and \(m, d\), got \(3, 2\) and \(3, 4\)"):
        kernel_matrix(torch.randn(3, 2), torch.randn(3, 4))
    assert mmd(torch.randn(1, 2), torch.randn(4, 2), unbiased=False) > 0  # the biased one needs one draw


def matrix_mmd(a, b, kernel, scales, bandwidth, unbiased):
    """Eq. 29 as :func:`mmd` computed it until it stopped building kernel matrices: the three
    matrices of eq. 30 (squared distances by |a|^2 + |b|^2 - 2 a.b clamped at 0, each scale's kernel
    added in turn), the diagonal taken out of the within-sample sums where unbiased."""

    def matrix(u, v):
        distances = (u.pow(2).sum(-1)[:, None] + v.pow(2).sum(-1)[None, :] - 2 * (u @ v.mT)).clamp_min(0)
        base = 2.0 * u.shape[1] if bandwidth is None else bandwidth
        total = torch.zeros_like(distances)
        for s in scales:
            c = s * base
            total = total + (c / (c + distances) if kernel == "imq" else torch.exp(-distances / c))
        return total

    n, m = len(a), len(b)
    k_aa, k_bb, k_ab = matrix(a, a), matrix(b, b), matrix(a, b)
    if unbiased:
        within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (n * (n - 1))
        within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    else:
        within_a, within_b = k_aa.mean(), k_bb.mean()
    return within_a + within_b - 2 * k_ab.mean()


SHAPES = {
    "2x2-d1": (2, 2, 1),
    "7x5-d3": (7, 5, 3),
    "33x17-d8": (33, 17, 8),
    "64x64-d50": (64, 64, 50),
    "200x300-d2": (200, 300, 2),
}


@pytest.mark.parametrize("n, m, d", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("scales, bandwidth", [(MMD_SCALES, None), ((0.5, 3.0), 1.7)], ids=["default", "custom"])
@pytest.mark.parametrize("block", [None, 50], ids=["one-block", "blocks-of-50"])
def test_mmd_and_its_gradients_equal_the_kernel_matrix_formula(
    float64, monkeypatch, n, m, d, kernel, unbiased, scales, bandwidth, block
):
    if block is not None:  # blocks of a few rows (and of one, where a row is longer than 50 numbers)
        monkeypatch.setattr(mmd_module, "BLOCK_ELEMENTS", block)
    # b is shifted and scaled so that the kernels are neither all near 1 nor all near 0; a repeated row
    # of a puts a distance of exactly 0 off the diagonal, where the clamp at 0 acts
    a, b = torch.randn(n, d), 1.5 * torch.randn(m, d) + 0.4
    a[-1] = a[0]
    a.requires_grad_(), b.requires_grad_()
    got = mmd(a, b, kernel, scales, bandwidth, unbiased)
    expected = matrix_mmd(a, b, kernel, scales, bandwidth, unbiased)
    got_grads = torch.autograd.grad(got, (a, b))
    expected_grads = torch.autograd.grad(expected, (a, b))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_differentiates_only_the_sample_that_asks(float64, monkeypatch, kernel):
    # InfoVAE's prior draws need no gradient under a fixed prior: a's equals the formula's, b has none
    monkeypatch.setattr(mmd_module, "BLOCK_ELEMENTS", 40)
    a, b = torch.randn(21, 4, requires_grad=True), torch.randn(13, 4) + 0.3
    (got,) = torch.autograd.grad(mmd(a, b, kernel), a)
    (expected,) = torch.autograd.grad(matrix_mmd(a, b, kernel, MMD_SCALES, None, True), a)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert mmd(a.detach(), b, kernel).grad_fn is None


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    m=st.integers(2, 40),
    d=st.integers(1, 12),
    kernel=st.sampled_from(["imq", "rbf"]),
    unbiased=st.booleans(),
    block=st.sampled_from([1, 7, 64, 1 << 16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_mmd_equals_the_kernel_matrix_formula_for_any_shape(n, m, d, kernel, unbiased, block, seed):
    # float64 throughout (hypothesis runs outside the float64 fixture): value and gradients to 1e-10
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True)
    b = (2.0 * torch.randn(m, d, generator=generator, dtype=torch.float64) - 0.3).requires_grad_()
    previous = mmd_module.BLOCK_ELEMENTS
    mmd_module.BLOCK_ELEMENTS = block
    try:
        got = mmd(a, b, kernel, unbiased=unbiased)
    finally:
        mmd_module.BLOCK_ELEMENTS = previous
    expected = matrix_mmd(a, b, kernel, MMD_SCALES, None, unbiased)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    expected_grads = torch.autograd.grad(expected, (a, b))
    for got_grad, expected_grad in zip(torch.autograd.grad(got, (a, b)), expected_grads, strict=True):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-10)


class _LargestTensor(TorchDispatchMode):
    """Records the most numbers any operation's result holds."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_builds_no_pairwise_difference_tensor(kernel):
    # n = m = 300 codes of 40 coordinates: an (n, m, d) tensor of differences would hold 3.6 million
    # numbers and a kernel matrix 90,000; mmd holds at most the numbers per pair of a block of 4,096
    # pairs (KernelSeries.features of them) or the two samples stacked with two more columns
    a, b = torch.randn(300, 40, requires_grad=True), torch.randn(300, 40)
    previous = mmd_module.BLOCK_ELEMENTS
    mmd_module.BLOCK_ELEMENTS = 4096
    try:
        with _LargestTensor() as recorder:
            mmd(a, b, kernel).backward()
    finally:
        mmd_module.BLOCK_ELEMENTS = previous
    features = KernelSeries(kernel, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)).features
    assert recorder.largest <= max(features * 4096, 600 * 42) < 300 * 300
    assert a.grad is not None and torch.isfinite(a.grad).all()


def direct_series(t, kernel, ratios):
    """Eq. 30's kernel at t = d / c and its slope -c dk/dd, one scale at a time (the reference)."""
    if kernel == "imq":
        return sum(r / (r + t) for r in ratios), sum(r / (r + t) ** 2 for r in ratios)
    return sum(torch.exp(-t / r) for r in ratios), sum(torch.exp(-t / r) / r for r in ratios)


T_GRID = torch.cat([torch.zeros(1), torch.logspace(-9, 4.5, 400, dtype=torch.float64)])


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("slope", [None, 0.37], ids=["value", "value-and-slope"])
@pytest.mark.parametrize("buffered", [True, False], ids=["buffers", "elementwise"])
def test_kernel_series_equals_the_sum_over_scales(kernel, slope, buffered):
    # float64, t from 0 to 3e4 (squared distances up to 30,000 times the largest bandwidth): the
    # rational form of the inverse multiquadratic and the Gaussian's exponentials against the scales
    # one by one, to 1e-13 relative
    bandwidths = tuple(s * 100.0 for s in MMD_SCALES)
    series = KernelSeries(kernel, bandwidths)
    t = T_GRID.reshape(-1, 1)
    work = None
    if buffered:
        work = torch.empty(series.features * t.numel(), dtype=torch.float64)
        work[: t.numel()] = t.reshape(-1)
        t_in = work[: t.numel()].view_as(t)
    else:
        t_in = t
    value, weighted = series.evaluate(t_in, slope, work)
    expected_value, expected_slope = direct_series(t, kernel, series.ratios)
    torch.testing.assert_close(value, expected_value, rtol=1e-13, atol=0)
    if slope is None:
        assert weighted is None
    else:  # w dk/dd = -(w / c) * sum_s ...
        torch.testing.assert_close(weighted, -(slope / series.unit) * expected_slope, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_kernel_series_in_float32_keeps_float32_accuracy(kernel):
    # the slope of the rational form is a difference of terms up to 10.8 times its size: in float32
    # value and slope stay within 3e-6 of the float64 sums over scales
    series = KernelSeries(kernel, tuple(s * 100.0 for s in MMD_SCALES))
    t = torch.cat([torch.zeros(1), torch.logspace(-6, 4, 300)]).to(torch.float32).reshape(-1, 1)
    work = torch.empty(series.features * t.numel())
    work[: t.numel()] = t.reshape(-1)
    value, weighted = series.evaluate(work[: t.numel()].view_as(t), 1.0, work)
    expected_value, expected_slope = direct_series(t.double(), kernel, series.ratios)
    torch.testing.assert_close(value.double(), expected_value, rtol=3e-6, atol=1e-30)  # exp underflows
    torch.testing.assert_close(weighted.double(), -expected_slope / series.unit, rtol=3e-6, atol=1e-30)


def test_t_max_keeps_every_power_finite():
    for dtype in (torch.float32, torch.float64):
        limit = torch.tensor(t_max(dtype), dtype=dtype)
        assert torch.isfinite(limit ** len(MMD_SCALES) * 10).all()  # the powers and their coefficients


def test_far_codes_give_a_finite_mmd_and_gradient():
    # b spread 10^4 wide: its squared distances are millions of times the largest bandwidth (60),
    # beyond t_max in float32, where they count as t_max; value and gradient stay finite and equal
    # the float64 formula's (the kernels of those pairs are below 10^-5 either way)
    a = torch.randn(20, 3, requires_grad=True)
    b = 1e4 * torch.randn(20, 3)
    value = mmd(a, b)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(a.grad).all()
    a64 = a.detach().double().requires_grad_()
    expected = matrix_mmd(a64, b.double(), "imq", MMD_SCALES, None, True)
    (expected_grad,) = torch.autograd.grad(expected, a64)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(a.grad.double(), expected_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("n, m", [(9, 7), (40, 33)], ids=["one-block", "blocks"])
def test_recorded_mmd_gives_the_same_value_and_autograd_gradients(float64, monkeypatch, kernel, n, m):
    # what the compiled engine sees: make_fx records mmd's operations on inputs without gradients
    # (no buffers, one block per sample); autograd through the recorded operations then gives the
    # kernel-matrix formula's gradients
    from torch.fx.experimental.proxy_tensor import make_fx

    monkeypatch.setattr(mmd_module, "BLOCK_ELEMENTS", 200)
    a, b = torch.randn(n, 4), 1.3 * torch.randn(m, 4) + 0.2
    graph = make_fx(lambda u, v: mmd(u, v, kernel))(a, b)
    a.requires_grad_(), b.requires_grad_()
    got, expected = graph(a, b), matrix_mmd(a, b, kernel, MMD_SCALES, None, True)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for g, e in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(expected, (a, b)), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("strip", [8, 2])
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_the_compiled_tiles_give_the_blocks_values_and_gradients(float64, monkeypatch, kernel, strip):
    # small tiles (16 rows) so that 37 + 29 rows take 5 blocks of tiles, the last padded, one of them
    # holding rows of both samples, in strips of 8 tiles (a block's row in one) or of 2 (in up to
    # three, the diagonal's tile first or not); every sample asking or not for gradients, biased or
    # not: the value and the gradients to 1e-10 of the blocks of rows' and of the kernel-matrix formula's
    monkeypatch.setattr(mmd_tiles, "TILE", 16)
    monkeypatch.setattr(mmd_tiles, "STRIP_TILES", strip)
    monkeypatch.setattr(mmd_tiles, "_failed", [])
    calls = []
    estimate = mmd_tiles.estimate
    monkeypatch.setattr(mmd_tiles, "estimate", lambda *args: calls.append(1) or estimate(*args))
    a, b = torch.randn(37, 5), 1.4 * torch.randn(29, 5) + 0.3
    a[-1] = a[0]  # a distance of exactly 0 off the diagonal
    for wants in [(True, False), (False, True), (True, True), (False, False)]:
        for unbiased in (True, False):
            results = []
            for tiles in (False, True):
                monkeypatch.setattr(mmd_tiles, "MIN_ROWS", 1 if tiles else None)
                x, y = a.clone().requires_grad_(wants[0]), b.clone().requires_grad_(wants[1])
                value = mmd(x, y, kernel, unbiased=unbiased)
                asked = [t for t in (x, y) if t.requires_grad]
                results.append((value, torch.autograd.grad(value, asked) if asked else ()))
            (blocks, block_grads), (tiled, tile_grads) = results
            torch.testing.assert_close(tiled, blocks, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(
                tiled, matrix_mmd(a, b, kernel, MMD_SCALES, None, unbiased), rtol=1e-10, atol=1e-10
            )
            assert len(tile_grads) == sum(wants)
            for got, expected in zip(tile_grads, block_grads, strict=True):
                torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert len(calls) == 8 and not mmd_tiles._failed


def test_the_tiles_no_gradient_passes_through_take_the_kernel_without_slopes(float64, monkeypatch):
    # 32 + 32 rows in tiles of 16: blocks 0-1 hold a, 2-3 hold b, each block's row one strip; with a
    # asking for gradients, the strips of b's rows (3 tiles of b with itself) need no slopes, those of
    # a's rows (7 tiles) do; with neither asking, none of the 4 strips does (counted at each strip's
    # call of the kernel it took, with its width in tiles)
    monkeypatch.setattr(mmd_tiles, "TILE", 16)
    monkeypatch.setattr(mmd_tiles, "MIN_ROWS", 1)
    monkeypatch.setattr(mmd_tiles, "_failed", [])
    asked = []
    kernel = mmd_tiles._kernel

    def counted(*args):
        compiled = kernel(*args)
        return lambda *strip: asked.append((args[2], strip[0].shape[1] // 16)) or compiled(*strip)

    monkeypatch.setattr(mmd_tiles, "_kernel", counted)
    a, b = torch.randn(32, 4), torch.randn(32, 4) + 0.5
    value = mmd(a.clone().requires_grad_(), b)
    assert asked == [(True, 4), (True, 3), (False, 2), (False, 1)]
    asked.clear()
    with torch.no_grad():
        assert mmd(a, b).item() == pytest.approx(value.item(), rel=1e-12)
    assert asked == [(False, 4), (False, 3), (False, 2), (False, 1)]
    assert value.item() == pytest.approx(matrix_mmd(a, b, "imq", MMD_SCALES, None, True).item(), rel=1e-10)


def test_every_strip_hands_the_kernel_tensors_that_start_their_storage(float64, monkeypatch):
    # torch.compile compiles a kernel once more for a tensor at storage offset 0 after one at another
    # offset: the kernel's tensors (the strip buffer's columns from its start, the rows' kinds, the
    # columns' weights and factors) all start their storage, whatever the strip, so that the kernel is
    # compiled twice per process at most (its first width, then any width)
    monkeypatch.setattr(mmd_tiles, "TILE", 16)
    monkeypatch.setattr(mmd_tiles, "STRIP_TILES", 2)
    monkeypatch.setattr(mmd_tiles, "MIN_ROWS", 1)
    monkeypatch.setattr(mmd_tiles, "_failed", [])
    handed = []
    kernel = mmd_tiles._kernel
    monkeypatch.setattr(
        mmd_tiles, "_kernel", lambda *args: lambda *strip: handed.append(strip) or kernel(*args)(*strip)
    )
    for n, m in ((37, 29), (50, 41)):
        mmd(torch.randn(n, 5, requires_grad=True), torch.randn(m, 5))
    # a block's row in strips of 2 tiles from the diagonal on: 5 blocks take 3 + 2 + 2 + 1 + 1 strips,
    # 6 blocks 3 + 3 + 2 + 2 + 1 + 1
    assert len(handed) == 9 + 12
    widths = set()
    for t, rows, of_a, of_b, halves in handed:
        assert all(x.storage_offset() == 0 for x in (t, rows, of_a, of_b, halves))
        assert t.shape[0] == 16 and rows.shape == (2, 16) and of_a.shape == of_b.shape == halves.shape == t.shape[1:]
        widths.add(t.shape[1])
    assert widths == {16, 32}


def test_every_tile_kernel_gets_a_code_object_of_its_own(monkeypatch):
    # torch.compile keeps at most a few compiled variants per code object and runs the rest
    # uncompiled: the kernels of two kernels, two dtypes and with or without slopes (8) must not share one
    handed = []
    monkeypatch.setattr(mmd_tiles, "_kernels", {})
    monkeypatch.setattr(mmd_tiles.torch, "compile", lambda function, **options: handed.append(function) or function)
    for kernel in KERNELS:
        series = KernelSeries(kernel, (1.0, 2.0))
        for dtype in (torch.float32, torch.float64):
            for slopes in (True, False):
                assert mmd_tiles._kernel(series, dtype, slopes) is mmd_tiles._kernel(series, dtype, slopes)
    assert len(handed) == 8 and len({id(f.__code__) for f in handed}) == 8
    # each is the tile kernel itself: the same sums as the first one's, and its own closure; the one
    # with slopes leaves them in the tile, the other leaves the tile alone
    size = mmd_tiles.TILE
    t, rows, columns = (torch.rand(*shape, dtype=torch.float64) for shape in ((size, size), (2, size), (2, size)))
    halves = torch.ones(size, dtype=torch.float64)
    with_slopes, values_only = t.clone(), t.clone()
    imq_slopes = handed[2](with_slopes, rows, columns[0], columns[1], halves)
    imq_values = handed[3](values_only, rows, columns[0], columns[1], halves)
    assert torch.equal(imq_slopes, imq_values) and imq_slopes.shape == (size,)
    assert torch.equal(values_only, t) and not torch.equal(with_slopes, t)


def test_the_tile_kernel_asks_for_fused_multiply_adds_and_compiles_without_them_where_torch_lacks_the_option(
    monkeypatch,
):
    # the option torch.compile is given, and a torch that refuses it (RuntimeError, as for an unknown
    # option) still gets the kernel, compiled with its defaults
    given = []

    def compile_(function, dynamic=None, options=None):
        given.append(options)
        if options is not None:
            raise RuntimeError("Unexpected optimization option cpp.enable_floating_point_contract_flag")
        return function

    monkeypatch.setattr(mmd_tiles, "_kernels", {})
    monkeypatch.setattr(mmd_tiles.torch, "compile", compile_)
    series = KernelSeries("imq", (0.5, 1.0, 4.0))
    kernel = mmd_tiles._kernel(series, torch.float64)
    assert given == [{"cpp.enable_floating_point_contract_flag": "fast"}, None]
    assert mmd_tiles._kernel(series, torch.float64) is kernel and len(given) == 2
    # the kernel itself, on a strip of three tiles: each row's sum of the kernel sum_s r_s / (r_s + t)
    # weighted by the columns' weights for a's rows and the values' factors, and the weighted slope
    # -sum_s r_s / (r_s + t)^2 / c (the factors left out) in place of t
    size = mmd_tiles.TILE
    t = torch.rand(size, 3 * size, dtype=torch.float64)
    rows = torch.zeros(2, size, dtype=torch.float64)
    rows[0] = 1
    of_a, of_b, halves = (torch.rand(3 * size, dtype=torch.float64) for _ in range(3))
    strip = t.clone()
    sums = kernel(strip, rows, of_a, of_b, halves)
    expected = sum(r / (r + t) for r in series.ratios) * of_a * halves
    slope = -sum(r / (r + t) ** 2 for r in series.ratios) / series.unit * of_a
    assert torch.allclose(sums, expected.sum(1), rtol=1e-13, atol=0)
    assert torch.allclose(strip, slope, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "coefficients",
    [[2.0], [0.5, 3.0], [1.5, 0.25, 1.0], [0.1, 2.0, 0.0, 0.7, 1.0], [3.0, 1.0, 4.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
)
def test_horners_rule_gives_the_polynomial(coefficients):
    # constant first, a leading 1 (taken as t + a), trailing zeros (dropped) and a constant alone
    t = torch.linspace(0, 7, 50, dtype=torch.float64)
    expected = sum(a * t**k for k, a in enumerate(coefficients)) + torch.zeros_like(t)
    assert torch.allclose(KernelSeries._horner(coefficients, t), expected, rtol=1e-14, atol=1e-14)


def test_without_a_compiler_the_mmd_says_so_once_and_goes_on(monkeypatch, caplog):
    # a kernel that cannot be compiled (as where no C++ compiler is installed): one warning, the same
    # value from the blocks of rows, and no second try
    def no_compiler(*args):
        def kernel(*tile):
            raise RuntimeError("no C++ compiler found\nmore detail")

        return kernel

    monkeypatch.setattr(mmd_tiles, "_kernel", no_compiler)
    monkeypatch.setattr(mmd_tiles, "_failed", [])
    monkeypatch.setattr(mmd_tiles, "MIN_ROWS", 1)
    a, b = torch.randn(30, 3, dtype=torch.float64, requires_grad=True), torch.randn(20, 3, dtype=torch.float64)
    with caplog.at_level("WARNING", logger="pyrovae"):
        first, second = mmd(a, b), mmd(a, b)
    warnings = [r.getMessage() for r in caplog.records if "compiled MMD kernel" in r.getMessage()]
    assert warnings == [
        "the compiled MMD kernel is not available here (RuntimeError: no C++ compiler found); the MMD is "
        "computed without it (same values, slower at large batches)"
    ]
    assert mmd_tiles._failed == ["RuntimeError: no C++ compiler found"] and not mmd_tiles.wanted(a)
    expected = matrix_mmd(a, b, "imq", MMD_SCALES, None, True)
    assert first.item() == pytest.approx(expected.item(), rel=1e-12) and second.item() == first.item()


def test_the_tiles_are_taken_only_for_large_cpu_samples_outside_a_tracer(monkeypatch):
    from torch.fx.experimental.proxy_tensor import make_fx

    monkeypatch.setattr(mmd_tiles, "_failed", [])
    assert mmd_tiles.MIN_ROWS == 1024
    assert mmd_tiles.wanted(torch.zeros(1024, 2, device="cpu")) and not mmd_tiles.wanted(torch.zeros(1023, 2))
    seen = []
    make_fx(lambda z: seen.append(mmd_tiles.wanted(z)) or z * 2)(torch.zeros(2048, 2))
    assert seen == [False]  # the compiled engine records the blocks' operations instead
    monkeypatch.setattr(mmd_tiles, "MIN_ROWS", None)
    assert not mmd_tiles.wanted(torch.zeros(4096, 2))


def test_the_tiles_under_a_dispatch_mode_give_the_same_value(float64, monkeypatch, caplog):
    # a mode that sees every operation leaves torch.compile nothing to compile: the tile runs as
    # written, the same value, no warning, and the tiles stay on
    monkeypatch.setattr(mmd_tiles, "TILE", 16)
    monkeypatch.setattr(mmd_tiles, "MIN_ROWS", 1)
    monkeypatch.setattr(mmd_tiles, "_failed", [])
    a, b = torch.randn(40, 3), torch.randn(20, 3)
    with caplog.at_level("WARNING", logger="pyrovae"), _LargestTensor() as recorder:
        value = mmd(a, b)
    assert recorder.largest > 0 and not caplog.records and not mmd_tiles._failed
    torch.testing.assert_close(value, matrix_mmd(a, b, "imq", MMD_SCALES, None, True), rtol=1e-10, atol=1e-10)
