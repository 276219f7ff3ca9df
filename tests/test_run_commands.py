"""The run commands as a hostile user and a failing machine try them (issue 17): concurrent writers
(real processes), injected disk-full / read-only faults, signals during start-up, dead run
directories, run files that parse but are wrong, settings that cannot fit in memory."""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pyrovae.cli import main
from pyrovae.commands import RUN_FILES, read_run_config
from pyrovae.train.checkpoint import load_checkpoint

FAST = ["--z-dim", "3", "--hidden", "16", "--batch-size", "256", "--no-progress", "--seed", "2", "--device", "cpu"]
ROOT = pathlib.Path(__file__).parents[1]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *parts):
    """A failed command: exit 1, no traceback, its output ending in one error line that holds every part."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert errors == lines[-1:], result.output
    for part in parts:
        assert part in lines[-1], (part, lines[-1])
    return lines[-1]


def spawn(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pyrovae", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def records_of(run, untimed=False):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    timing = ("seconds", "eval_seconds", "images_per_second")
    return [{k: v for k, v in r.items() if k not in timing} for r in records] if untimed else records


def epochs_of(run):
    return [record["epoch"] for record in records_of(run)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    result = cli("fit", "--epochs", "1", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    """A private copy of a finished one-epoch run."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


# -- one writer per run directory -----------------------------------------------------------------------
def test_a_second_writer_is_refused_and_a_killed_one_blocks_nothing(tmp_path):
    out = tmp_path / "run"
    first = spawn("fit", "--epochs", "300", *FAST[:-5], "--batch-size", "16", "--no-progress", "--out", out)
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.jsonl").exists() and epochs_of(out)) and time.monotonic() < deadline:
            time.sleep(0.02)
        # a second fit and a --resume (in this process) while the first process trains
        in_use = f"{out} is in use by process {first.pid}, which is writing to it: wait until it ends"
        refused = one_line_error(cli("fit", "--epochs", "2", *FAST, "--out", out), in_use)
        assert refused.endswith("or choose another --out")
        one_line_error(cli("fit", "--resume", out), in_use)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    done = epochs_of(out)
    assert done == list(range(1, len(done) + 1))  # one run's records, in order
    assert load_checkpoint(out)["history"][: len(done)] == records_of(out)  # metrics never ahead of the checkpoint
    (out / ".checkpoint.pt.abcd1234.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    # the dead process's lock blocks nothing, and its temporary file is cleaned up
    result = cli("fit", "--resume", out, "--epochs", str(len(load_checkpoint(out)["history"]) + 1))
    assert result.exit_code == 0, result.output
    assert not list(out.glob(".*.tmp")) and epochs_of(out) == list(range(1, len(epochs_of(out)) + 1))


# -- faults while writing ---------------------------------------------------------------------------------
def fail_writes(monkeypatch, code, name, after=0):
    """Writes of temporary files for ``name`` fail with OSError(code) after ``after`` good ones."""
    real, calls = pathlib.Path.write_bytes, {"n": 0}

    def write_bytes(self, data):
        if self.name.startswith(f".{name}."):
            calls["n"] += 1
            if calls["n"] > after:
                real(self, data[: len(data) // 2])
                raise OSError(code, os.strerror(code))
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


def test_disk_full_mid_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    fail_writes(monkeypatch, errno.ENOSPC, "checkpoint.pt", after=2)
    result = cli("fit", "--epochs", "4", *FAST, "--out", out)
    one_line_error(
        result,
        f"cannot write {out / 'checkpoint.pt'}: no space left on device (ENOSPC)",
        f"The last good checkpoint (epoch 3, step 12) is {out / 'checkpoint.pt'}",
        f"pyrovae fit --resume {out}",
    )
    assert load_checkpoint(out)["resume"]["epoch"] == 3
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    assert cli("fit", "--resume", out).exit_code == 0 and epochs_of(out) == [1, 2, 3, 4]


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system")])
def test_evaluate_sample_and_plots_keep_old_files_on_a_failing_disk(run, monkeypatch, code, cause):
    for name in ("evaluation.json", "samples.png", "latent.png"):
        (run / name).write_bytes(b"before")
    fail_writes(monkeypatch, code, "evaluation.json")
    one_line_error(cli("evaluate", run, "--k", "30", "--points", "5", "--no-progress", "--device", "cpu"), cause)
    fail_writes(monkeypatch, code, "samples.png")
    one_line_error(cli("sample", run), cause, "samples.png")
    fail_writes(monkeypatch, code, "latent.png")
    one_line_error(cli("plots", run), cause, "latent.png")
    for name in ("evaluation.json", "samples.png", "latent.png"):
        assert (run / name).read_bytes() == b"before"
    assert not list(run.glob(".*.tmp"))


def test_destinations_are_checked_before_any_work(run, tmp_path):
    before = sorted(os.listdir(run))
    one_line_error(cli("sample", run, "--out", tmp_path / "missing" / "s.png"), "does not exist: create it first")
    result = cli("evaluate", run, "--k", "30", "--inference-data", tmp_path / "missing" / "x.nc", "--device", "cpu")
    one_line_error(result, "--inference-data", "does not exist")
    assert sorted(os.listdir(run)) == before  # evaluation.json was not written either
    long_name = tmp_path / ("r" * 300)
    one_line_error(cli("fit", "--epochs", "1", *FAST, "--out", long_name), "file name too long (ENAMETOOLONG)")


def test_sample_without_a_suffix_reports_the_file_it_wrote(run, tmp_path):
    result = cli("sample", run, "--samples", "4", "--out", tmp_path / "noext")
    assert result.exit_code == 0 and result.output.strip() == f"wrote {tmp_path / 'noext.png'}"
    assert (tmp_path / "noext.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "noext").exists()


# -- refuse before anything is written --------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "inf"], "lr (--lr) must be a finite number > 0 such as 1e-3, got inf"),
        (["--lr", "1e400"], "lr (--lr) must be a finite number > 0 such as 1e-3, got inf"),
        (["--likelihood", "gaussian", "--sigma", "inf"], "sigma (--sigma) must be a finite number > 0"),
        (["--elbo", "jit-meanfield", "--batch-size", "100000"], "--batch-size 100000 must not exceed the 1438"),
        (["--z-dim", "10000000000"], "--z-dim 10000000000"),
        (["--hidden", "10000000000"], "--hidden 10000000000"),
        (["--particles", "1000000000"], "--particles 1000000000"),
        (["--eval-particles", "1000000000000"], "--eval-particles 1000000000000"),
        (["--prior", "mog", "--prior-components", "100000000000"], "of memory"),
    ],
)
def test_impossible_settings_are_refused_before_a_directory_is_made(tmp_path, args, message):
    out = tmp_path / "run"
    one_line_error(cli("fit", "--epochs", "1", *FAST, "--out", out, *args), message)
    assert not out.exists()


def test_sample_refuses_a_grid_that_cannot_fit(run):
    one_line_error(cli("sample", run, "--samples", "1000000000"), "--samples 1000000000 pictures", "lower it")


def test_a_start_that_fails_before_its_first_checkpoint_removes_what_it_wrote(tmp_path):
    out = tmp_path / "run"
    args = ["--lr", "1e8", "--likelihood", "gaussian", "--learn-sigma", "--z-dim", "4", "--hidden", "32"]
    result = cli("fit", *args, "--no-progress", "--device", "cpu", "--out", out)
    one_line_error(result, "at epoch 1, step 2", "No checkpoint had been written yet")
    assert not out.exists()


def dead_start(run):
    """What a run killed between creating its directory and its first checkpoint leaves."""
    for name in RUN_FILES[2:]:
        (run / name).unlink()
    (run / "metrics.jsonl").write_text("")
    return run


def test_a_dead_start_is_reused_by_fit_and_restarted_by_resume(run, finished_run):
    reference = records_of(finished_run, untimed=True)
    result = cli("fit", "--epochs", "1", *FAST, "--out", dead_start(run))
    assert result.exit_code == 0 and f"reusing {run}" in result.output
    result = cli("fit", "--resume", dead_start(run))
    assert result.exit_code == 0 and "starting it again from the beginning (seed 2)" in result.output
    assert records_of(run, untimed=True) == reference  # the same run as one never stopped


def files_of(run):
    return {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}


@pytest.mark.parametrize("leave", ["pictures", "metrics only"])
def test_a_run_with_finished_epochs_but_no_checkpoint_is_never_restarted_over(run, leave):
    (run / "checkpoint.pt").unlink()
    if leave == "metrics only":  # what a run killed before its pictures, then stripped of its checkpoint, leaves
        (run / "samples.png").unlink()
        (run / "reconstructions.png").unlink()
    before = files_of(run)
    missing = "1 finished epoch in metrics.jsonl) but its checkpoint.pt is missing"
    one_line_error(cli("fit", "--resume", run), f"--resume {run}", missing, "nothing was changed")
    one_line_error(cli("fit", "--epochs", "1", *FAST, "--out", run), f"--out {run}", missing)
    assert files_of(run) == before  # config.json and metrics.jsonl untouched, byte for byte


def test_a_checkpoint_that_is_a_directory_is_refused_and_nothing_is_truncated(run):
    (run / "checkpoint.pt").unlink()
    (run / "checkpoint.pt").mkdir()
    before = files_of(run)
    one_line_error(cli("fit", "--resume", run), "checkpoint.pt is not a file (a directory)", "nothing was changed")
    one_line_error(cli("fit", "--epochs", "1", *FAST, "--out", run), "checkpoint.pt is not a file (a directory)")
    assert files_of(run) == before and records_of(run)  # metrics.jsonl still holds its epoch


def test_a_lock_refused_by_a_full_disk_leaves_no_folder(tmp_path, monkeypatch):
    import builtins

    class FullDisk:
        def __init__(self, file):
            self.file = file

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_open(path, *args, **kwargs):
        file = builtins.open(path, *args, **kwargs)
        return FullDisk(file) if str(path).endswith(".pyrovae.lock") else file

    monkeypatch.setattr("pyrovae.rundir.open", full_open, raising=False)
    out = tmp_path / "new" / "run"
    one_line_error(cli("fit", "--epochs", "1", *FAST, "--out", out), "no space left on device (ENOSPC)")
    assert not out.exists()


def test_sigint_during_imports_and_sigterm_during_start_up_end_in_one_line(tmp_path):
    for sig, code, wait in ((signal.SIGINT, 130, 0.3), (signal.SIGTERM, 143, 1.5)):
        out = tmp_path / sig.name
        process = spawn("fit", *FAST, "--out", out)
        time.sleep(wait)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == code, stderr
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert f"stopped by {sig.name}" in stderr
        assert not (out / "config.json").exists()


def test_a_stop_signal_during_an_import_is_sent_again_instead_of_raised_there(tmp_path, monkeypatch):
    # raised inside an import, the stop could end the process with SIGABRT (torch's imports call C++
    # that calls back into Python); the handler records it and sends it again a moment later
    # instead; outside any import it raises as before, and once a stop is raised, a signal sent
    # again is let go
    from pyrovae import signals

    module = tmp_path / "frame_at_import.py"
    module.write_text("import sys\nFRAME = sys._getframe()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import frame_at_import

    importing, here = frame_at_import.FRAME, sys._getframe()
    assert signals.importing(importing) and not signals.importing(here)
    for name, fresh in (("_RECEIVED", []), ("_RETRIES", []), ("_SENT_AGAIN", set()), ("_RAISED", False)):
        monkeypatch.setattr(signals, name, fresh)
    sent = []
    monkeypatch.setattr(signals, "send_again", sent.append)
    with signals.stop_on_sigterm():
        on_int, on_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        on_int(signal.SIGINT, importing)
        on_term(signal.SIGTERM, importing)
        assert sent == [signal.SIGINT, signal.SIGTERM] and signals.received() == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            signals.raise_if_stopped()  # (a command's check after its imports raises the first)
        signals._SENT_AGAIN.add(signal.SIGINT)
        on_int(signal.SIGINT, here)  # sent again after the stop was raised: let go
        assert not signals._SENT_AGAIN and sent == [signal.SIGINT, signal.SIGTERM]
        with pytest.raises(signals.Stopped):
            on_term(signal.SIGTERM, here)  # a new signal outside an import raises at once
    assert signals._RECEIVED == ["SIGINT", "SIGTERM", "SIGTERM"]


def test_a_signal_sent_again_arrives_unless_a_stop_is_raised_first(monkeypatch):
    from pyrovae import signals

    for name, fresh in (("_RETRIES", []), ("_SENT_AGAIN", set()), ("_RAISED", False)):
        monkeypatch.setattr(signals, name, fresh)
    arrived = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: arrived.append(signum))
    try:
        signals.send_again(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not arrived and time.monotonic() < deadline:
            time.sleep(0.01)
        assert arrived == [signal.SIGUSR1] and signals._SENT_AGAIN == {signal.SIGUSR1}
        monkeypatch.setattr(signals, "RETRY_SECONDS", 0.3)
        signals.send_again(signal.SIGUSR1)
        signals._stopping()  # a stop raised first: the timer is cancelled
        time.sleep(0.6)
        assert arrived == [signal.SIGUSR1] and not signals._RETRIES and signals._RAISED is True
    finally:
        signal.signal(signal.SIGUSR1, previous)


# -- run files that parse but are wrong -----------------------------------------------------------------
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: None, "config.json holds a JSON NoneType, expected an object"),
        (lambda c: [c], "config.json holds a JSON list"),
        (lambda c: {k: v for k, v in c.items() if k != "resolved"}, "config.json: field 'resolved' should be"),
        (lambda c: {**c, "z_dim": "three"}, "config.json: field 'z_dim' should be int"),
        (lambda c: {k: v for k, v in c.items() if k != "dataset"}, "config.json: field 'dataset' is missing"),
        (lambda c: {**c, "resolved": {}}, "field 'resolved.binarization' should be one of"),
    ],
)
def test_a_wrong_config_json_is_one_line_naming_the_field(run, edit, message):
    config = read_run_config(run)
    (run / "config.json").write_text(json.dumps(edit(config)))
    one_line_error(cli("evaluate", run, "--k", "30", "--device", "cpu"), message)
    one_line_error(cli("plots", run), message)
    before = (run / "config.json").read_text()
    result = cli("fit", "--resume", run)
    one_line_error(result, message)
    assert "wrote" not in result.output and (run / "config.json").read_text() == before


