"""pyrovae.evaluate: streaming log-mean-exp, PSIS k-hat against known Pareto tails, IWAE >= ELBO,
bounded memory with the default k = 5000, active units, JSON and InferenceData output.

The checks against exact log p(x) and the exact posterior are in tests/test_linear_gaussian.py.
"""

import json
import math
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import genpareto
from torch.overrides import TorchFunctionMode

from pyrovae import VAE, Dataset, evaluate, iwae_log_likelihood
from pyrovae.evaluation import LogMeanExp, active_units, psis_khat
from pyrovae.evaluation.iwae import CHUNK_ELEMENTS
from pyrovae.evaluation.psis import psis_khat_from_largest, psis_tail_length


def small_vae(likelihood="bernoulli", z_dim=3):
    return VAE(x_dim=10, z_dim=z_dim, hidden_dims=(8,), activation="tanh", likelihood=likelihood)


def binary_data(n=6, d=10):
    return torch.bernoulli(torch.full((n, d), 0.4))


# -- streaming log-mean-exp -------------------------------------------------------------------------
CHUNKINGS = {"one": [1000], "1+999": [1, 999], "7s": [7] * 142 + [6], "mixed": [500, 1, 499]}


@pytest.mark.parametrize("chunks", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_streaming_log_mean_exp_equals_logsumexp(float64, chunks):
    # weights spanning 1e-300..1e300 in one row, with the maximum arriving in a later chunk
    lw = torch.randn(1000, 3) * 200
    lw[:, 1] += 1e4
    lw[-1, 2] = 900.0
    lw[3, 0] = -math.inf
    acc = LogMeanExp()
    for part in lw.split(chunks):
        acc.update(part)
    expected = torch.logsumexp(lw, 0) - math.log(1000)
    torch.testing.assert_close(acc.log_mean_exp(), expected, rtol=1e-13, atol=1e-12)


def test_streaming_standard_error_is_the_delta_method(float64):
    lw = torch.randn(400, 2) * 0.5
    acc = LogMeanExp()
    for part in lw.split(64):
        acc.update(part)
    w = lw.exp()
    expected = w.std(0) / (math.sqrt(400) * w.mean(0))
    torch.testing.assert_close(acc.std_error(), expected, rtol=1e-10, atol=0)


def test_streaming_rejects_nan():
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        LogMeanExp().update(torch.tensor([[0.0, math.nan]]))


# -- PSIS --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [-0.3, 0.3, 0.8], ids=lambda k: f"k={k}")
def test_psis_khat_recovers_the_pareto_shape_of_the_weights(shape):
    """Weights drawn from a generalised Pareto distribution with shape k: median k-hat over 40 rows
    of 2000 draws is within 4 standard errors of k (standard error of the median from the spread)."""
    rng = np.random.default_rng(0)
    weights = genpareto.rvs(shape, size=(40, 2000), random_state=rng) + 1e-3
    khat = psis_khat(np.log(weights))
    assert khat.shape == (40,)
    se_median = 1.2533 * khat.std() / math.sqrt(len(khat))
    assert abs(np.median(khat) - shape) < 4 * se_median + 0.02  # 0.02: the estimator's weak prior towards 0.5


def reference_log_weights(draws: int) -> np.ndarray:
    """Rows with light (normal) and heavy (Pareto k = 0.3, 0.8) tails, and one with ties at the threshold."""
    rng = np.random.default_rng(draws)
    ties = np.zeros(draws)
    ties[:4] = rng.uniform(1, 2, 4)  # 4 weights above a tie: too few to fit, k-hat = inf
    return np.stack(
        [
            *(rng.normal(size=(3, draws)) * 2),
            *np.log(genpareto.rvs(0.3, size=(3, draws), random_state=rng) + 1e-3),
            *np.log(genpareto.rvs(0.8, size=(3, draws), random_state=rng) + 1e-3),
            ties,
        ]
    )


@pytest.mark.parametrize("draws", [21, 226, 5000])
def test_psis_khat_equals_arviz_0x_psislw(draws):
    az = pytest.importorskip("arviz")
    if not hasattr(az, "psislw"):
        pytest.skip(f"arviz {az.__version__} has no psislw; the arviz-stats test covers ArviZ >= 1")
    lw = reference_log_weights(draws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, expected = az.psislw(lw, reff=1.0)
    khat = psis_khat(lw)
    assert np.isinf(khat[-1]) and np.isfinite(khat[:-1]).all()
    np.testing.assert_allclose(khat, np.asarray(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("draws", [100, 400])
def test_psis_khat_equals_arviz_stats_psislw_where_the_tails_agree(draws):
    """arviz-stats >= 1 fits floor(min(S/5, 3 sqrt S)) weights (ArviZ 0.x and pyrovae: ceil), equal for
    these S; its psislw takes a log-likelihood, i.e. the negated log weights."""
    pytest.importorskip("arviz_stats", minversion="1.0")
    from arviz_stats.base import array_stats

    assert psis_tail_length(draws) == math.floor(min(draws / 5, 3 * math.sqrt(draws)))
    lw = reference_log_weights(draws)[:-1]  # arviz-stats raises on the tied row instead of returning inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, expected = array_stats.psislw(-lw, r_eff=1.0, axis=-1)
    np.testing.assert_allclose(psis_khat(lw), np.asarray(expected), rtol=1e-12, atol=1e-12)


def test_psis_tail_length_is_ceil_of_min_fifth_and_three_root_s():
    assert [psis_tail_length(s) for s in (21, 100, 225, 226, 5000)] == [5, 20, 45, 46, 213]


@pytest.mark.parametrize("draws", [21, 24, 100, 226, 5000, 40000])
@pytest.mark.parametrize("tail", ["normal", "student-t", "pareto", "ties"])
def test_psis_khat_from_the_largest_weights_equals_psis_of_all(draws, tail):
    """Streaming evaluation keeps only the M + 1 largest log weights of each point; their k-hat
    equals psislw of all of them, exactly (same threshold, same tail, same arithmetic)."""
    rng = np.random.default_rng(draws)
    lw = {
        "normal": lambda: rng.normal(size=(6, draws)),
        "student-t": lambda: rng.standard_t(1.5, size=(6, draws)),
        "pareto": lambda: np.log(rng.pareto(0.8, size=(6, draws)) + 1e-3),
        "ties": lambda: np.round(rng.normal(size=(6, draws)), 1),
    }[tail]()
    lw[0] = 4.0  # a constant row: -inf either way
    m = psis_tail_length(draws)
    assert m == math.ceil(min(draws / 5, 3 * math.sqrt(draws)))
    shuffled = rng.permuted(np.sort(lw, axis=-1)[:, -(m + 3) :], axis=-1)  # any order, a few extra
    np.testing.assert_array_equal(psis_khat_from_largest(shuffled, draws, lw.min(-1)), psis_khat(lw))
    with pytest.raises(ValueError, match=f"needs the {m + 1} largest"):
        psis_khat_from_largest(shuffled[:, :m], draws, lw.min(-1))


def test_psis_khat_of_constant_weights_is_minus_infinity_and_errors_are_clear():
    khat = psis_khat(np.stack([np.full(100, -12.5), np.full(100, 3.0) + 1e-9 * np.arange(100)]))
    assert np.all(khat == -np.inf)
    with pytest.raises(ValueError, match="at least 21 draws per row"):
        psis_khat(np.zeros((2, 20)))
    with pytest.raises(ValueError, match="NaN"):
        psis_khat(np.full((1, 50), np.nan))


# -- the estimator -----------------------------------------------------------------------------------
def test_evaluate_shapes_and_deterministic_relations():
    vae = small_vae()
    x = binary_data(7)
    result = evaluate(vae, x, k=64, batch_size=3, chunk_size=10, seed=1)
    for tensor in (result.log_px, result.log_px_se, result.elbo, result.reconstruction, result.kl, result.kl_analytic):
        assert tensor.shape == (7,) and tensor.dtype == torch.float64 and torch.isfinite(tensor).all()
    assert result.khat.shape == (7,) and result.n == 7 and result.k == 64
    # Jensen on the same draws: log mean exp >= mean log, on every point
    assert (result.log_px >= result.elbo).all()
    torch.testing.assert_close(result.elbo, result.reconstruction - result.kl, rtol=1e-12, atol=1e-12)
    assert (result.log_px_se > 0).all()


def test_k_equal_one_is_a_single_sample_elbo():
    vae = small_vae()
    with pytest.warns(UserWarning, match="PSIS k-hat needs k >= 21"):
        result = evaluate(vae, binary_data(), k=1, seed=0)
    torch.testing.assert_close(result.log_px, result.elbo, rtol=1e-12, atol=1e-12)
    assert result.khat is None and torch.isnan(result.log_px_se).all()


def test_monte_carlo_kl_agrees_with_eq_18(float64):
    """kl (mean of log q - log p over k draws) vs the closed form, within 4 Monte Carlo standard errors."""
    vae = small_vae()
    x = binary_data(5)
    k = 4000
    result = evaluate(vae, x, k=k, seed=2, psis=False)
    loc, scale = vae.encoder(x)
    z = loc + scale * torch.randn(k, *loc.shape)
    log_ratio = vae.posterior(x).log_prob(z) - vae.prior((5,)).log_prob(z)
    se = log_ratio.std(0) / math.sqrt(k)
    assert ((result.kl - result.kl_analytic).abs() < 4 * se.detach()).all()


def test_the_default_k_of_5000_runs_in_bounded_chunks():
    """k = 5000 (the default) on a handful of points: the decoder never sees more than
    chunk_size x batch_size latent codes at once, and the estimate matches one-chunk evaluation."""
    vae = small_vae()
    x = binary_data(4)
    seen = []
    hook = vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    chunked = evaluate(vae, x, batch_size=2, chunk_size=300, seed=0)
    hook.remove()
    assert chunked.k == 5000 and chunked.khat.shape == (4,)
    assert max(math.prod(s[:-1]) for s in seen) == 300 * 2
    assert len(seen) == 2 * math.ceil(5000 / 300)  # 2 batches, 17 chunks each (the last one of 200)
    assert sorted({s[0] for s in seen}) == [200, 300]
    whole = evaluate(vae, x, chunk_size=5000, seed=1)
    tolerance = 5 * torch.sqrt(chunked.log_px_se**2 + whole.log_px_se**2)
    assert ((chunked.log_px - whole.log_px).abs() < tolerance).all()


def test_default_chunk_size_respects_the_memory_budget():
    vae = VAE(x_dim=784, z_dim=2, hidden_dims=(16,))
    seen = []
    vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(math.prod(args[0].shape[:-1])))
    result = evaluate(vae, torch.zeros(3, 784), k=30000, batch_size=3, seed=0, psis=False)
    assert result.chunk_size == CHUNK_ELEMENTS // (3 * 784)
    assert max(seen) * 784 <= CHUNK_ELEMENTS


class LargestTensor(TorchFunctionMode):
    """Records the largest tensor any torch function returns while active (a memory probe: CPU
    tensors are not seen by tracemalloc)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(value):
                self.bytes = max(self.bytes, value.numel() * value.element_size())
        return out


def test_evaluate_memory_does_not_grow_with_k_times_n():
    """Peak memory of evaluate with k = 200,000 draws for 8 points: the largest tensor and NumPy's
    peak (tracemalloc sees NumPy, which PSIS uses) stay near the chunk and the PSIS tail, far below
    the k x n = 1.6M log weights (12.8 MB in float64) that keeping every weight would take, and
    grow like sqrt(k)."""
    vae = small_vae()
    x = binary_data(8)
    k, chunk = 200_000, 500
    bound = 3 * (psis_tail_length(k) + 1 + chunk) * 8 * 8  # the topk pool of one chunk, float64, with slack
    peaks = {}
    for draws in (k // 10, k):
        tracemalloc.start()
        with LargestTensor() as probe:
            result = evaluate(vae, x, k=draws, batch_size=8, chunk_size=chunk, seed=0)
        _, numpy_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peaks[draws] = (probe.bytes, numpy_peak)
        assert result.khat.shape == (8,) and np.isfinite(result.khat).all()
    largest, numpy_peak = peaks[k]
    assert largest <= bound < k * 8 * 8 / 20
    tails = 8 * (psis_tail_length(k) + 1) * 8  # 8 rows of the M + 1 largest weights, float64
    assert numpy_peak < 40 * tails < k * 8 * 8 / 3  # a few copies of that, not of 8 x 200,000
    assert largest < 4 * peaks[k // 10][0]  # 10x the draws: grows like sqrt(k), not like k


def test_seed_reproduces_and_leaves_the_global_rng_alone():
    vae = small_vae()
    x = binary_data()
    state = torch.get_rng_state()
    a = evaluate(vae, x, k=50, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = evaluate(vae, x, k=50, seed=7, chunk_size=50)
    c = evaluate(vae, x, k=50, seed=8)
    assert torch.equal(a.log_px, b.log_px) and np.array_equal(a.khat, b.khat)
    assert not torch.equal(a.log_px, c.log_px)
    torch.testing.assert_close(iwae_log_likelihood(vae, x, k=50, seed=7), a.log_px)


def test_active_units_count_the_latent_means_that_move_with_x(float64):
    vae = small_vae(z_dim=4)
    with torch.no_grad():  # coordinates 0 and 2 of the mean ignore x
        last = vae.encoder.net[-1]
        last.weight[[0, 2]] = 0.0
    x = binary_data(50)
    units = active_units(vae, x)
    loc = vae.encoder(x)[0]
    torch.testing.assert_close(units.variance, loc.var(0, unbiased=False), rtol=1e-12, atol=0)
    assert units.variance[0] == 0 and units.variance[2] == 0
    assert units.count == int((units.variance > 0.01).sum()) and units.count <= 2
    assert active_units(vae, x, threshold=0.0).count == 2
    assert evaluate(vae, x, k=2, seed=0, psis=False).active.count == units.count


def test_bad_input_is_a_value_error():
    vae = small_vae()
    with pytest.raises(ValueError, match="k must be a positive int"):
        evaluate(vae, binary_data(), k=0)
    with pytest.raises(ValueError, match=r"must have shape \(N, 10\), got \(3, 4\)"):
        evaluate(vae, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="not all 0 or 1"):
        evaluate(vae, torch.full((3, 10), 0.5))
    with pytest.raises(ValueError, match="keep_draws"):
        evaluate(vae, binary_data(), k=5, keep_draws=-1)
    with pytest.raises(ValueError, match="no draws were kept"):
        evaluate(vae, binary_data(), k=30).to_inference_data()


def test_a_dataset_is_evaluated_on_its_test_set():
    vae = small_vae(likelihood="gaussian")
    data = Dataset("toy", torch.rand(20, 10), torch.rand(6, 10), (2, 5))
    assert evaluate(vae, data, k=25, seed=0).n == 6


def test_to_dict_is_strict_json_and_progress_goes_to_stderr(capsys):
    vae = small_vae()
    result = evaluate(vae, binary_data(5), k=40, seed=0, progress=True)
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    summary = record["summary"]
    assert summary["n"] == 5 and summary["k"] == 40
    assert summary["elbo"] == pytest.approx(float(result.elbo.mean()), rel=1e-12)
    assert summary["log_px"] == pytest.approx(float(result.log_px.mean()), rel=1e-12)
    assert summary["gap"] >= 0
    assert summary["khat_median"] == pytest.approx(float(np.median(result.khat)))
    assert summary["khat_fraction_above_threshold"] == float(np.mean(result.khat > 0.7))
    assert len(record["per_point"]["khat"]) == 5 and len(record["per_point"]["log_px"]) == 5
    assert "evaluate k=40" in capsys.readouterr().err
    report = result.report()
    assert f"{summary['elbo']:.3f}" in report and f"{summary['log_px']:.3f}" in report


def test_inference_data_round_trip(tmp_path):
    az = pytest.importorskip("arviz")
    vae = small_vae()
    result = evaluate(vae, binary_data(5), k=60, seed=0, batch_size=2, keep_draws=3)
    path = tmp_path / "draws.nc"
    result.to_inference_data().to_netcdf(str(path))
    idata = az.from_netcdf(str(path))
    assert idata.posterior["z"].shape == (1, 60, 3, 3)
    assert idata.sample_stats["log_weight"].shape == (1, 60, 3)
    assert idata.observed_data["x"].shape == (3, 10)
    assert list(idata.posterior["point"].values) == [0, 1, 2]
    assert idata.posterior.attrs["k"] == 60 and "q(z|x)" in idata.posterior.attrs["description"]
    log_weight = idata.sample_stats["log_weight"].values[0].T  # (point, draw)
    np.testing.assert_array_equal(psis_khat(log_weight), result.khat[:3])
    np.testing.assert_allclose(
        np.log(np.exp(log_weight).mean(1)), result.log_px[:3].numpy(), rtol=1e-12
    )  # the same draws the estimate was made from


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
)
def test_evaluate_runs_on_the_models_device(device):
    vae = small_vae().to(device)
    result = evaluate(vae, binary_data(4), k=100, seed=0)
    assert result.device.startswith(device) and result.log_px.device.type == "cpu"
    assert (result.log_px >= result.elbo).all()
