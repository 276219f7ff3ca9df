"""`pyrovae evaluate`, `pyrovae sample` and `pyrovae plots` on a real (tiny) run directory."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pyrovae import VAE, evaluate, load_dataset, load_vae, psis_khat, save_checkpoint
from pyrovae.cli import main
from pyrovae.commands import fit_run
from pyrovae.config import FitConfig


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A two-epoch digits run (z = 4): config.json, metrics.jsonl, checkpoint.pt, pictures."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    config = FitConfig(epochs=2, z_dim=4, hidden_dims=(32,), batch_size=256, device="cpu", out=str(out))
    fit_run(config, log=None, progress=False)
    return out


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_evaluate_writes_evaluation_json_with_the_numbers_it_prints(run_dir, tmp_path):
    netcdf = tmp_path / "draws.nc"
    args = ["--k", 50, "--points", 20, "--device", "cpu", "--no-progress", "--inference-data", netcdf]
    result = invoke("evaluate", run_dir, *args)
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "evaluation.json").read_text())
    summary, per_point = record["summary"], record["per_point"]
    assert record["dataset"] == "digits" and record["binarization"] == "dynamic" and record["test_size"] == 359
    assert summary["n"] == 20 and summary["k"] == 50 and summary["z_dim"] == 4
    assert all(len(values) == 20 for values in per_point.values())
    assert all(lp >= e for lp, e in zip(per_point["log_px"], per_point["elbo"], strict=True))
    assert 0 <= summary["active_units"] <= 4 and 0 <= summary["khat_fraction_above_threshold"] <= 1

    # the same evaluation in Python: the run's test set (binarized with the fixed seed), same seed
    vae = load_vae(run_dir)
    again = evaluate(vae, load_dataset("digits", "dynamic").test[:20], k=50, seed=0).summary()
    for key in ("elbo", "log_px", "kl", "khat_median", "active_units"):
        assert summary[key] == again[key], key
    first = result.output.splitlines()[0]
    assert "dataset=digits" in first and "k=50" in first and "seed=0" in first and "device=cpu" in first
    assert f"{summary['elbo']:.3f}" in result.output and f"{summary['log_px']:.3f}" in result.output
    assert "evaluation.json" in result.output.splitlines()[-1]

    az = pytest.importorskip("arviz")
    assert record["versions"]["arviz"] == az.__version__  # the ArviZ line that wrote the netCDF file
    idata = az.from_netcdf(str(netcdf))
    assert idata.posterior["z"].shape == (1, 50, 10, 4)
    log_weight = idata.sample_stats["log_weight"].values[0].T
    np.testing.assert_allclose(psis_khat(log_weight), per_point["khat"][:10], rtol=1e-12)


def test_evaluate_errors_are_one_line(run_dir, tmp_path):
    result = invoke("evaluate", tmp_path, "--k", 5)
    assert result.exit_code == 1 and result.output.startswith("Error: no config.json in")
    assert len(result.output.strip().splitlines()) == 1
    result = invoke("evaluate", run_dir, "--k", 0)
    assert result.exit_code == 2 and "Invalid value for '--k'" in result.output
    result = invoke("evaluate", tmp_path / "missing")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_sample_and_plots_write_pngs(run_dir, tmp_path):
    out = tmp_path / "grid.png"
    result = invoke("sample", run_dir, "--samples", 16, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {out}"
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]  # 8 columns, 2 rows
    result = invoke("plots", run_dir, "--out", tmp_path / "pictures")
    assert result.exit_code == 0, result.output
    for name in ("reconstructions.png", "latent.png", "training_curves.png"):
        with Image.open(tmp_path / "pictures" / name) as image:
            assert image.format == "PNG" and min(image.size) > 100


def _pattern_vae(image_shape):
    """A VAE whose E[x|z] is the same image for every z: the top half of the rows grey (0.5), the
    bottom half black (0)."""
    h, w = image_shape
    vae = VAE(h * w, z_dim=2, hidden_dims=(4,), image_shape=image_shape)
    rows = torch.arange(h * w) // w
    with torch.no_grad():
        vae.decoder.net[-1].weight.zero_()
        vae.decoder.net[-1].bias.copy_(torch.where(rows < h // 2, 0.0, -30.0))
    return vae


def _longest_run(mask):
    """(start, length) of the longest run of True in a 1-D boolean array."""
    best, start = (0, 0), None
    for i, value in enumerate([*mask, False]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            best = max(best, (i - start, start))
            start = None
    return best[1], best[0]


@pytest.mark.parametrize("image_shape", [(8, 8), (28, 28), (6, 16)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_sample_draws_images_at_their_own_shape(tmp_path, image_shape):
    """One sample, drawn by `pyrovae sample`: the grey rows lie above the black rows, as many of each,
    and the drawn image has the aspect ratio w / h of the data (no hard-coded size)."""
    save_checkpoint(tmp_path / "checkpoint.pt", _pattern_vae(image_shape))
    result = invoke("sample", tmp_path, "--samples", 1, "--out", tmp_path / "one.png")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "one.png") as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    grey, black = (pixels > 100) & (pixels < 160), pixels < 30
    middle_row = grey.sum(1).argmax()
    column = int(np.median(np.flatnonzero(grey[middle_row])))
    # down the middle column: the longest grey run, then directly below it the black run (+ the frame)
    start, grey_height = _longest_run(grey[:, column])
    below = black[start + grey_height :, column]
    gap = int(np.argmax(below[:3]))  # an interpolated pixel or two at the boundary
    assert below[gap], "black rows directly below the grey rows"
    black_height = _longest_run(below[gap:])[1]
    assert abs(grey_height - black_height) <= 3 + 0.1 * grey_height  # boundary and frame pixels
    h, w = image_shape
    width = grey[middle_row].sum()
    assert math.isclose(width / (grey_height + gap + black_height), w / h, rel_tol=0.1)


def test_help_lists_the_new_commands():
    top = invoke("--help").output
    for command in ("evaluate", "sample", "plots"):
        assert command in top
    text = invoke("evaluate", "--help").output
    for option in ("--dataset", "--k", "--points", "--batch-size", "--chunk-size", "--seed", "--inference-data"):
        assert option in text
    sample = invoke("sample", "--help").output
    assert "--samples" in sample and " -n" not in sample + text and "--n " not in sample + text  # (hidden)


def test_evaluate_says_how_long_it_will_take_and_refuses_what_exceeds_max_minutes(run_dir):
    before = (run_dir / "evaluation.json").read_bytes() if (run_dir / "evaluation.json").exists() else None
    result = invoke("evaluate", run_dir, "--k", 2000, "--points", 200, "--device", "cpu", "--max-minutes", 1e-4)
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: evaluating 200 test points with --k 2000 would take about ") and "--points " in line
    assert "estimated time: about " in result.output and "(from a timed pass over 4)" in result.output
    after = (run_dir / "evaluation.json").read_bytes() if (run_dir / "evaluation.json").exists() else None
    assert after == before  # refused before anything was written
    quick = invoke(
        "evaluate", run_dir, "--k", 20, "--points", 10, "--device", "cpu", "--no-progress", "--max-minutes", 1e-4
    )
    assert quick.exit_code == 0 and "estimated time" not in quick.output  # too small to be worth a timed pass


def test_a_missing_or_broken_arviz_is_one_line_and_evaluate_works_without_it(run_dir, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "arviz", None)  # `import arviz` raises ImportError, as a broken install does
    netcdf = tmp_path / "draws.nc"
    result = invoke(
        "evaluate", run_dir, "--k", 20, "--points", 5, "--device", "cpu", "--no-progress", "--inference-data", netcdf
    )
    assert result.exit_code == 1 and not netcdf.exists()
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: ArviZ cannot be imported (ModuleNotFoundError")
    assert "pip install --upgrade arviz" in line
    result = invoke("evaluate", run_dir, "--k", 20, "--points", 5, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "evaluation.json").read_text())["versions"]["arviz"] == "not available"
