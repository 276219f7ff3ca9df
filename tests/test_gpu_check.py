"""``benchmarks/gpu_check.sh``: its plan, its time limits and its steps, checked without a GPU."""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "cuda-tests", "suite", "fit", "evaluate", "plots", "throughput"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")  # fmt: skip


def _env(**extra):
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _run(*args, timeout=600, **extra):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(**extra))  # fmt: skip


def _summary(out):
    rows = [line.split("|")[1:-1] for line in (out / "summary.md").read_text().splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[2:]}  # after the header rows


def test_the_gpu_plan_fits_in_eight_minutes_and_runs_what_the_issue_asks(tmp_path):
    done = _run(str(tmp_path / "out"), "--dry-run")
    assert done.returncode == 0, done.stderr
    budget = int(re.search(r"time budget (\d+) s", done.stdout).group(1))
    plan = re.findall(r"^(\S+) +limit +(\d+) s, keeps +(\d+) s for itself: (.*)$", done.stdout, re.M)
    assert [name for name, *_ in plan] == STEPS
    # the deadline, plus the 10 s a step that ignores SIGTERM gets before SIGKILL, is under 8 minutes,
    # and every step's minimum fits in it
    assert budget + 10 < 8 * 60 and sum(int(minimum) for _, _, minimum, _ in plan) < budget
    commands = {name: command for name, _, _, command in plan}
    assert "tests/test_cuda.py tests/test_cuda_runs.py" in commands["cuda-tests"]
    suite = commands["suite"]
    assert " tests " in suite and "--ignore=tests/test_cuda.py --ignore=tests/test_cuda_runs.py" in suite
    for step in ("fit", "evaluate", "throughput"):
        assert "--device cuda" in commands[step], step
    assert "--dataset fashion-mnist" in commands["fit"] and "benchmarks/throughput.py" in commands["throughput"]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_the_cpu_smoke_mode_runs_every_step_and_writes_the_results(tmp_path):
    out = tmp_path / "out"
    done = _run(str(out), "--cpu-smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = _summary(out)
    assert list(summary) == STEPS
    for step in ("env", "fit", "evaluate", "plots", "throughput"):
        status, seconds, limit, log = summary[step]
        assert status == "ok" and 0 < float(seconds) <= float(limit) and (out / log).is_file(), step
    assert summary["cuda-tests"][0] == summary["suite"][0] == "left out (cpu-smoke)"
    env = (out / "env.txt").read_text()
    assert re.search(r"^torch: \S+; built with CUDA", env, re.M) and re.search(r"^commit: \S+", env, re.M)
    assert f"torch: {torch.__version__}" in env and "gpu: none visible to torch" in env
    run = out / "fit-digits-cpu"
    evaluation = json.loads((run / "evaluation.json").read_text())["summary"]
    assert evaluation["n"] == 20 and evaluation["k"] == 30 and evaluation["device"] == "cpu"
    for picture in ("samples.png", "reconstructions.png", "latent.png", "training_curves.png"):
        assert (run / picture).stat().st_size > 0, picture
    assert not (run / "checkpoint.pt").exists()  # removed once plots has read it
    throughput = json.loads((out / "throughput.json").read_text())
    # (on a CPU, the hand-written loop compiled too; on a GPU, its CUDA graph instead)
    assert [r["method"] for r in throughput["results"]][:4] == ["hand", "hand-fused", "hand-compiled", "stock-pyro"]
    # a second run into the same folder would overwrite a run: refused before anything runs
    again = _run(str(out), "--cpu-smoke")
    assert again.returncode == 2 and "exists already" in again.stderr


def test_a_step_past_its_limit_is_killed_and_later_steps_keep_their_time(tmp_path):
    """Drives the script's own functions (sourced) with a step that hangs."""
    out = tmp_path / "out"
    out.mkdir()
    program = f"""
        source {SCRIPT}
        OUT_DIR={out} MODE=test COMMIT=test STARTED=now ONLY="" BUDGET_S=10
        DEADLINE=$(( $(date +%s) + 10 ))
        add_step hang 60 0 sleep 60     # may use what the next step does not keep: 10 - 7 s
        add_step after 60 7 echo done
        add_step late 60 0 echo late
        run_step 0; run_step 1
        DEADLINE=$(date +%s)            # the budget is spent
        run_step 2
        echo "FAILED=$FAILED"
    """
    start = time.monotonic()
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30, "the hanging step was not killed at its limit"
    assert done.returncode == 0, done.stderr
    summary = _summary(out)
    status, seconds, limit, _ = summary["hang"]
    assert int(limit) in (2, 3) and status == f"**timeout after {limit} s**" and float(seconds) < int(limit) + 2
    assert summary["after"][0] == "ok" and (out / "after.log").read_text() == "done\n"
    assert summary["late"][0] == "**not run: budget spent**" and not (out / "late.log").exists()
    assert "FAILED=1" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens where torch sees no GPU")
def test_without_a_gpu_the_gpu_mode_stops_after_the_machine_check(tmp_path):
    out = tmp_path / "out"
    done = _run(str(out), "--steps", "env,fit")
    assert done.returncode == 1
    assert "torch sees no CUDA GPU" in (out / "env.txt").read_text()
    assert "nothing else is run" in done.stderr and not (out / "fit.log").exists()
    assert _summary(out)["env"][0] == "**failed (exit 1)**"


@pytest.mark.parametrize(
    "args, message",
    [(["--steps", "fit,warp"], "unknown step warp: the steps are env,cuda-tests,suite,fit,evaluate,plots,throughput"),
     (["--fast"], "unknown option --fast")],
)  # fmt: skip
def test_bad_arguments_are_one_line_and_run_nothing(tmp_path, args, message):
    done = _run(str(tmp_path / "out"), *args)
    assert done.returncode == 2 and message in done.stderr and not (tmp_path / "out").exists()
