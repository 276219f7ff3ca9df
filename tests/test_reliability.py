"""Checkpoints, exact resume, interrupts, non-finite losses and bad input (issue: reliability)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pyrovae.train.checkpoint
from pyrovae import VAE, NonFiniteLossError, fit, load_checkpoint, load_dataset, save_checkpoint
from pyrovae.cli import main
from pyrovae.data import validate_data
from pyrovae.models.likelihoods import GaussianLikelihood
from pyrovae.train import FitOptions
from pyrovae.train.checkpoint import vae_from_checkpoint

TIMING = {"seconds", "eval_seconds", "images_per_second"}


def untimed(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def state_of(vae):
    return {k: v.clone() for k, v in vae.state_dict().items()}


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class StopAtCheckpointError(Exception):
    pass


@pytest.mark.parametrize("stop_at", [5, 12, 23])  # mid-epoch, at an epoch's end (12 steps/epoch), later
def test_fit_resumed_from_any_checkpoint_equals_an_uninterrupted_run(stop_at):
    data = load_dataset("digits", "dynamic")

    def new_vae():
        torch.manual_seed(1)
        return VAE(data.x_dim, z_dim=3, hidden_dims=(16,), prior="gaussian")

    options = dict(elbo="meanfield", epochs=3, batch_size=128, seed=4)
    reference = new_vae()
    full = fit(reference, data, **options)

    saved = {}

    def capture(state):
        if state.step == stop_at:
            saved["vae"], saved["resume"] = state_of(state.vae), state.resume_state()
            raise StopAtCheckpointError

    with pytest.raises(StopAtCheckpointError):
        fit(new_vae(), data, checkpoint_every=1, callbacks=[capture], **options)
    resumed_vae = new_vae()
    resumed_vae.load_state_dict(saved["vae"])
    resumed = fit(resumed_vae, data, resume=saved["resume"], **options)

    assert_same_parameters(state_of(resumed_vae), state_of(reference))
    assert resumed.step_elbos == full.step_elbos
    assert untimed(resumed.epochs) == untimed(full.epochs)


def test_checkpoints_hold_finite_parameters_when_the_loss_goes_non_finite(tmp_path):
    calls = {"n": 0}

    class FailsLater(GaussianLikelihood):
        def distribution(self, output):
            calls["n"] += 1
            return super().distribution(output * float("nan") if calls["n"] > 6 else output)

    vae = VAE(4, z_dim=2, hidden_dims=(4,), likelihood=FailsLater(4))
    path = tmp_path / "checkpoint.pt"

    def save(state):
        save_checkpoint(path, state.vae, resume=state.resume_state())

    with pytest.raises(NonFiniteLossError, match="at epoch 4, step 7; the parameters were not updated"):
        fit(vae, torch.rand(20, 4), FitOptions(epochs=5, batch_size=10), callbacks=[save])
    assert all(torch.isfinite(p).all() for p in vae.parameters())  # the bad step was not applied
    payload = load_checkpoint(path)
    assert payload["resume"]["step"] == 6
    assert all(torch.isfinite(t).all() for t in payload["model"].values())


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    vae = VAE(4, z_dim=2, hidden_dims=(3,))
    path = save_checkpoint(tmp_path / "checkpoint.pt", vae, history=[{"epoch": 1}])
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pyrovae.train.checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, vae, history=[{"epoch": 2}])
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]


TINY = ["--z-dim", "3", "--hidden", "16", "--batch-size", "16", "--no-progress", "--seed", "2"]
FAST = ["--z-dim", "3", "--hidden", "16", "--batch-size", "256", "--no-progress", "--seed", "2"]


def run_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pyrovae", *args], capture_output=True, text=True, **kwargs)


SIGNAL_RUN = ["fit", "--epochs", "3", *TINY]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    reference = tmp_path_factory.mktemp("reference") / "run"
    done = run_cli(*SIGNAL_RUN, "--out", str(reference), timeout=300)
    assert done.returncode == 0, done.stderr
    return reference


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signalled_run_resumes_to_the_same_end_as_an_uninterrupted_one(tmp_path, reference_run, sig, code):
    reference, interrupted = reference_run, tmp_path / "interrupted"
    args = SIGNAL_RUN

    process = subprocess.Popen(
        [sys.executable, "-m", "pyrovae", *args, "--out", str(interrupted)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = interrupted / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == code, (stdout, stderr)
    assert f"stopped by {sig.name}" in stderr and f"pyrovae fit --resume {interrupted}" in stderr
    assert "Traceback" not in stderr
    assert "checkpoint written to" in stdout
    stopped_at = load_checkpoint(interrupted)["resume"]
    assert 1 <= stopped_at["step"] < 3 * 90

    done = run_cli("fit", "--resume", str(interrupted), "--no-progress", timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"resuming at epoch {stopped_at['epoch']}, step {stopped_at['step']}" in done.stdout
    a, b = load_checkpoint(reference), load_checkpoint(interrupted)
    assert_same_parameters(a["model"], b["model"])
    records = [
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (reference, interrupted)
    ]
    assert untimed(records[0]) == untimed(records[1])
    assert len(records[1]) == 3


def test_same_seed_same_metrics_on_cpu(tmp_path):
    runs = []
    for name in ("a", "b"):
        result = CliRunner().invoke(
            main, ["fit", "--epochs", "2", *FAST, "--device", "cpu", "--out", str(tmp_path / name)]
        )
        assert result.exit_code == 0, result.output
        runs.append([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()])
        runs[-1] = (untimed(runs[-1]), load_checkpoint(tmp_path / name)["model"])
    assert runs[0][0] == runs[1][0]
    assert_same_parameters(runs[0][1], runs[1][1])


def test_resume_can_extend_a_finished_run(tmp_path):
    out = tmp_path / "run"
    assert CliRunner().invoke(main, ["fit", "--epochs", "1", *FAST, "--out", str(out)]).exit_code == 0
    result = CliRunner().invoke(main, ["fit", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert vae_from_checkpoint(load_checkpoint(out)).z_dim == 3


def test_non_finite_loss_in_the_cli_names_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["fit", "--lr", "1e8", "--likelihood", "gaussian", "--learn-sigma", "--checkpoint-every", "1"]
    result = CliRunner().invoke(
        main, [*args, "--z-dim", "4", "--hidden", "32", "--no-progress", "--device", "cpu", "--out", str(out)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "at epoch 1, step 2" in result.output
    assert f"The last good checkpoint (epoch 1, step 1) is {out / 'checkpoint.pt'}" in result.output
    assert all(torch.isfinite(t).all() for t in load_checkpoint(out)["model"].values())


def test_detect_anomaly_runs(tmp_path):
    result = CliRunner().invoke(main, ["fit", "--epochs", "1", *FAST, "--detect-anomaly", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "-2"], "Invalid value for '--epochs'"),
        (["--prior", "cauchy"], "Invalid value for '--prior'"),
        (["--dataset", "cifar"], "cifar"),
        (["--checkpoint-every", "0"], "Invalid value for '--checkpoint-every'"),
        (["--sigma", "0"], "Invalid value for '--sigma'"),
        (["--lr", "-1"], "Invalid value for '--lr'"),
    ],
)
def test_bad_values_fail_without_a_traceback_or_a_run_directory(tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", *TINY, "--out", str(out), *args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_unwritable_out_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(main, ["fit", *TINY, "--epochs", "1", "--out", str(blocker / "run")])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot create the run directory {blocker / 'run'}: not a directory")
    assert len(result.output.strip().splitlines()) == 1


def test_resume_needs_a_run_directory_and_keeps_its_options(tmp_path):
    result = CliRunner().invoke(main, ["fit", "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "is not a pyrovae run directory" in result.output
    result = CliRunner().invoke(main, ["fit", "--resume", str(tmp_path), "--z-dim", "4", "--lr", "0.1"])
    assert result.exit_code == 2 and "--z-dim, --lr cannot be combined with --resume" in result.output
    (tmp_path / "config.json").write_text("{}")
    torch.save({"weights": torch.ones(1)}, tmp_path / "checkpoint.pt")
    result = CliRunner().invoke(main, ["fit", "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "not a pyrovae checkpoint" in result.output


# -- property-based: random arrays either pass validation and train, or raise the documented error


FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
SHAPES = (
    st.tuples(st.integers(0, 6), st.integers(1, 5))
    | st.tuples(st.integers(1, 3))
    | st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
)
DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.bool_])


def cast(values, dtype):
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype)


RANDOM_ARRAYS = st.builds(cast, arrays(np.float64, SHAPES, elements=FLOATS | st.integers(0, 1)), DTYPES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=RANDOM_ARRAYS, likelihood=st.sampled_from(["bernoulli", "gaussian"]))
def test_validate_data_accepts_or_raises_value_error(x, likelihood):
    tensor = torch.as_tensor(x)
    try:
        validate_data(tensor, 3, likelihood)
    except ValueError as error:
        assert str(error) and "\n" not in str(error)
        return
    # accepted: then it is a finite (N, 3) float tensor in the likelihood's support, and fit trains on it
    assert tensor.is_floating_point() and tensor.dim() == 2 and tensor.shape[1] == 3 and tensor.shape[0] > 0
    assert torch.isfinite(tensor).all()
    history = fit(
        VAE(3, z_dim=1, hidden_dims=(2,), likelihood=likelihood).to(tensor.dtype), tensor, FitOptions(epochs=1)
    )
    assert np.isfinite(history.last["train_elbo"])


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)), elements=FLOATS),
    batch=st.integers(-2, 5),
    epochs=st.integers(-1, 2),
)
def test_fit_accepts_or_raises_value_error(x, batch, epochs):
    tensor = torch.as_tensor(x)
    vae = VAE(tensor.shape[1], z_dim=1, hidden_dims=(2,), likelihood="gaussian").double()
    try:
        history = fit(vae, tensor, FitOptions(epochs=epochs, batch_size=batch))
    except ValueError as error:
        assert "\n" not in str(error)
        return
    assert len(history.epochs) == epochs and batch >= 1 and torch.isfinite(tensor).all()


# -- float labels in an .npz -------------------------------------------------------------------------
def test_float_labels_that_are_not_class_ids_are_refused_in_one_line():
    from pyrovae.data.checks import check_labels

    for labels, first in (([0.0, 1.5, 2.0], "1.5, at row 1"), ([0.0, float("nan")], "nan, at row 1"),
                          ([1e300, 0.0], "1e+300, at row 0")):  # fmt: skip
        with pytest.raises(ValueError, match=r"^'y' in d.npz must be integer class ids, but holds 1 float") as error:
            check_labels(np.array(labels), len(labels), "'y' in d.npz")
        assert f"(the first, {first})" in str(error.value) and "\n" not in str(error.value)


def test_whole_float_labels_are_read_as_integers_and_said_once():
    from pyrovae.data.checks import check_labels
    from pyrovae.errors import DataWarning

    with pytest.warns(DataWarning, match=r"^'y' in d.npz holds whole numbers as float32 floats: read as integer"):
        labels = check_labels(np.array([2.0, 0.0, 1.0], dtype=np.float32), 3, "'y' in d.npz")
    assert labels.dtype == torch.int64 and labels.tolist() == [2, 0, 1]


def test_the_cli_says_a_label_conversion_in_one_line_of_its_own(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.integers(0, 2, size=(40, 6)).astype(np.float32), y=(np.arange(40) % 3).astype(np.float64))
    result = CliRunner().invoke(main, ["fit", "--dataset", str(data), "--epochs", "1", "--z-dim", "2", "--hidden", "8",
                                       "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "whole numbers" in line]
    assert said == [f"Warning: 'y' in {data} holds whole numbers as float64 floats: read as integer class ids; save "
                    "them as integers to be silent"]  # fmt: skip
    assert "UserWarning" not in result.output and "warnings.warn" not in result.output
    np.savez(data, x=rng.integers(0, 2, size=(40, 6)).astype(np.float32), y=np.linspace(0, 1, 40))
    refused = CliRunner().invoke(main, ["fit", "--dataset", str(data), "--epochs", "1", "--out", str(tmp_path / "r2"),
                                        "--device", "cpu"])  # fmt: skip
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and not (tmp_path / "r2").exists()
    assert refused.output.startswith(f"Error: 'y' in {data} must be integer class ids, but holds 38 float(s)")


# -- a user prior's error under torchrun ----------------------------------------------------------------
BROKEN_PRIOR = """
from pyrovae.models.priors import Prior


class RaisesInInit(Prior):
    def __init__(self, z_dim):
        super().__init__(z_dim)
        raise RuntimeError("cannot reach the prior server")

    def forward(self, batch_shape=()):
        raise NotImplementedError
"""


def test_under_torchrun_rank_0_alone_says_a_user_priors_error(tmp_path):
    import socket
    from pathlib import Path

    (tmp_path / "broken_prior.py").write_text(BROKEN_PRIOR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pyrovae", "fit", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
               "--device", "cpu", "--prior", "broken_prior:RaisesInInit", "--out", str(tmp_path / "run")]  # fmt: skip
    ranks = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={
            **os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "PYTHONPATH": f"{root}{os.pathsep}{tmp_path}", "OMP_NUM_THREADS": "1"})
        for rank in range(2)
    ]  # fmt: skip
    outputs = [rank.communicate(timeout=180)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [1, 1], outputs
    assert outputs[0].startswith("Error: cannot build the prior broken_prior:RaisesInInit(z_dim=")
    assert outputs[0].count("\n") == 1 and "Traceback" not in outputs[0], outputs[0]
    assert outputs[1] == "", outputs[1]  # every rank fails alike; rank 0 says it once
    assert not (tmp_path / "run").exists()
