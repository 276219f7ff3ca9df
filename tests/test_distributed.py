"""Training on several processes (pyrovae/train/distributed.py): W ranks make the run one process makes.

The pieces are checked in this process (the noise of the global batch, the split of a batch, the
weights, the refusals); the whole is checked with two real CPU processes (gloo), started as torchrun
starts them (tests/ddp_worker.py) and by torchrun itself.
"""

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy
import pyro
import pytest
import torch
from click.testing import CliRunner

from pyrovae import VAE, make_elbo
from pyrovae.cli import main
from pyrovae.commands import read_metrics, read_run_config
from pyrovae.errors import ConfigError, DistributedError
from pyrovae.infer import Objective
from pyrovae.rng import GeneratorStates
from pyrovae.train import GuardedStep, distributed
from pyrovae.train.distributed import (
    ANSWER_SECONDS,
    TIMEOUT_ENV,
    GlobalBatchNoise,
    ShardedObjective,
    World,
    launch,
    speaks,
    unheard,
)

from . import ddp_worker

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = ("seconds", "eval_seconds", "images_per_second")


def _world(rank: int, size: int) -> World:
    return World(rank, size, rank, torch.device("cpu"), "gloo")


def _objective(elbo: str, particles: int, prior: str = "normal"):
    pyro.set_rng_seed(0)
    vae = VAE(7, z_dim=3, hidden_dims=(5,), prior=prior, prior_components=3).double()
    x = torch.bernoulli(torch.rand(10, 7, dtype=torch.float64))
    return vae, x, Objective(vae.model, vae.guide, make_elbo(elbo, particles), num_data=40)


# -- the pieces, in this process ----------------------------------------------------------------
@pytest.mark.parametrize("elbo,particles", [("meanfield", 1), ("trace", 1), ("trace", 3)])
def test_the_whole_batch_under_the_messenger_is_drawn_bit_for_bit_as_without_it(elbo, particles):
    _, x, objective = _objective(elbo, particles)
    with pyro.validation_enabled(False):
        torch.manual_seed(5)
        plain, after_plain = objective(x), torch.rand(3)
        torch.manual_seed(5)
        with GlobalBatchNoise(0, 10, 10):
            noised = objective(x)
        after_noised = torch.rand(3)
    assert noised.item() == plain.item()  # the same numbers, not merely close
    assert torch.equal(after_noised, after_plain)  # and the generator left where the plain draw leaves it


