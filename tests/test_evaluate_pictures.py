"""`pyrovae evaluate`'s pictures (histograms of the per-point log p(x) and k-hat), its netCDF file on a
failing or full disk, its report with few draws, and the renamed --points/--samples."""

import errno
import json
import os
import signal

import arviz as az
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import pyrovae.evaluation.netcdf as netcdf_module
from pyrovae.cli import main
from pyrovae.commands import fit_run
from pyrovae.config import FitConfig
from pyrovae.plots import histogram


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A one-epoch digits run (z = 3)."""
    out = tmp_path_factory.mktemp("runs") / "digits"
    fit_run(FitConfig(epochs=1, z_dim=3, hidden_dims=(16,), device="cpu", out=str(out)), log=None, progress=False)
    return out


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output and "Exception ignored" not in result.output, result.output
    return result


EVALUATE = ("--k", 30, "--points", 40, "--device", "cpu", "--no-progress")


def test_evaluate_draws_the_histograms_of_what_evaluation_json_holds(run_dir):
    result = invoke("evaluate", run_dir, *EVALUATE)
    assert result.exit_code == 0, result.output
    per_point = json.loads((run_dir / "evaluation.json").read_text())["per_point"]
    assert len(per_point["log_px"]) == len(per_point["khat"]) == 40
    for column in ("log_px", "khat"):
        path = run_dir / f"{column}_histogram.png"
        assert str(path) in result.output.splitlines()[-1]
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (480, 320)
        counts, _, left_out = histogram(per_point[column])
        finite = [v for v in per_point[column] if v is not None and np.isfinite(v)]
        assert counts.tolist() == np.histogram(finite, bins=40)[0].tolist() and left_out == 40 - len(finite)


def test_with_too_few_draws_for_psis_the_report_says_so_in_a_line_of_its_own(run_dir):
    (run_dir / "khat_histogram.png").unlink(missing_ok=True)
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--k", "5", "--points", "10", "--device", "cpu",
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "UserWarning" not in result.output and "warn" not in result.output
    assert "PSIS k-hat      not computed: it needs k >= 21 draws per point" in result.output
    assert json.loads((run_dir / "evaluation.json").read_text())["per_point"]["khat"] is None
    assert not (run_dir / "khat_histogram.png").exists()  # no k-hat, no picture


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_while_writing_the_netcdf_file_is_one_line_and_leaves_nothing(run_dir, tmp_path, monkeypatch):
    def fails_midway(self, filename, *args, **kwargs):  # half a file, then the disk is full
        with open(filename, "wb") as f:
            f.write(b"\x89HDF\r\n" + bytes(4096))
        raise OSError(errno.ENOSPC, "Can't write data (file write failed: errno = 28, 'No space left')\nmore")

    monkeypatch.setattr(az.InferenceData, "to_netcdf", fails_midway)
    target = tmp_path / "draws.nc"
    result = invoke("evaluate", run_dir, *EVALUATE, "--inference-data", target)
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    cause = "no space left on device (ENOSPC): free some space or choose another folder"
    assert last == f"Error: cannot write {target}: {cause}"
    assert _leftovers(tmp_path) == []  # neither the file nor its temporary


def test_a_netcdf_writer_that_crashes_is_one_line_and_this_process_goes_on(run_dir, tmp_path, monkeypatch):
    if not netcdf_module.FORKED:
        pytest.skip("the writer runs in a child process on Linux only")

    def crashes(self, filename, *args, **kwargs):  # what HDF5 did on a full disk: a segmentation fault
        open(filename, "wb").close()
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(az.InferenceData, "to_netcdf", crashes)
    target = tmp_path / "draws.nc"
    result = invoke("evaluate", run_dir, *EVALUATE, "--inference-data", target)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: cannot write {target}: the netCDF writer died (signal {int(signal.SIGSEGV)}); nothing was "
        "written there"
    )
    assert _leftovers(tmp_path) == []


def test_too_little_free_space_is_said_before_the_work(run_dir, tmp_path, monkeypatch):
    class Usage:
        free = 100 * 1024

    asked = []
    monkeypatch.setattr(netcdf_module.shutil, "disk_usage", lambda folder: asked.append(folder) or Usage)
    (run_dir / "evaluation.json").unlink(missing_ok=True)
    target = tmp_path / "draws.nc"
    result = invoke("evaluate", run_dir, "--k", 500, "--points", 20, "--device", "cpu", "--no-progress",
                    "--inference-data", target, "--inference-points", 20)  # fmt: skip
    assert result.exit_code == 1
    needed = netcdf_module.netcdf_bytes(500, 20, 3, 64)
    assert result.output.strip().splitlines() == [
        f"Error: --inference-data {target} needs about {needed / 2**20:.1f} MiB, its folder has 0.1 MiB free: free "
        "some space, choose another folder, or lower --inference-points or --k"
    ]
    assert asked == [tmp_path] and not (run_dir / "evaluation.json").exists() and _leftovers(tmp_path) == []


def test_the_netcdf_size_estimate_bounds_the_real_file(tmp_path):
    k, points, z_dim, x_dim = 200, 6, 3, 64
    rng = np.random.default_rng(0)
    idata = az.from_dict(
        posterior={"z": rng.normal(size=(1, k, points, z_dim))},
        sample_stats={"log_weight": rng.normal(size=(1, k, points))},
        observed_data={"x": rng.random((points, x_dim))},
        coords={"point": list(range(points)), "z_dim": list(range(z_dim)), "x_dim": list(range(x_dim))},
        dims={"z": ["point", "z_dim"], "log_weight": ["point"], "x": ["point", "x_dim"]},
    )
    path = netcdf_module.write_netcdf(idata, tmp_path / "d.nc", netcdf_module.netcdf_bytes(k, points, z_dim, x_dim))
    assert 0 < path.stat().st_size <= netcdf_module.netcdf_bytes(k, points, z_dim, x_dim)
    assert az.from_netcdf(str(path)).posterior["z"].shape == (1, k, points, z_dim)
    assert _leftovers(tmp_path) == ["d.nc"]


def test_the_old_spelling_of_points_and_samples_works_with_one_line_of_warning(run_dir, tmp_path):
    result = invoke("evaluate", run_dir, "--k", 5, "-n", 7, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.output.count("deprecated") == 1
    assert "Warning: -n/--n of pyrovae evaluate is deprecated: use --points 7" in result.output
    assert json.loads((run_dir / "evaluation.json").read_text())["summary"]["n"] == 7
    result = invoke("sample", run_dir, "--n", 3, "--out", tmp_path / "three.png")
    assert result.exit_code == 0 and "Warning: -n/--n of pyrovae sample is deprecated: use --samples 3" in result.output
    both = invoke("evaluate", run_dir, "-n", 7, "--points", 7)
    assert both.exit_code == 2 and "-n/--n and --points are the same option: give --points alone" in both.output
