"""Benchmarks run with tiny settings and write what they promise; their statistics are checked.

An unlisted benchmark script fails the suite (as in ``tests/test_examples.py``).
"""

import importlib.util
import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from pyrovae import VAE

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
BENCHMARKS = ["kl_estimators.py"]


def _load(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem, BENCHMARKS_DIR / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kl():
    return _load("kl_estimators.py")


def test_kl_estimators_quick_smoke(kl, tmp_path):
    args = ["--quick", "--epochs", "2", "--seeds", "2", "--draws", "8", "--bootstrap", "200", "--z-dim", "2",
            "--hidden", "16", "--device", "cpu", "--threads", "1", "--out", str(tmp_path)]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few draws and seeds: expected here
        kl.main(args)
    result = json.loads((tmp_path / "kl_estimators.json").read_text())
    elbos = result["settings"]["elbos"]
    assert elbos == ["meanfield", "trace", "jit-meanfield", "jit-trace"]
    assert result["kl_mode"] == {"meanfield": "analytic", "trace": "monte-carlo", "jit-meanfield": "analytic",
                                 "jit-trace": "monte-carlo"}  # fmt: skip
    assert result["machine"]["device"] == "cpu" and result["machine"]["dtype"] == "float32"

    points = result["gradient_variance"]["points"]
    assert [(p["point"], p["batches"]) for p in points] == [
        (point, kind) for point in ("init", "middle", "end") for kind in ("fixed", "random")
    ]
    assert [p["step"] for p in points[::2]] == [0, result["training"]["runs"][0]["step"][1], points[-1]["step"]]
    for point in points:
        groups = point["groups"]
        assert set(groups) == {"encoder", "decoder", "all"}
        assert groups["all"]["num_params"] == groups["encoder"]["num_params"] + groups["decoder"]["num_params"]
        for entry in groups.values():
            for elbo in elbos:
                assert math.isfinite(entry["variance"][elbo]) and entry["variance"][elbo] > 0
                ratio = entry["ratio"][elbo]
                assert ratio["value"] > 0 and all(math.isfinite(c) and c > 0 for c in ratio["ci"])
                assert ratio["ci"][0] <= ratio["value"] * (1 + 1e-9) and ratio["value"] <= ratio["ci"][1] * (1 + 1e-9)
            assert entry["ratio"]["meanfield"] == {"value": 1.0, "ci": [1.0, 1.0]}
        # same z for trace and meanfield: identical decoder gradients, draw by draw
        assert groups["decoder"]["ratio"]["trace"]["value"] == pytest.approx(1.0, rel=1e-6)

    runs = result["training"]["runs"]
    assert sorted((r["elbo"], r["seed"]) for r in runs) == sorted((e, s) for e in elbos for s in (0, 1))
    for run in runs:
        assert len(run["test_elbo"]) == len(run["step"]) == len(run["seconds"]) == 3
        assert all(math.isfinite(v) and v < 0 for v in run["test_elbo"])
        assert run["step"][0] == 0 and run["step"] == sorted(run["step"]) and run["seconds"] == sorted(run["seconds"])
    for summary in result["training"]["summary"].values():
        assert summary["seconds_per_step"] > 0 and math.isfinite(summary["final_test_elbo_mean"])
        assert summary["final_test_elbo_sd"] >= 0
    assert result["training"]["summary"]["meanfield"]["difference_to_first_by_seed"] == [0.0, 0.0]

    table = (tmp_path / "kl_estimators.md").read_text()
    assert "| `trace` | monte-carlo |" in table and "`trace` / `meanfield`" in table
    for name in ("kl_estimators_variance.png", "kl_estimators_curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kl_estimators.json", "kl_estimators.md", "kl_estimators_curves.png", "kl_estimators_variance.png"
    ]  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda is valid here")
def test_kl_estimators_cuda_without_a_gpu_is_one_clean_error(kl, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        kl.main(["--quick", "--device", "cuda", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "torch sees no CUDA GPU" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_total_variance_is_the_sum_of_coordinate_variances(kl, float64):
    g = torch.randn(50, 300) * torch.linspace(0.1, 3.0, 300) + 5.0
    gram = kl.centered_gram(g, chunk=64)
    assert kl.total_variance(gram).item() == pytest.approx(g.var(0).sum().item(), rel=1e-12)
    counts = kl.bootstrap_counts(50, 4, seed=0)
    assert torch.equal(counts.sum(1), torch.full((4,), 50.0, dtype=torch.float64))
    for row, boot in zip(counts, kl.total_variance(gram, counts), strict=True):
        resample = g.repeat_interleave(row.long(), dim=0)
        assert boot.item() == pytest.approx(resample.var(0).sum().item(), rel=1e-10)


def test_variance_ratio_interval_covers_the_true_ratio(kl, float64):
    # 400 draws of 50 coordinates; the true ratio of total variances is 4. The total variance's
    # relative standard error is sqrt(2 / (R P)) = 1 %, so the 95 % interval is about 4 +- 0.11.
    base, noisy = torch.randn(400, 50), 2.0 * torch.randn(400, 50)
    grams = {name: {"all": kl.centered_gram(g)} for name, g in (("base", base), ("noisy", noisy))}
    entry = kl.variance_summary(grams, "base", kl.bootstrap_counts(400, 2000, seed=1))["all"]
    low, high = entry["ratio"]["noisy"]["ci"]
    assert low < 4.0 < high and high - low < 0.5
    assert entry["ratio"]["noisy"]["value"] == pytest.approx(4.0, rel=0.05)


def test_trace_and_meanfield_share_decoder_gradients_draw_by_draw(kl):
    vae = VAE(12, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.rand(6, 12))
    before = [p.detach().clone() for p in vae.parameters()]
    draws = {e: kl.gradient_draws(vae, e, lambda r: x, num_data=30, draws=5, seed=3) for e in ("meanfield", "trace")}
    n_enc = sum(p.numel() for p in vae.encoder.parameters())
    assert torch.equal(draws["meanfield"][:, n_enc:], draws["trace"][:, n_enc:])
    assert not torch.allclose(draws["meanfield"][:, :n_enc], draws["trace"][:, :n_enc])
    assert draws["meanfield"][:, n_enc:].std(0).sum() > 0  # the draws differ from one another
    assert all(torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=True))
    assert all(p.grad is None for p in vae.parameters())