@pytest.mark.parametrize("size,rows", [(2, 10), (3, 10), (4, 3)], ids=["even", "uneven", "a-rank-without-rows"])
@pytest.mark.parametrize("elbo,particles,prior", [("meanfield", 1, "normal"), ("trace", 3, "vamp")])
def test_the_ranks_mean_loss_and_gradient_are_the_whole_batchs(size, rows, elbo, particles, prior):
    # what DistributedDataParallel computes (the mean of the ranks' gradients), here without processes
    vae, x, objective = _objective(elbo, particles, prior)
    params = list(vae.parameters())
    with pyro.validation_enabled(False):
        torch.manual_seed(5)
        whole = objective(x[:rows])
        whole_grads = torch.autograd.grad(whole, params)
        losses, grads = [], []
        for rank in range(size):
            world = _world(rank, size)
            torch.manual_seed(5)  # every rank's generator is in step with the one process's
            loss = ShardedObjective(objective, world)(*world.shard(x[:rows]))
            losses.append(loss)
            grads.append(torch.autograd.grad(loss, params))
            end_state = torch.get_rng_state()
    assert (sum(losses) / size).item() == pytest.approx(whole.item(), rel=1e-12)
    for k, whole_grad in enumerate(whole_grads):
        torch.testing.assert_close(sum(g[k] for g in grads) / size, whole_grad, rtol=1e-10, atol=1e-12)
    assert torch.equal(end_state, torch.get_rng_state())  # each rank drew what the whole batch drew


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("rows", [1, 7, 12])
def test_a_batch_is_split_into_contiguous_slices_that_cover_it_once(size, rows):
    spans = [_world(r, size).span(rows) for r in range(size)]
    assert spans[0][0] == 0 and spans[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # contiguous, in rank order
    lengths = [stop - start for start, stop in spans]
    assert max(lengths) - min(lengths) <= 1


def test_the_global_batch_must_divide_by_the_world_size():
    _world(0, 4).check_batch_size(128)
    with pytest.raises(
        ConfigError, match=r"--batch-size 130 is the global batch.*divide by 4: use --batch-size 128 or 132"
    ):
        _world(0, 4).check_batch_size(130)


def test_the_batch_size_launch_checked_is_not_checked_again(monkeypatch):
    """launch checks the batch before the rendezvous and hands it to the world it yields, whose
    check (called again by fit) then decides nothing a second time; another batch is still checked."""
    world = dataclasses.replace(_world(0, 4), batch_size_checked=128)
    checks = []
    monkeypatch.setattr(distributed, "positive_int", lambda *a: checks.append(a))
    world.check_batch_size(128)
    assert checks == []
    with pytest.raises(ConfigError, match=r"--batch-size 130 is the global batch"):
        world.check_batch_size(130)
    assert checks == [("batch_size", 130)]


def test_a_fresh_draw_it_cannot_split_is_refused_and_one_outside_the_plate_left_alone():
    def shared():  # outside the data plate: every rank draws it alike, as one process does
        return pyro.sample("shared", pyro.distributions.Normal(torch.zeros(3), 1.0).to_event(1))

    def per_row():
        with pyro.plate("data", 3):
            return pyro.sample("rate", pyro.distributions.Gamma(2.0, 1.0))

    torch.manual_seed(1)
    expected = shared()
    torch.manual_seed(1)
    with GlobalBatchNoise(0, 3, 6):
        assert torch.equal(shared(), expected)
        with pytest.raises(ConfigError, match="site 'rate'.*needs a Normal guide distribution; found Gamma"):
            per_row()
    with pytest.raises(ConfigError, match="rows 4:2 are not rows of a batch of 6"):
        GlobalBatchNoise(4, 2, 6)


def test_cuda_ranks_continue_from_the_saved_state_of_cuda_0():
    states = GeneratorStates(
        torch.zeros(3, dtype=torch.uint8), [torch.full((2,), i, dtype=torch.uint8) for i in range(2)]
    )
    ranks = [World(r, 2, r, torch.device("cuda", r), "nccl") for r in range(2)]
    assert ranks[0].own_generators(states) is states
    moved = ranks[1].own_generators(states).cuda
    assert [s.tolist() for s in moved] == [[0, 0], [0, 0]]
    assert _world(1, 2).own_generators(states) is states  # CPU ranks: the CPU generator, as saved


def test_without_torchrun_there_is_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with launch("cpu", batch_size=7) as world:
        assert (world.size, world.launched, world.is_main) == (1, False, True)
        assert world.device == torch.device("cpu") and not torch.distributed.is_initialized()


def _torchrun_env(monkeypatch, rank=0, size=2, **more):
    monkeypatch.setenv("WORLD_SIZE", str(size))
    monkeypatch.setenv("RANK", str(rank))
    for name, value in more.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "args,env,message",
    [
        (["--batch-size", "63"], {}, "--batch-size 63 is the global batch, split evenly over the 2 processes"),
        (["--device", "cuda:1"], {}, "--device cuda:1 names one GPU, but torchrun started 2 processes"),
        (["--device", "cuda"], {"CUDA_VISIBLE_DEVICES": ""}, "--device cuda was asked for, but torch sees no CUDA GPU"),
        ([], {"RANK": "two"}, "the environment variable RANK should be an integer (torchrun sets it), found 'two'"),
        ([], {"RANK": "2"}, "RANK must be in [0, WORLD_SIZE) and LOCAL_RANK >= 0, found RANK=2, WORLD_SIZE=2"),
        ([], {TIMEOUT_ENV: "soon"}, f"{TIMEOUT_ENV} must be a number of seconds > 0 such as 300, found 'soon'"),
    ],
    ids=["batch", "one-gpu", "no-gpu", "bad-rank", "rank-out-of-range", "bad-timeout"],
)
def test_a_combination_that_cannot_work_is_one_line_from_rank_0_and_nothing_from_the_others(
    monkeypatch, tmp_path, args, env, message
):
    if "CUDA_VISIBLE_DEVICES" in env and torch.cuda.is_available():
        pytest.skip("a GPU is visible to this process")
    command = ["fit", "--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--out", str(tmp_path / "r"), *args]
    for rank in (0, 1) if "RANK" not in env else (env["RANK"],):  # (a bad RANK: every process reports it)
        _torchrun_env(monkeypatch, rank=rank, **env)
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and not (tmp_path / "r").exists()
        if rank == 1:
            assert result.output == "", result.output
        else:
            lines = result.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


@pytest.fixture
def stored(monkeypatch):
    """Ranks of a world whose rendezvous store is an in-process one; a silent rank is given 0.2 s."""
    monkeypatch.setattr(distributed, "ANSWER_SECONDS", 0.2)
    store = torch.distributed.HashStore()
    return lambda rank, size: World(rank, size, rank, torch.device("cpu"), "gloo", timeout=3, store=store)


