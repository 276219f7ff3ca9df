import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pyrovae import load_vae
from pyrovae.cli import main
from pyrovae.commands import RUN_FILES, read_run_config
from pyrovae.rundir import LOCK_NAME

# the tests mean CPU: `--device auto` picks a GPU where there is one
TINY = ["--epochs", "2", "--z-dim", "4", "--hidden", "32", "--batch-size", "256", "--no-progress", "--device", "cpu"]


def check_run_directory(out, epochs=2):
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == sorted(RUN_FILES)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    for record in records:
        assert {"epoch", "train_elbo", "test_elbo", "seconds", "images_per_second"} <= set(record)
        assert -200 < record["test_elbo"] < 0
    config = read_run_config(out)
    assert config["elbo"] in ("meanfield", "trace") and config["engine"] in ("auto", "eager", "compiled", "jit")
    assert config["resolved"]["device"] == "cpu" and config["resolved"]["engine"] in ("eager", "compiled", "jit")
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["history"] == records and payload["config"]["z_dim"] == 4
    assert payload["resume"]["optimizer"]["state"], "optimizer state is saved for resuming"
    assert payload["resume"]["epoch"] == epochs + 1 and payload["resume"]["batch"] == 0
    vae = load_vae(out)
    assert vae.z_dim == 4 and vae.image_shape == (8, 8)
    for picture in ("samples.png", "reconstructions.png"):
        with Image.open(out / picture) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 50
    return records, config