def test_resume_state_without_an_optimizer_is_refused_before_anything_is_written(run):
    payload = load_checkpoint(run)
    del payload["resume"]["optimizer"]
    torch.save(payload, run / "checkpoint.pt")
    metrics = (run / "metrics.jsonl").read_text()
    one_line_error(cli("fit", "--resume", run), "checkpoint.pt: field 'resume.optimizer' should be a dict")
    assert (run / "metrics.jsonl").read_text() == metrics


def test_config_json_from_another_run_is_refused_on_resume(run):
    config = read_run_config(run)
    (run / "config.json").write_text(json.dumps({**config, "lr": 0.5}))
    one_line_error(cli("fit", "--resume", run), "field 'lr' is 0.5 but the checkpoint's run used 0.001")


def test_plots_checks_metrics_before_drawing(run):
    (run / "metrics.jsonl").write_text('{"epoch": 1, "step"\n')
    one_line_error(cli("plots", run), f"{run / 'metrics.jsonl'} line 1 is not valid JSON")
    (run / "metrics.jsonl").write_text("")
    one_line_error(cli("plots", run), "holds no finished epoch")
    assert not (run / "latent.png").exists() and not (run / "training_curves.png").exists()


# -- smaller messages ----------------------------------------------------------------------------------------
def test_a_random_bytes_checkpoint_is_refused_without_torchs_advice(run):
    (run / "checkpoint.pt").write_bytes(np.random.default_rng(0).bytes(4000))
    line = one_line_error(cli("sample", run), "refused to load")
    assert "weights_only" not in line and "likely succeed" not in line


