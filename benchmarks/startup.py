"""How long pyrovae's commands take to start: process wall times, medians of several runs.

    python benchmarks/startup.py                     # 7 runs each; writes to a new folder
    python benchmarks/startup.py --runs 3 --out DIR

Each row is a fresh process, timed from start to exit: ``pyrovae --help``, ``--version``,
``fit --help`` and a mistyped option (none of which imports torch), beside the floor of any command
that computes (``python -c "import torch, pyro"``), the floor of one that trains (torch's optimizers
import ``torch._dynamo`` when first built and at each step) and a one-epoch ``fit`` on the embedded
digits, whose time outside training (wall time less the epoch's training and evaluation seconds
from its ``metrics.jsonl``) is reported too. The rows take turns, one process each per round.
Beside each median wall time is the median CPU time of the process (user + system), which other
work on the machine disturbs less; the load average at the start and the end is recorded. The
processes import the pyrovae of this checkout (the folder above this one), whatever else is
installed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _provenance import OUT_HELP, ROOT, HelpFormatter, commit, results_folder, write_report  # noqa: I001 (this folder's helper)

COMMANDS = {
    "pyrovae --help": ["-m", "pyrovae", "--help"],
    "pyrovae --version": ["-m", "pyrovae", "--version"],
    "pyrovae fit --help": ["-m", "pyrovae", "fit", "--help"],
    "pyrovae fit --epochs x (an option error)": ["-m", "pyrovae", "fit", "--epochs", "x"],
    'python -c "import torch, pyro" (the floor of a command that computes)': ["-c", "import torch, pyro"],
    'python -c "import torch, pyro, torch._dynamo" (the floor of a command that trains)': [
        "-c",
        "import torch, pyro, torch._dynamo",
    ],
}
FIT = ["-m", "pyrovae", "fit", "--epochs", "1", "--no-progress", "--device", "cpu", "--seed", "0"]


def timed(args: list[str], threads: int) -> tuple[float, float]:
    """Seconds of wall time and of CPU time (user + system) of ``python ARGS``, from start to exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], capture_output=True, env=env, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def fit_times(threads: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(Wall, CPU) seconds of a one-epoch digits fit, and of the part of it outside the epoch's
    training and evaluation (their wall seconds, from ``metrics.jsonl``, taken from both)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        total, cpu = timed([*FIT, "--out", str(out)], threads)
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    inside = record["seconds"] + record["eval_seconds"]
    return (total, cpu), (total - inside, cpu - inside)


def _row(command: str, times: list[tuple[float, float]]) -> dict:
    walls, cpus = [t[0] for t in times], [t[1] for t in times]
    row = {"command": command, "median_s": statistics.median(walls), "median_cpu_s": statistics.median(cpus)}
    print(f"{row['median_s']:7.2f} s  {row['median_cpu_s']:7.2f} s CPU  {command}", flush=True)
    return {**row, "times_s": walls, "cpu_times_s": cpus}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per row (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the processes")
    parser.add_argument("--out", help=OUT_HELP)
    args = parser.parse_args(argv)
    out = results_folder(args.out, "startup")
    load_before = os.getloadavg()
    print(f"load average {load_before[0]:.2f} (1 min) at the start")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    fits = []
    for _ in range(args.runs):  # in turns, so that a change of the machine's load touches every row alike
        for name, command in COMMANDS.items():
            times[name].append(timed(command, args.threads))
        fits.append(fit_times(args.threads))
    rows = [_row(name, values) for name, values in times.items()]
    rows.append(_row("pyrovae fit --epochs 1 (digits)", [f[0] for f in fits]))
    rows.append(_row("  of which outside the epoch's training and evaluation", [f[1] for f in fits]))
    load = {"start": list(load_before), "end": list(os.getloadavg())}
    report = {"commit": commit(), "python": sys.version.split()[0], "runs": args.runs, "threads": args.threads,
              "cpus": os.cpu_count(), "load_average": load, "rows": rows}  # fmt: skip
    table = "| command | median wall time (s) | median CPU time (s) |\n| --- | ---: | ---: |\n" + "\n".join(
        f"| {row['command']} | {row['median_s']:.2f} | {row['median_cpu_s']:.2f} |" for row in rows
    )
    header = (f"# Start-up times\n\nMedians of {args.runs} fresh processes each, OMP_NUM_THREADS={args.threads}, "
              f"commit {report['commit']}, Python {report['python']}, {report['cpus']} CPUs; load average "
              f"(1 min) {load['start'][0]:.2f} at the start, {load['end'][0]:.2f} at the end.")  # fmt: skip
    write_report(out, "startup", "cpu", report, header, table)
    return report


if __name__ == "__main__":
    main()
