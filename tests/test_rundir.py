"""pyrovae.rundir: the run directory's lock (real processes), atomic writes under injected disk
faults, one-line OSErrors, stale temporary files, checked run files."""

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from pyrovae.errors import RunDirectoryError, RunFileError
from pyrovae.rundir import (
    LOCK_NAME,
    check_fields,
    read_json_object,
    read_metrics_file,
    run_lock,
    write_bytes,
    write_text,
)

HOLD = """
import sys, time
from pyrovae.rundir import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def hold_lock_in_a_process(folder):
    """A child process that holds the lock of ``folder`` until killed (it imports no torch: fast)."""
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_killed_holder_blocks_nothing(tmp_path):
    child = hold_lock_in_a_process(tmp_path)
    try:
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(child.pid)
        with pytest.raises(RunDirectoryError, match=rf"{tmp_path} is in use by process {child.pid}, which is writing"):
            with run_lock(tmp_path):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # the operating system dropped the dead holder's lock: the next writer gets it at once
    with run_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunDirectoryError, match=f"in use by process {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released on exit
        pass


def test_stale_temporary_files_are_removed_when_a_command_holds_the_directory(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.k3j_x9a1.tmp", tmp_path / ".metrics.jsonl.0a1b2c3d.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "checkpoint.pt"]
    for path in stale + kept:
        path.write_bytes(b"x" * 100)
    with run_lock(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK_NAME, *(p.name for p in kept)])


def test_atomic_write_replaces_and_gives_normal_file_modes(tmp_path):
    path = write_text(tmp_path / "a.json", "old")
    write_text(path, "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def disk_fault(monkeypatch, code, after_bytes=10):
    """Every write of a temporary file stops after ``after_bytes`` bytes with OSError(code)."""
    real = pathlib.Path.write_bytes

    def failing(self, data):
        real(self, data[:after_bytes])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pathlib.Path, "write_bytes", failing)


@pytest.mark.parametrize(
    "code, cause",
    [(errno.ENOSPC, "no space left on device (ENOSPC)"), (errno.EROFS, "read-only file system (EROFS)")],
    ids=["disk-full", "read-only"],
)
def test_a_failed_write_keeps_the_old_file_leaves_no_temporary_file_and_says_why_in_one_line(
    tmp_path, monkeypatch, code, cause
):
    path = write_bytes(tmp_path / "evaluation.json", b"the old contents")
    disk_fault(monkeypatch, code)
    with pytest.raises(RunDirectoryError) as error:
        write_bytes(path, b"new contents, longer than ten bytes")
    message = str(error.value)
    assert message.startswith(f"cannot write {path}: {cause}; {path} is unchanged")
    assert "\n" not in message
    assert path.read_bytes() == b"the old contents"
    assert os.listdir(tmp_path) == ["evaluation.json"]


def test_missing_folder_and_overlong_names_are_one_line(tmp_path):
    with pytest.raises(RunDirectoryError, match=r"no such file or directory \(ENOENT\): create the folder first"):
        write_text(tmp_path / "missing" / "x.json", "{}")
    with pytest.raises(RunDirectoryError, match=r"file name too long \(ENAMETOOLONG\): choose a shorter name"):
        write_text(tmp_path / ("n" * 300), "{}")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders anyway")
def test_a_real_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(RunDirectoryError, match="permission denied"):
            with run_lock(folder):
                pass
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize(
    "text, message",
    [
        ("null", "holds a JSON NoneType, expected an object"),
        ("[1, 2]", "holds a JSON list, expected an object"),
        ('{"a": ', "is not valid JSON"),
    ],
)
def test_json_run_files_must_hold_an_object(tmp_path, text, message):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(RunFileError, match=message):
        read_json_object(tmp_path / "config.json", "a config")


def test_fields_are_checked_by_kind():
    defaults = {"z_dim": 50, "lr": 1e-3, "hidden_dims": (400,), "data_dir": None, "validate": False, "elbo": "x"}
    good = {"z_dim": 3, "lr": 1, "hidden_dims": [4, 5], "data_dir": None, "validate": True, "elbo": "trace"}
    check_fields("c.json", good, defaults)
    for name, bad in [("z_dim", "3"), ("z_dim", True), ("lr", None), ("hidden_dims", [1.5]), ("data_dir", 3)]:
        with pytest.raises(RunFileError, match=f"c.json: field '{name}' should be"):
            check_fields("c.json", {**good, name: bad}, defaults)
    with pytest.raises(RunFileError, match="c.json: field 'elbo' is missing"):
        check_fields("c.json", {k: v for k, v in good.items() if k != "elbo"}, defaults)


GOOD_RECORD = {"epoch": 1, "step": 12, "train_elbo": -40.0, "test_elbo": -39.0, "seconds": 0.5}


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"epoch": 1, "step": 12,'], r"line 1 is not valid JSON"),
        (["[1, 2]"], r"line 1 holds a JSON list"),
        ([json.dumps({**GOOD_RECORD, "train_elbo": "x"})], r"line 1: field 'train_elbo' should be a number"),
        ([json.dumps(GOOD_RECORD), json.dumps({**GOOD_RECORD, "epoch": 1})], r"line 2: epoch 1 where epoch 2"),
        ([json.dumps({**GOOD_RECORD, "test_elbo": None})], r"line 1: field 'test_elbo' should be a number"),
        ([json.dumps({k: v for k, v in GOOD_RECORD.items() if k != "seconds"})], r"line 1: field 'seconds'"),
    ],
)
def test_metrics_lines_are_checked_and_the_message_names_file_and_line(tmp_path, lines, message):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RunFileError, match=f"{path} {message}"):
        read_metrics_file(path)


def test_good_metrics_are_read_back(tmp_path):
    records = [GOOD_RECORD, {**GOOD_RECORD, "epoch": 2, "step": 24}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_metrics_file(path) == records


def test_lock_refusal_text_survives_an_unreadable_pid(tmp_path):
    child = hold_lock_in_a_process(tmp_path)
    try:
        (tmp_path / LOCK_NAME).write_text("")  # the holder's record is gone: still refused, in one line
        with pytest.raises(RunDirectoryError, match=r"in use by another process \(its id could not be read\)"):
            with run_lock(tmp_path):
                pass
    finally:
        child.kill()
        child.wait(timeout=30)