def test_nan_weights_are_named_in_one_line(run):
    payload = load_checkpoint(run)
    payload["model"]["decoder.net.0.weight"][0, 0] = float("nan")
    torch.save(payload, run / "checkpoint.pt")
    one_line_error(cli("sample", run), "parameter 'decoder.net.0.weight' holds NaN or infinite values")


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_bad_seeds_name_the_option(tmp_path, seed):
    result = cli("fit", "--seed", seed, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output
    assert not (tmp_path / "run").exists()


def test_resume_clashes_name_the_options_as_typed(run):
    result = cli("fit", "--resume", run, "--hidden", "100", "--z-dim", "4")
    assert result.exit_code == 2 and "--hidden, --z-dim cannot be combined with --resume" in result.output


def test_an_npz_without_usable_keys_is_an_error_without_a_warning(tmp_path):
    np.savez(tmp_path / "bad.npz", foo=np.zeros((3, 4)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("fit", "--dataset", tmp_path / "bad.npz", "--out", tmp_path / "run")
    one_line_error(result, "must hold either 'x'")
    assert not caught, [str(w.message) for w in caught]


def test_runs_without_out_each_get_a_new_version_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for number in (0, 1):
        result = cli("fit", "--epochs", "1", *FAST)
        assert result.exit_code == 0, result.output
        assert f"run directory: {Path('runs/digits-meanfield') / f'version_{number}'}" in result.output
    assert sorted(p.name for p in (tmp_path / "runs" / "digits-meanfield").iterdir()) == ["version_0", "version_1"]
    assert read_run_config(tmp_path / "runs/digits-meanfield/version_1")["out"] == str(
        Path("runs/digits-meanfield/version_1")
    )
    # a start that fails before its first checkpoint leaves no version folder behind
    args = ["--lr", "1e8", "--likelihood", "gaussian", "--learn-sigma", "--z-dim", "4", "--hidden", "32"]
    one_line_error(cli("fit", *args, "--no-progress", "--device", "cpu"), "runs/digits-meanfield/version_2")
    assert not (tmp_path / "runs/digits-meanfield/version_2").exists()
    result = cli("fit", "--epochs", "1", *FAST, "--elbo", "trace")
    assert result.exit_code == 0 and (tmp_path / "runs/digits-trace/version_0/checkpoint.pt").is_file()


def test_overwrite_replaces_a_run_only_once_the_new_one_holds_a_checkpoint(run, tmp_path):
    before = files_of(run)
    # a new run that stops before its first checkpoint leaves the old one as it was, and nothing beside it
    args = ["--lr", "1e8", "--likelihood", "gaussian", "--learn-sigma", "--z-dim", "4", "--hidden", "32"]
    one_line_error(cli("fit", *args, "--no-progress", "--device", "cpu", "--out", run, "--overwrite"), "at epoch 1")
    assert files_of(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # one that gets there takes its place
    result = cli("fit", "--epochs", "2", *FAST[:-5], "--seed", "7", "--device", "cpu", "--out", run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_run_config(run)["seed"] == 7 and epochs_of(run) == [1, 2]
    assert load_checkpoint(run)["resume"]["epoch"] == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_never_removes_a_folder_that_holds_no_run(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    one_line_error(cli("fit", "--epochs", "1", *FAST, "--out", folder, "--overwrite"), "holds no pyrovae run")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    result = cli("fit", "--resume", folder, "--overwrite")
    assert result.exit_code == 2 and "--overwrite cannot be combined with --resume" in result.output
