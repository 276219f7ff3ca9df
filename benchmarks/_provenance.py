"""Where a benchmark's numbers come from and where they go: the commit of the code measured, and
the JSON and markdown files of a report (shared by the scripts of this folder; not a benchmark
itself)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` of a benchmark: its docstring as written, and the default of every option that has
    one; an option whose default is ``None`` says in its own words what it does when not given."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def commit() -> str | None:
    """The commit of the code measured (``git describe``: ``-dirty`` when the work tree differs), or
    ``GPU_CHECK_COMMIT`` where the copy has no git history (a device machine), or ``None``."""
    try:
        found = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        found = None
    described = found.stdout.strip() if found is not None and found.returncode == 0 else ""
    return described or os.environ.get("GPU_CHECK_COMMIT") or None


def write_report(out: str | Path, name: str, device: str, report: dict[str, Any], header: str, table: str) -> None:
    """Write ``NAME.json`` (the report) and ``NAME.md`` (header and table) under ``out``, with
    ``_<device type>`` after the name off the CPU (``throughput_cuda.md``), so that a GPU run
    does not overwrite the CPU one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kind = device.split(":")[0]
    stem = name if kind == "cpu" else f"{name}_{kind}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(f"{header}\n\n{table}\n")
    print(f"wrote {stem}.json and {stem}.md to {out}")


#: the ``--out`` help of every benchmark
OUT_HELP = (
    "folder for the results (default: a new folder under the system's temporary folder, whose path is printed; "
    "--out benchmarks/results replaces the committed reference results)"
)


def results_folder(out: str | os.PathLike | None, name: str) -> Path:
    """``out``, or where it is ``None`` a new empty folder ``pyrovae-NAME-YYYYMMDD-HHMMSS-XXXXXXXX`` under
    the system's temporary folder: a benchmark writes over the committed ``benchmarks/results/`` only
    when told to. The folder is printed."""
    if out is not None:
        folder = Path(out)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"pyrovae-{name}-{time.strftime('%Y%m%d-%H%M%S')}-"))
    print(f"results go to {folder}", flush=True)
    return folder


def parse_round_options(
    description: str | None, argv: list[str] | None, rounds: int, steps: int, batches: str
) -> argparse.Namespace:
    """The options of a benchmark that times forms of a step in alternating rounds: ``--rounds``,
    ``--steps`` (timed steps per round), ``--batches``, ``--threads`` and ``--out``, with these
    defaults, parsed from ``argv``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds of each form")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per round")
    parser.add_argument("--batches", default=batches, help="batch sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", help=OUT_HELP)
    return parser.parse_args(argv)


def time_in_rounds(name: str, args: argparse.Namespace, row: Callable[[int], dict], **extra: Any) -> tuple[Path, dict]:
    """Run a benchmark of :func:`parse_round_options`: set torch's threads, make the results folder,
    take ``row(batch)`` for each of ``--batches``; return the folder and the report (the commit,
    ``extra``, the settings, the machine's CPUs, its load average before and after, the rows)."""
    import torch

    torch.set_num_threads(args.threads)
    out = results_folder(args.out, name)
    before = os.getloadavg()
    rows = [row(int(batch)) for batch in args.batches.split(",")]
    load = {"start": list(before), "end": list(os.getloadavg())}
    report = {"commit": commit(), **extra, "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              "cpus": os.cpu_count(), "load_average": load, "rows": rows}  # fmt: skip
    return out, report


def rounds_line(report: dict) -> str:
    """The settings, commit and load of a :func:`time_in_rounds` report, as a report's header says them."""
    load = report["load_average"]
    return (f"medians of {report['rounds']} alternating rounds of {report['steps']} steps, {report['threads']} torch "
            f"thread(s), commit {report['commit']}; load average (1 min) {load['start'][0]:.2f} at the start, "
            f"{load['end'][0]:.2f} at the end")  # fmt: skip