def test_a_failed_collective_names_the_ranks_that_failed_and_those_that_went_silent(stored):
    world = stored(0, 3)
    world.store.set("failed/1", "error: NotEnoughMemoryError: the step needs 3 GiB")  # rank 1's word; none from 2
    with pytest.raises(DistributedError) as caught, world.watch(lambda: "epoch 2, after step 7"):
        raise RuntimeError("Connection closed by peer [127.0.0.1]:4000\nThis is typically caused by ...")
    assert str(caught.value) == (
        "rank 1 failed at epoch 2, after step 7: NotEnoughMemoryError: the step needs 3 GiB; rank 2 of 3 stopped "
        f"answering at epoch 2, after step 7 (died, or stuck for more than the 3 s timeout, {TIMEOUT_ENV}); "
        "rank 0 stopped too (RuntimeError: Connection closed by peer [127.0.0.1]:4000)"
    )
    assert world.store.get("failed/0") == b"lost: Connection closed by peer [127.0.0.1]:4000"


def test_a_ranks_own_error_is_left_in_the_store_and_raised_as_it_is(stored):
    world = stored(1, 2)
    with pytest.raises(ValueError, match="^no rows$"), world.watch(lambda: "epoch 1, after step 0"):
        raise ValueError("no rows")
    assert world.store.get("failed/1") == b"error: ValueError: no rows"


def test_when_rank_0_is_gone_the_rank_that_saw_it_reports(stored, monkeypatch):
    with pytest.raises(DistributedError, match="^rank 0 of 2 stopped answering at epoch 1") as caught:
        with stored(1, 2).watch(lambda: "epoch 1, after step 2"):
            raise RuntimeError("Timed out waiting 3000ms for recv operation to complete")
    _torchrun_env(monkeypatch, rank=1)
    assert speaks(caught.value)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("on_host", [True, False], ids=["host-check", "device-check"])
def test_a_non_finite_loss_on_another_rank_stops_this_one_before_the_update(fused, on_host):
    # the step guard checks the loss over all ranks: here the other rank's loss, averaged in by `reduce`
    module = torch.nn.Linear(3, 1)
    others = iter([torch.tensor(2.0), torch.tensor(float("nan")), torch.tensor(1.0)])
    step = GuardedStep(
        lambda x: module(x).sum(),
        torch.optim.Adam(module.parameters(), lr=0.1, fused=fused),
        reduce=lambda loss: (loss + next(others)) / 2,
        on_host=on_host,
    )
    x = torch.ones(2, 3)
    mine = module(x).sum().item()
    assert step(x).item() == pytest.approx((mine + 2.0) / 2)  # the step's loss is the ranks' mean
    after_one = [p.detach().clone() for p in module.parameters()]
    assert math.isnan(step(x).item())  # this rank's loss is finite, the other's is not
    step(x)
    assert step.failed() == (2, "the loss became nan")
    for p, before in zip(module.parameters(), after_one, strict=True):
        assert torch.equal(p, before)


def test_rank_0_reports_for_every_rank_unless_it_is_gone(monkeypatch):
    error = DistributedError("rank 1 failed")
    _torchrun_env(monkeypatch, rank=0)
    assert speaks(error)
    _torchrun_env(monkeypatch, rank=1)
    assert not speaks(error) and speaks(unheard(DistributedError("rank 0 stopped answering")))
    monkeypatch.delenv("WORLD_SIZE")  # one process: it always speaks
    assert speaks(error)


# -- two real processes ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, port: int, **more: str) -> dict[str, str]:
    return {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **more}  # fmt: skip