def test_fit_writes_the_documented_files(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--elbo", "meanfield", "--seed", "3", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    records, config = check_run_directory(out)
    assert config["seed"] == 3 and config["resolved"]["binarization"] == "dynamic"
    first = result.output.splitlines()[0]
    assert "device=cpu" in first and "dtype=float32" in first and "seed=3" in first and "elbo=meanfield" in first
    assert sum(line.startswith("epoch ") for line in result.output.splitlines()) == 2


def test_fit_with_the_compiled_engine(tmp_path):
    out = tmp_path / "run"
    args = ["fit", "--elbo", "meanfield", "--engine", "compiled", "--seed", "3", "--out", str(out), *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records, config = check_run_directory(out)
    assert config["elbo"] == "meanfield" and config["engine"] == "compiled"
    assert records[-1]["test_elbo"] > records[0]["test_elbo"] - 1
    assert "elbo=meanfield (LeanTraceMeanField_ELBO, particles=1) engine=compiled" in result.output.splitlines()[0]


def test_pyrovae_0_1_elbo_names_are_split_into_elbo_and_engine(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--elbo", "jit-trace", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "Warning: --elbo jit-trace is deprecated and will be removed: use --elbo trace --engine jit" in result.stderr
    config = read_run_config(out)
    assert config["elbo"] == "trace" and config["engine"] == "jit" and config["resolved"]["engine"] == "jit"
    assert "elbo=trace (LeanTrace_ELBO, particles=1) engine=jit" in result.output


def test_fit_with_trace_elbo_gaussian_float64(tmp_path):
    out = tmp_path / "run"
    args = ["fit", "--elbo", "trace", "--likelihood", "gaussian", "--learn-sigma", "--dtype", "float64"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    _, config = check_run_directory(out)
    assert config["resolved"]["binarization"] == "none" and config["learn_sigma"] is True
    assert load_vae(out).dtype == torch.float64


@pytest.mark.parametrize("launcher", ["module", "console-script"])
def test_fit_in_a_real_subprocess(tmp_path, launcher):
    if launcher == "console-script" and shutil.which("pyrovae") is None:
        pytest.skip("the pyrovae console script is not installed (pip install -e .)")
    command = [sys.executable, "-m", "pyrovae"] if launcher == "module" else ["pyrovae"]
    out = tmp_path / "run"
    done = subprocess.run([*command, "fit", "--out", str(out), *TINY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    check_run_directory(out)
    assert "wrote config.json" in done.stdout


def test_help_documents_every_option():
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "fit" in top.output
    fit_help = runner.invoke(main, ["fit", "--help"]).output
    for option in ["--dataset", "--elbo", "--likelihood", "--z-dim", "--hidden", "--epochs", "--batch-size", "--lr",
                   "--device", "--seed", "--out", "--particles", "--binarize", "--dtype", "checkpoint.pt"]:  # fmt: skip
        assert option in fit_help


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "Invalid value for '--epochs'"),
        (["--batch-size", "-1"], "Invalid value for '--batch-size'"),
        (["--z-dim", "0"], "Invalid value for '--z-dim'"),
        (["--elbo", "magic"], "Invalid value for '--elbo'"),
        (["--likelihood", "poisson"], "Invalid value for '--likelihood'"),
        (["--hidden", "12,x"], "comma-separated positive integers"),
        (["--device", "tpu"], "Invalid value for '--device'"),
        (["--likelihood", "bernoulli", "--learn-sigma"], "learn_sigma needs the gaussian likelihood"),
    ],
)
def test_bad_options_fail_cleanly_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--out", str(out), *TINY, *args])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["fit", "--out", str(tmp_path / "run"), *TINY, "--device", "cuda"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: device 'cuda' was asked for, but torch sees no CUDA GPU")
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    assert CliRunner().invoke(main, ["fit", "--out", str(out), *TINY]).exit_code == 0
    before = (out / "metrics.jsonl").read_text()
    result = CliRunner().invoke(main, ["fit", "--out", str(out), *TINY])
    assert result.exit_code == 1 and "already holds a run" in result.output
    assert (out / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("prior, mode", [("gaussian", "analytic"), ("mog", "monte-carlo"), ("vamp", "monte-carlo")])
def test_kl_mode_is_printed_and_recorded(tmp_path, prior, mode):
    out = tmp_path / "run"
    args = ["fit", "--prior", prior, "--prior-components", "3", "--out", str(out), *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"kl=z:{mode}" in result.output.splitlines()[0]
    records, config = check_run_directory(out)
    assert all(r["kl_mode"] == {"z": mode} for r in records)
    assert config["resolved"]["kl_mode"] == {"z": mode} and config["prior_components"] == 3
    assert load_vae(out).hparams()["prior"] == prior


def test_fit_a_conv_two_level_vae_with_the_quality_options_and_evaluate_it(tmp_path):
    out = tmp_path / "run"
    args = ["fit", "--arch", "conv", "--channels", "4,8", "--latents", "2", "--prior", "vamp", "--prior-components",
            "5", "--lr-schedule", "cosine", "--clip-norm", "50", "--validation", "200", "--patience", "5",
            "--out", str(out), *TINY]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "kl=z2:monte-carlo, z1:analytic" in result.output.splitlines()[0]
    assert "selected epoch" in result.output
    config = read_run_config(out)
    assert (config["arch"], config["channels"], config["latents"]) == ("conv", [4, 8], 2)
    assert (config["lr_schedule"], config["clip_norm"], config["validation"], config["patience"]) == (
        "cosine", 50.0, 200, 5,
    )  # fmt: skip
    assert config["resolved"]["kl_mode"] == {"z2": "monte-carlo", "z1": "analytic"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("validation_elbo" in r for r in records)
    # the checkpoint holds the selected epoch's parameters, and they rebuild the same architecture
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    best = payload["resume"]["selection"]
    assert best["best_epoch"] == max(records, key=lambda r: r["validation_elbo"])["epoch"]
    for name, value in payload["model"].items():
        assert torch.equal(value, best["best_model"][name]), name
    vae = load_vae(out)
    assert type(vae).__name__ == "HierarchicalVAE" and vae.arch == "conv" and vae.channels == (4, 8)
    result = CliRunner().invoke(main, ["evaluate", str(out), "--k", "30", "--points", "20", "--device", "cpu",
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "evaluation.json").read_text())["summary"]
    assert summary["z_dim"] == 8 and set(summary["active_units_by_site"]) == {"z2", "z1"}
    assert summary["bits_per_dim"] == pytest.approx(-summary["log_px"] / (64 * 0.6931471805599453))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "conv", "--dataset", "VECTORS"], "the conv architecture needs image data"),
        (["--patience", "2"], "no validation rows are held out: pass --validation N"),
        (["--channels", "8,x"], "expected comma-separated positive integers such as 32,64"),
        (["--latents", "3"], "3 is not in the range 1<=x<=2"),
    ],
)
def test_quality_options_are_refused_in_one_line(tmp_path, args, message):
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.random.RandomState(0).rand(40, 6).round())
    args = [str(vectors) if a == "VECTORS" else a for a in args]
    result = CliRunner().invoke(main, ["fit", "--out", str(tmp_path / "run"), *TINY, *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_an_old_elbo_spelling_is_one_warning_line_of_pyrovae(tmp_path):
    args = ["fit", "--elbo", "jit-meanfield", "--z-dim", "2", "--hidden", "8", "--epochs", "1", "--batch-size", "512"]
    result = CliRunner().invoke(main, [*args, "--no-progress", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    warning = "Warning: --elbo jit-meanfield is deprecated and will be removed: use --elbo meanfield --engine jit"
    assert result.stderr.splitlines()[0].startswith(warning)
    assert "FutureWarning" not in result.output and "<string>" not in result.output


def test_threads_sets_torchs_threads_and_the_start_line_says_so(tmp_path):
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["fit", "--threads", "1", "--out", str(tmp_path / "run"), *TINY])
        assert result.exit_code == 0, result.output
        assert "pyrovae fit: device=cpu threads=1 " in result.output and torch.get_num_threads() == 1
        result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--k", "5", "--points", "3",
                                           "--threads", "1", "--device", "cpu", "--no-progress"])  # fmt: skip
        assert result.exit_code == 0 and " threads=1 " in result.output.splitlines()[0]
        assert CliRunner().invoke(main, ["fit", "--threads", "0", *TINY]).exit_code == 2  # at least one
    finally:
        torch.set_num_threads(before)


def test_the_progress_bar_is_drawn_only_on_a_terminal(tmp_path):
    # CliRunner's stderr is not a terminal: no bar unless asked for
    result = CliRunner().invoke(
        main, ["fit", "--out", str(tmp_path / "quiet"), *[a for a in TINY if a != "--no-progress"]]
    )
    assert result.exit_code == 0 and "\r" not in result.stderr and "step/s" not in result.stderr, result.stderr
    result = CliRunner().invoke(
        main, ["fit", "--progress", "--out", str(tmp_path / "bar"), *[a for a in TINY if a != "--no-progress"]]
    )
    assert result.exit_code == 0 and "epoch 1/" in result.stderr


def test_the_start_says_the_batch_a_step_takes_and_the_first_epoch_how_long_the_rest_takes(tmp_path):
    args = ["fit", "--batch-size", "99999999999999999999", "--epochs", "3", "--z-dim", "2", "--hidden", "8"]
    result = CliRunner().invoke(main, [*args, "--no-progress", "--device", "cpu", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "batch_size=1438 (--batch-size 99999999999999999999 is more than the 1438 training rows" in result.output
    epochs = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert "; the 2 epochs left take about " in epochs[0] and " at this pace" in epochs[0]
    assert not any("epochs left" in line for line in epochs[1:])


@pytest.mark.parametrize(
    "seconds, eval_seconds, steps, first_step, said",
    [
        # a compiling first step (30 s of a 37 s epoch of 469 steps) is not the pace: 9 x (7 x 469/468 + 1) s
        (37.0, 1.0, 469, 30.0, "about 72 s"),
        (10.0, 2.0, 100, 0.0, "about 108 s"),  # no first step timed: the whole epoch is the pace
        (10.0, 2.0, 1, 9.0, "about 108 s"),  # an epoch of one step: nothing after it to time
    ],
)
def test_the_pace_of_the_epochs_left_leaves_out_the_first_step(seconds, eval_seconds, steps, first_step, said):
    from pyrovae.train.lines import pace_said

    assert pace_said(9, seconds, eval_seconds, steps, first_step) == f"; the 9 epochs left take {said} at this pace"
    assert pace_said(0, seconds, eval_seconds, steps, first_step) == ""
