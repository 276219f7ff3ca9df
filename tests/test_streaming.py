"""The streaming path (rows read from disk through a DataLoader) makes the run the resident path
makes: the same order, the same binarization noise, the same validation rows, the same exact
resume; memory-mapped .npy files; a worker that dies and Ctrl-C with workers running."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from click.testing import CliRunner

from pyrovae import VAE
from pyrovae.cli import main
from pyrovae.commands import read_run_config
from pyrovae.data import Dataset, load_dataset
from pyrovae.data.feed import StreamedBatches
from pyrovae.data.loading import choose_loading
from pyrovae.data.rows import Rows
from pyrovae.errors import DataError
from pyrovae.train import FitOptions, fit

ROOT = Path(__file__).resolve().parents[1]


def grey_data(rows: int = 61, test: int = 13) -> Dataset:
    """Grey levels for dynamic binarization (as the distributed tests use), float64."""
    generator = torch.Generator().manual_seed(7)
    grey = torch.rand(rows + test, 12, generator=generator, dtype=torch.float64) ** 2
    return Dataset("toy", grey[:rows], torch.bernoulli(grey[rows:], generator=generator), (3, 4),
                   dynamic_binarization=True)  # fmt: skip


def _run(data: Dataset, resume=None, state=None, **options):
    pyro.set_rng_seed(0)
    vae = VAE(data.x_dim, z_dim=3, hidden_dims=(8,)).double()
    if state is not None:
        vae.load_state_dict(state)
    settings = {"epochs": 2, "batch_size": 16, "seed": 0, "engine": "eager", **options}
    history = fit(vae, data, FitOptions(**settings), resume=resume)
    return [p.detach().clone() for p in vae.parameters()], history


def _same(a, b, tol=1e-6):
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("validation", [0, 9], ids=["no-validation", "validation"])
def test_streaming_trains_to_the_parameters_of_the_resident_path(workers, validation):
    data = grey_data()
    resident, history = _run(data, validation=validation)
    streamed = choose_loading(data, "stream", workers)
    assert streamed.streamed and streamed.notes[0] == f"data=stream ({workers} worker{'s' * (workers != 1)})"
    params, streamed_history = _run(streamed, validation=validation)
    _same(params, resident)
    assert streamed_history.step_elbos == pytest.approx(history.step_elbos, rel=1e-9, abs=1e-9)
    for a, b in zip(history.epochs, streamed_history.epochs, strict=True):
        assert a["test_elbo"] == pytest.approx(b["test_elbo"], abs=1e-9)


def test_streaming_resumes_mid_epoch_exactly():
    data = choose_loading(grey_data(), "stream", 0)
    saved = {}

    def keep(state):
        if state.event == "checkpoint" and not saved:
            saved.update(vae={k: v.clone() for k, v in state.vae.state_dict().items()},
                         resume=copy.deepcopy(state.resume_state()))  # fmt: skip

    full, _ = _run(data, checkpoint_every=3)
    pyro.set_rng_seed(0)
    vae = VAE(data.x_dim, z_dim=3, hidden_dims=(8,)).double()
    fit(vae, data, FitOptions(epochs=2, batch_size=16, seed=0, engine="eager", checkpoint_every=3), callbacks=[keep])
    assert saved["resume"]["batch"] == 3  # mid-epoch: 4 batches an epoch
    resumed, _ = _run(data, resume=saved["resume"], state=saved["vae"], checkpoint_every=3)
    _same(resumed, full, tol=1e-12)


def test_a_memory_mapped_npy_file_streams_to_the_resident_run(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", (rng.random((70, 3, 4)) ** 2).astype(np.float64))
    data = load_dataset(tmp_path / "x.npy", data_loader="stream")
    assert isinstance(data.train, Rows) and isinstance(data.train.array, np.memmap)
    assert data.train.array.flags.writeable is False  # opened read-only: nothing copied
    runs = {}
    for loader in ("resident", "stream"):
        out = tmp_path / loader
        workers = "2" if loader == "stream" else "0"
        args = ["fit", "--dataset", str(tmp_path / "x.npy"), "--data-loader", loader, "--workers", workers,
                "--epochs", "2", "--batch-size", "16", "--hidden", "8", "--z-dim", "2", "--dtype", "float64",
                "--device", "cpu", "--out", str(out)]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert f"data={loader}" in result.output.splitlines()[0]
        runs[loader] = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
        assert read_run_config(out)["data_loader"] == loader
    for key, value in runs["resident"].items():
        torch.testing.assert_close(runs["stream"][key], value, rtol=1e-6, atol=1e-6)


def test_auto_streams_a_set_on_disk_over_the_budget(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((20, 6), dtype=np.float32))
    monkeypatch.setattr("pyrovae.data.budget.memory_budget", lambda: 100)
    data = load_dataset(tmp_path / "x.npy", data_loader="auto")
    assert data.streamed and data.notes[0].startswith("data=stream (0 workers, auto: 384 B over a budget of 100 B")
    monkeypatch.setattr("pyrovae.data.budget.memory_budget", lambda: 10_000)
    assert not load_dataset(tmp_path / "x.npy", data_loader="auto").streamed
    with pytest.raises(DataError, match="static binarization keeps one binarized copy"):
        load_dataset(tmp_path / "x.npy", "static", data_loader="stream")


def test_the_likelihood_support_is_checked_on_streamed_rows(tmp_path):
    np.save(tmp_path / "x.npy", np.full((20, 6), 0.5, dtype=np.float32))
    args = ["fit", "--dataset", str(tmp_path / "x.npy"), "--data-loader", "stream", "--binarize", "none",
            "--out", str(tmp_path / "run"), "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "not all 0 or 1; the Bernoulli likelihood needs binary data" in result.output
    assert "x.npy)" in result.output and not (tmp_path / "run").exists()


class _DyingRows(Rows):
    def read(self, rows):
        if torch.utils.data.get_worker_info() is not None:
            os._exit(3)  # a worker killed while reading
        return super().read(rows)


def test_a_worker_that_dies_is_one_line_naming_the_file():
    rows = _DyingRows(np.zeros((10, 4), dtype=np.float32), None, "/data/big.npy")
    data = Dataset("toy", rows, torch.zeros(2, 4), (4,), workers=1)
    batches = StreamedBatches(data, 4, False, torch.device("cpu"), torch.float32)
    with pytest.raises(DataError) as error:
        list(batches.epoch(0, lambda b: (b,)))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("reading batch 1 from /data/big.npy failed (") and "--workers 0" in message


def test_ctrl_c_with_workers_running_ends_in_one_line_and_a_loadable_checkpoint(tmp_path):
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((4000, 64)) > 0.5).astype(np.float32))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pyrovae", "fit", "--dataset", str(tmp_path / "x.npy"), "--data-loader", "stream",
               "--workers", "2", "--epochs", "200", "--batch-size", "16", "--hidden", "16", "--z-dim", "2",
               "--device", "cpu", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        first = process.stdout.readline()  # the start line: training is under way once it is printed
        assert "data=stream (2 workers)" in first, first + process.stderr.read()
        time.sleep(3)
        os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C: to the training process and its workers
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stopped by SIGINT at epoch"), err
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model"] and "resume" in state


def test_two_processes_streaming_their_shards_make_the_run_of_one(tmp_path):
    # each rank reads only its rows of every global batch, with one worker; the run is one resident
    # process's, from the start and resumed (mid-epoch, world size 1 -> 2) from its checkpoint
    from . import ddp_worker
    from .test_distributed import _finish, _ranks, _same_run

    saved: dict = {}
    full = ddp_worker.result(
        *ddp_worker.tiny_run("meanfield", checkpoint_every=3, callbacks=[ddp_worker.first_checkpoint(saved)])
    )
    torch.save(saved, tmp_path / "checkpoint-1.pt")
    outputs = _finish(_ranks("stream", tmp_path))
    assert (tmp_path / "stream-resumed.pt").exists(), "\n".join(outputs)
    _same_run(torch.load(tmp_path / "stream.pt", weights_only=False), full)
    _same_run(torch.load(tmp_path / "stream-resumed.pt", weights_only=False), full)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_reading_every_row_of_a_mapped_file_maps_none_of_it(tmp_path, monkeypatch):
    # a file over the memory budget (as a set larger than memory is) is read with preadv, through the
    # page cache: the file's mapping in this process stays unmapped
    monkeypatch.setattr("pyrovae.data.budget.memory_budget", lambda: 2**20)
    np.save(tmp_path / "big.npy", np.random.default_rng(0).random((20_000, 100)).astype(np.float32))  # 8 MB
    data = load_dataset(tmp_path / "big.npy", data_loader="stream")
    order = np.random.default_rng(1).permutation(len(data.train))
    seen = torch.cat([data.train.read(order[i : i + 64]) for i in range(0, len(order), 64)])
    assert torch.equal(seen[np.argsort(order)], data.train.materialize())

    def mapped_kb() -> int:
        lines = Path("/proc/self/smaps").read_text().splitlines()
        total, inside = 0, False
        for line in lines:
            if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:  # a mapping's header line
                inside = line.endswith(str(tmp_path / "big.npy"))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
        return total

    assert mapped_kb() < 64  # (a few pages at most: the header NumPy read)
    assert data.train.file.mapped is False


@pytest.mark.parametrize(
    "stored, pixels",
    [(np.uint8, True), (np.float32, False), (np.float64, False)],
    ids=["uint8-pixels", "float32", "float64"],
)
def test_a_file_within_the_memory_budget_is_read_through_the_mapping_and_one_over_it_with_preadv(
    tmp_path, monkeypatch, stored, pixels
):
    rng = np.random.default_rng(2)
    values = (rng.random((300, 4, 5)) * (255 if pixels else 1)).astype(stored)
    np.save(tmp_path / "x.npy", values)
    size = (tmp_path / "x.npy").stat().st_size
    preadv_calls, budget_asked = [], []
    real_preadv = os.preadv

    def preadv(*args):
        preadv_calls.append(args[2])
        return real_preadv(*args)

    monkeypatch.setattr(os, "preadv", preadv)
    order = rng.permutation(300)
    read = {}
    for budget, mapped in ((size, True), (size - 1, False), (None, False)):
        monkeypatch.setattr("pyrovae.data.budget.memory_budget", lambda b=budget: budget_asked.append(b) or b)
        rows = Rows(np.load(tmp_path / "x.npy", mmap_mode="r"), None, "x.npy", pixels=pixels)
        part = rows.take(np.arange(100, 300))  # (the rows of a split share the file and the choice)
        del preadv_calls[:], budget_asked[:]
        batches = [rows.read(order[i : i + 64]) for i in range(0, 300, 64)] + [part.read(np.arange(200)[::-1])]
        assert rows.file.mapped is mapped and part.file is rows.file
        assert budget_asked == [budget]  # decided once, at the first read
        assert bool(preadv_calls) is not mapped
        read[budget] = (torch.cat(batches[:-1])[np.argsort(order)], batches[-1])
    expected = torch.from_numpy(values.reshape(300, -1).astype(np.float32 if stored != np.float64 else np.float64))
    if pixels:
        expected = expected / 255.0
    for whole, part in read.values():
        assert whole.dtype == expected.dtype and torch.equal(whole, expected)
        assert torch.equal(part, expected[100:].flip(0))
    assert torch.equal(rows.materialize(), expected)


@pytest.mark.parametrize("mapped", [True, False], ids=["mapping", "preadv"])
def test_a_file_cut_short_while_it_is_read_is_one_error_naming_it_not_a_crash(tmp_path, monkeypatch, mapped):
    # read through the mapping, a page past the new end would kill the process (SIGBUS): both ways of
    # reading say instead that the file was cut short, as a DataError naming it
    path = tmp_path / "x.npy"
    np.save(path, np.arange(600, dtype=np.float32).reshape(300, 2))
    budget = path.stat().st_size if mapped else 1
    monkeypatch.setattr("pyrovae.data.budget.memory_budget", lambda: budget)
    rows = Rows(np.load(path, mmap_mode="r"), None, "x.npy")
    assert rows.read(np.array([299, 0])).tolist() == [[598.0, 599.0], [0.0, 1.0]] and rows.file.mapped is mapped
    os.truncate(path, path.stat().st_size - 8 * 150)  # the last 150 rows gone
    with pytest.raises(DataError, match=r"cannot read rows of x\.npy \(.*it was cut short\): check the disk"):
        rows.read(np.array([299, 0]))


def test_a_file_still_open_at_interpreter_exit_is_closed_without_a_message(tmp_path):
    # a module-level set read with preadv, in a script that wraps os.preadv (as a profiler might):
    # at exit the os module can be torn down before the set, and closing its descriptor then printed
    # "Exception ignored in: <function _RowFile.__del__ ...>" on stderr
    script = f"""
