"""How long pyrovae's commands take to start: process wall times, medians of several runs.

    python benchmarks/startup.py                     # 7 runs each; writes to a fresh folder
    python benchmarks/startup.py --runs 3 --out DIR

Each row is a fresh process, timed from start to exit: ``pyrovae --help``, ``--version``,
``fit --help`` and a mistyped option (none of which imports torch), beside the floor of any command
that computes (``python -c "import torch, pyro"``) and a one-epoch ``fit`` on the embedded digits,
whose time outside training (wall time less the epoch's training and evaluation seconds from its
``metrics.jsonl``) is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _provenance import HelpFormatter, commit, write_report  # noqa: I001 (this folder's helper)

COMMANDS = {
    "pyrovae --help": ["-m", "pyrovae", "--help"],
    "pyrovae --version": ["-m", "pyrovae", "--version"],
    "pyrovae fit --help": ["-m", "pyrovae", "fit", "--help"],
    "pyrovae fit --epochs x (an option error)": ["-m", "pyrovae", "fit", "--epochs", "x"],
    'python -c "import torch, pyro" (the floor of a command that computes)': ["-c", "import torch, pyro"],
}
FIT = ["-m", "pyrovae", "fit", "--epochs", "1", "--no-progress", "--device", "cpu", "--seed", "0"]


def wall(args: list[str], threads: int) -> float:
    """Seconds from the start of ``python ARGS`` to its exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], capture_output=True, env=env, check=False)
    return time.perf_counter() - start


def fit_times(threads: int) -> tuple[float, float]:
    """Wall time of a one-epoch digits fit, and the part of it outside the epoch's training and evaluation."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        total = wall([*FIT, "--out", str(out)], threads)
        record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return total, total - record["seconds"] - record["eval_seconds"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per row (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the processes")
    parser.add_argument("--out", default=None, help="folder for startup.json/.md (default: a fresh temporary one)")
    args = parser.parse_args(argv)
    rows = []
    for name, command in COMMANDS.items():
        times = [wall(command, args.threads) for _ in range(args.runs)]
        rows.append({"command": name, "median_s": statistics.median(times), "times_s": times})
        print(f"{statistics.median(times):7.2f} s  {name}", flush=True)
    fits = [fit_times(args.threads) for _ in range(args.runs)]
    outside = "  of which outside the epoch's training and evaluation"
    for label, values in (("pyrovae fit --epochs 1 (digits)", [f[0] for f in fits]), (outside, [f[1] for f in fits])):
        rows.append({"command": label, "median_s": statistics.median(values), "times_s": values})
        print(f"{statistics.median(values):7.2f} s  {label}", flush=True)
    report = {"commit": commit(), "python": sys.version.split()[0], "runs": args.runs, "threads": args.threads,
              "rows": rows}  # fmt: skip
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pyrovae-startup-"))
    table = "| command | median wall time (s) |\n| --- | ---: |\n" + "\n".join(
        f"| {row['command']} | {row['median_s']:.2f} |" for row in rows
    )
    header = (f"# Start-up times\n\nMedians of {args.runs} fresh processes each, OMP_NUM_THREADS={args.threads}, "
              f"commit {report['commit']}, Python {report['python']}.")  # fmt: skip
    write_report(out, "startup", "cpu", report, header, table)
    print(f"wrote {out / 'startup.json'} and {out / 'startup.md'}")
    return report


if __name__ == "__main__":
    main()