def _ranks(scenario: str, folder: Path, **env: str) -> list[subprocess.Popen]:
    port = _free_port()
    worker = str(Path(__file__).with_name("ddp_worker.py"))
    return [
        subprocess.Popen([sys.executable, worker, scenario, str(folder)], env=_env(rank, port, **env),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]  # fmt: skip


def _finish(processes: list[subprocess.Popen], timeout: float = 120) -> list[str]:
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            process.kill()
            outputs.append(process.communicate()[0])
    return outputs


def _same_run(a: dict, b: dict, tol: float = 1e-6) -> None:
    for p, q in zip(a["params"], b["params"], strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol)
    assert len(a["epochs"]) == len(b["epochs"])
    for r, s in zip(a["epochs"], b["epochs"], strict=True):
        assert r.keys() == s.keys()
        for key in r.keys() - set(TIMINGS):
            assert r[key] == (
                pytest.approx(s[key], rel=tol, abs=tol) if isinstance(r[key], (float, dict)) else s[key]
            ), key
    assert a["step_elbos"] == pytest.approx(b["step_elbos"], rel=tol, abs=tol)


def _single(name: str, **options) -> dict:
    return ddp_worker.result(*ddp_worker.tiny_run(name, **options))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Two ranks run the equivalence runs, resume one process's checkpoint, and stop on a signal."""
    folder = tmp_path_factory.mktemp("two-ranks")
    saved: dict = {}
    full = _single("meanfield", checkpoint_every=3, callbacks=[ddp_worker.first_checkpoint(saved)])
    torch.save(saved, folder / "checkpoint-1.pt")  # one process's state at step 3, for 1 -> 2
    outputs = _finish(_ranks("train", folder))
    assert (folder / "resumed-on-2.pt").exists(), "\n".join(outputs)
    return folder, full, outputs


@pytest.mark.parametrize("name", list(ddp_worker.RUNS))
def test_two_processes_train_to_the_parameters_and_metrics_of_one(two_ranks, name):
    folder, _, _ = two_ranks
    with pyro.validation_enabled(False):
        single = _single(name)
    _same_run(torch.load(folder / f"{name}.pt", weights_only=False), single)
    assert single["epochs"][1]["train_elbo"] > single["epochs"][0]["train_elbo"]  # it trained


def test_a_checkpoint_resumes_across_world_sizes(two_ranks):
    folder, full, _ = two_ranks
    _same_run(torch.load(folder / "resumed-on-2.pt", weights_only=False), full)  # 1 -> 2
    state = torch.load(folder / "checkpoint-2.pt", weights_only=True)
    assert state["resume"]["step"] == 3 and state["resume"]["batch"] == 3  # mid-epoch
    _same_run(_single("meanfield", state=state), full)  # 2 -> 1


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(two_ranks):
    folder, _, _ = two_ranks
    stops = [json.loads((folder / f"stopped-{rank}.json").read_text()) for rank in (0, 1)]
    assert stops[0][:2] == stops[1][:2] == ["SIGTERM", 4]
    assert stops[0][2] == [["interrupt", 4]] and stops[1][2] == []  # one checkpoint, by rank 0's callbacks


@pytest.mark.parametrize("scenario", ["die", "die-stream"])
def test_a_rank_that_dies_is_named_by_the_other_in_bounded_time(tmp_path, scenario):
    timeout = 3  # (the other rank waits at most this long for a word from it)
    ranks = _ranks(scenario, tmp_path, **{TIMEOUT_ENV: str(timeout)})
    outputs = _finish(ranks, timeout=60)
    report = json.loads((tmp_path / "report.json").read_text()) if (tmp_path / "report.json").exists() else None
    assert report is not None, outputs[0]
    assert report["message"].startswith("rank 1 of 2 stopped answering at epoch 1, after step 3 (died, or stuck")
    assert "rank 0 stopped too (RuntimeError: " in report["message"]
    assert report["seconds"] < min(ANSWER_SECONDS, timeout) + 10
    assert ranks[1].returncode == 7


def test_torchrun_trains_on_two_processes_as_one_process_does_and_rank_0_alone_speaks(tmp_path):
    # 300 rows of grey levels: 240 to train on (binarized afresh every epoch), 60 to test
    grey = torch.rand(300, 16, generator=torch.Generator().manual_seed(3)).numpy()
    numpy.save(tmp_path / "grey.npy", grey)
    args = ["fit", "--dataset", str(tmp_path / "grey.npy"), "--epochs", "2", "--batch-size", "64", "--z-dim", "3",
            "--hidden", "16", "--device", "cpu", "--dtype", "float64", "--particles", "2", "--no-progress",
            "--logger", "csv", "--log-every", "1"]  # fmt: skip
    single = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(_free_port()), "-m", "pyrovae", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("pyrovae fit:") for line in lines) == 1, done.stdout  # rank 0 alone prints
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert sum(line.startswith("wrote ") for line in lines) == 1
    assert "on 2 processes (gloo; batch_size is the global batch)" in lines[0]
    config = read_run_config(tmp_path / "two")
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["backend"] == "gloo"
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    for a, b in zip(one, two, strict=True):
        for key in a.keys() - set(TIMINGS):
            assert b[key] == (pytest.approx(a[key], rel=1e-6) if isinstance(a[key], (float, dict)) else a[key])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    # rank 0 alone logs: every step once, with the loss one process logs
    rows = {d: (tmp_path / d / "steps.csv").read_text().splitlines()[1:] for d in ("one", "two")}
    logged = [[row.split(",") for row in rows[d]] for d in ("one", "two")]
    assert [int(s) for s, _ in logged[1]] == [int(s) for s, _ in logged[0]] == list(range(1, 9))
    assert [float(v) for _, v in logged[1]] == pytest.approx([float(v) for _, v in logged[0]], rel=1e-6)