import os
import numpy as np
import pyrovae.data.budget as budget
from pyrovae.data.rows import Rows
budget.memory_budget = lambda: 1
np.save({str(tmp_path / "x.npy")!r}, np.arange(80, dtype=np.float32).reshape(40, 2))
calls = []
real = os.preadv
os.preadv = lambda *args: calls.append(1) or real(*args)
rows = Rows(np.load({str(tmp_path / "x.npy")!r}, mmap_mode="r"), None, "x.npy")
part = rows.take(np.arange(40)[::-1][:30])
print(part.read(np.arange(3)).tolist(), bool(calls))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[[78.0, 79.0], [76.0, 77.0], [74.0, 75.0]] True"
    assert "Exception ignored" not in done.stderr, done.stderr


def _indexed_grey(rows: int, test: int = 20) -> Dataset:
    """Grey levels whose first column says which training row each is (row / rows), float64."""
    generator = torch.Generator().manual_seed(3)
    grey = torch.rand(rows + test, 6, generator=generator, dtype=torch.float64)
    grey[:rows, 0] = torch.arange(rows, dtype=torch.float64) / rows
    return Dataset("indexed", grey[:rows], torch.bernoulli(grey[rows:], generator=generator), (2, 3),
                   dynamic_binarization=True)  # fmt: skip


def test_a_data_dependent_start_draws_the_same_rows_from_across_a_large_set_both_ways():
    from pyrovae.data.batches import INIT_ROWS, training_rows

    rows = INIT_ROWS + 700
    data = _indexed_grey(rows)
    streamed = choose_loading(data, "stream", 0)
    resident_rows, streamed_rows = training_rows(data, seed=4), training_rows(streamed, seed=4)
    assert torch.equal(resident_rows, streamed_rows) and resident_rows.shape == (INIT_ROWS, 6)
    index = (resident_rows[:, 0] * rows).round().long()
    assert torch.equal(index, index.unique())  # distinct rows, in the set's order
    assert int((index >= INIT_ROWS).sum()) > 500  # from across the set: ~680 of the last 700 expected
    assert not torch.equal(index, training_rows(data, seed=5)[:, 0].mul(rows).round().long())  # seeded
    small = _indexed_grey(300)  # a set of at most INIT_ROWS rows: all of it, both ways
    assert torch.equal(training_rows(small), small.train)
    assert torch.equal(training_rows(choose_loading(small, "stream", 0)), small.train)

    def run(which):
        pyro.set_rng_seed(0)
        vae = VAE(which.x_dim, z_dim=2, hidden_dims=(8,), prior="vamp", prior_components=20).double()
        vae.initialize_from_data(training_rows(which, seed=4))
        start = vae.prior.pseudo_inputs.detach().clone()
        fit(vae, which, FitOptions(epochs=1, batch_size=2048, seed=0, engine="eager"))
        return start, [p.detach().clone() for p in vae.parameters()]

    resident_start, resident = run(data)
    streamed_start, streamed_params = run(streamed)
    assert torch.equal(resident_start, streamed_start)
    assert set((resident_start[:, 0] * rows).round().long().tolist()) <= set(index.tolist())  # rows of the subset
    _same(streamed_params, resident)
