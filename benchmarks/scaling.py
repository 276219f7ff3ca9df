"""Scaling out: images per second of ``pyrovae fit`` on 1, 2, ... processes (torchrun, DDP).

    python benchmarks/scaling.py                  # CPU (gloo): 1 process, then 2 processes of 1 thread
    python benchmarks/scaling.py --device cuda    # GPUs (nccl): 1 process, then one process per GPU
    python benchmarks/scaling.py --quick          # a couple of minutes on 2 CPU cores

Every layout ``PxT`` (``P`` processes of ``T`` torch threads) trains the same run: the same data,
seed, model (x_dim-400-50 MLP), global ``--batch-size`` and Adam, which ``P`` ranks split as
``torchrun --nproc-per-node P -m pyrovae fit`` does (``1xT``: one plain process, no process group,
what ``pyrovae fit`` is without torchrun). Each run trains ``--epochs`` epochs; the first warms up
and the others are timed by ``fit`` itself (its ``seconds`` per epoch: the training loop, the test
ELBO excluded). The table gives images/s (the median over ``--rounds`` runs of each layout, taken in
turns so that a noisy neighbour hurts every layout alike), the speed-up over the one-process layout
with as many threads per process, and the scaling efficiency, speed-up / ``P``. It also gives each
layout's last training ELBO, which must agree: the layouts train the same run.

What it does not show, on a small machine: ``P`` processes of ``T`` threads use ``P*T`` cores, so
on 2 cores ``2x1`` competes with ``1x2`` (the same cores in one process), not with a second machine;
and the machine's other load (the load average is recorded) slows every layout.

Writes ``scaling.json`` and ``scaling.md`` (``scaling_cuda.*`` on GPUs) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import pyro
import torch
from _provenance import OUT_HELP, HelpFormatter, commit, results_folder, write_report  # noqa: I001 (this folder's helper)

from pyrovae import VAE, FitOptions, fit, load_dataset
from pyrovae.data import DEFAULT_DATA_DIRS, Dataset
from pyrovae.train.distributed import launch

Z_DIM, HIDDEN, TEST_ROWS = 50, (400,), 1000
#: training rows and rounds when --n-train / --rounds are not given (normal, --quick)
DEFAULT_ROWS, QUICK_ROWS, DEFAULT_ROUNDS, QUICK_ROUNDS = 10000, 4000, 3, 2


def refuse(message: str) -> NoReturn:
    """An impossible setting: one line on stderr and exit code 2, before anything is timed."""
    print(f"scaling.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_layouts(text: str, device: str) -> list[tuple[int, int]]:
    """``"1x1,2x1"`` -> ``[(1, 1), (2, 1)]`` (processes x threads); refuses what cannot run here."""
    layouts = []
    for item in text.split(","):
        try:
            processes, threads = (int(n) for n in item.lower().split("x"))
        except ValueError:
            refuse(f"--layouts takes PxT items such as 1x1,2x1 (P processes of T threads), got {item!r}")
        if processes < 1 or threads < 1:
            refuse(f"--layouts: processes and threads must be >= 1, got {item!r}")
        if device == "cuda" and processes > torch.cuda.device_count():
            refuse(f"--layouts {item}: {processes} processes need {processes} GPUs, this machine has "
                   f"{torch.cuda.device_count()}")  # fmt: skip
        layouts.append((processes, threads))
    if not any(p == 1 for p, _ in layouts):
        refuse("--layouts needs a one-process layout (1xT) to measure the others against")
    return layouts


def tiny_enough(data: Dataset, n_train: int) -> Dataset:
    """``data`` with its first ``n_train`` training rows and at most :data:`TEST_ROWS` test rows."""
    return Dataset(data.name, data.train[:n_train], data.test[:TEST_ROWS], data.image_shape,
                   dynamic_binarization=data.dynamic_binarization)  # fmt: skip


# -- one run: a process of a layout ---------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    """Train the run once in this process (a rank, if torchrun started it); rank 0 writes the records."""
    torch.set_num_threads(args.threads)
    data = tiny_enough(load_dataset(args.dataset, "dynamic", data_dir=args.data_dir), args.n_train)
    with launch(args.device, args.batch_size) as world:
        device = torch.device(args.device) if world is None else world.device
        pyro.set_rng_seed(0)
        vae = VAE(data.x_dim, z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
        history = fit(
            vae, data, FitOptions(epochs=args.epochs, batch_size=args.batch_size, seed=0, engine="eager"), world=world
        )
        if world is None or world.is_main:
            Path(args.worker).write_text(json.dumps(history.epochs))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_layout(args: argparse.Namespace, processes: int, threads: int, batch_size: int) -> list[dict]:
    """The epoch records of one run of layout ``processes x threads`` (started by torchrun if ``processes > 1``)."""
    with tempfile.TemporaryDirectory() as folder:
        records = Path(folder) / "epochs.json"
        own = [__file__, "--worker", str(records), "--dataset", args.dataset, "--n-train", str(args.n_train),
               "--batch-size", str(batch_size), "--epochs", str(args.epochs), "--threads", str(threads),
               "--device", args.device, *(["--data-dir", args.data_dir] if args.data_dir else [])]  # fmt: skip
        launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                                              "--master-port", str(_free_port())]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # the one-process layout is no rank of anything
            env.pop(name, None)
        done = subprocess.run([sys.executable, *launcher, *own], env=env, capture_output=True, text=True)
        if done.returncode != 0 or not records.exists():
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"layout {processes}x{threads} at batch {batch_size} failed:\n{tail}")
        return json.loads(records.read_text())


def measure(args: argparse.Namespace, layouts: list[tuple[int, int]], batch_sizes: list[int]) -> list[dict]:
    """Every layout at every batch size, ``args.rounds`` times in rotating order; one row each."""
    runs: dict[tuple[int, int, int], list[list[dict]]] = {}
    for round_ in range(args.rounds):
        order = layouts[round_ % len(layouts) :] + layouts[: round_ % len(layouts)]
        for batch_size in batch_sizes:
            for processes, threads in order:
                print(f"round {round_ + 1}/{args.rounds}: batch {batch_size}, {processes}x{threads}", flush=True)
                runs.setdefault((batch_size, processes, threads), []).append(
                    run_layout(args, processes, threads, batch_size)
                )
    rows = []
    for (batch_size, processes, threads), epochs_of_runs in runs.items():
        per_run = [statistics.median(r["images_per_second"] for r in epochs[1:]) for epochs in epochs_of_runs]
        rows.append({"batch_size": batch_size, "processes": processes, "threads": threads,
                     "images_per_second": statistics.median(per_run), "images_per_second_all": per_run,
                     "train_elbo": epochs_of_runs[0][-1]["train_elbo"]})  # fmt: skip
    for row in rows:  # against one process of as many threads, where that layout was measured
        base = [
            r for r in rows if (r["batch_size"], r["processes"], r["threads"]) == (row["batch_size"], 1, row["threads"])
        ]
        row["speedup"] = row["images_per_second"] / base[0]["images_per_second"] if base else None
        row["efficiency"] = None if row["speedup"] is None else row["speedup"] / row["processes"]
    return sorted(rows, key=lambda r: (r["batch_size"], r["processes"], r["threads"]))


def markdown(rows: list[dict]) -> str:
    lines = ["| global batch | processes x threads | rows per process | images / s | speed-up | efficiency | "
             "last train ELBO |", "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in rows:
        speedup = "–" if r["speedup"] is None else f"{r['speedup']:.2f}×"
        efficiency = "–" if r["efficiency"] is None else f"{100 * r['efficiency']:.0f}%"
        lines.append(
            f"| {r['batch_size']} | {r['processes']}x{r['threads']} | {r['batch_size'] // r['processes']} | "
            f"{r['images_per_second']:,.0f} | {speedup} | {efficiency} | {r['train_elbo']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", default="auto", help="auto = fashion-mnist if installed, else digits")
    parser.add_argument("--data-dir", help="folder of the IDX files of mnist / fashion-mnist")
    parser.add_argument(
        "--n-train", type=int, help=f"training rows (default: at most {DEFAULT_ROWS}, --quick {QUICK_ROWS})"
    )
    parser.add_argument("--batch-sizes", default="128,512", help="global batch sizes")
    parser.add_argument("--layouts", help="PxT: P processes of T threads (default CPU 1x1,2x1,1x2; GPU 1x1..Nx1)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, the first a warm-up (>= 2)")
    parser.add_argument(
        "--rounds", type=int, help=f"runs per layout (default {DEFAULT_ROUNDS}, --quick {QUICK_ROUNDS})"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help=OUT_HELP)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # (a run of one layout writes its records here)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        refuse("--device cuda: torch sees no CUDA GPU")
    if args.epochs < 2:
        refuse(f"--epochs must be >= 2 (the first warms up), got {args.epochs}")
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    default_layouts = ",".join(f"{p}x1" for p in range(1, gpus + 1)) if gpus else "1x1,2x1,1x2"
    layouts = parse_layouts(args.layouts or default_layouts, args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for batch_size in batch_sizes:
        for processes, _ in layouts:
            if batch_size % processes:
                refuse(f"global batch {batch_size} does not divide by {processes} processes")
    if args.dataset == "auto":
        folder = DEFAULT_DATA_DIRS["fashion-mnist"]
        args.dataset = "fashion-mnist" if folder and Path(folder).is_dir() else "digits"
    available = load_dataset(args.dataset, "dynamic", data_dir=args.data_dir).train.shape[0]
    if args.n_train is not None and not 1 <= args.n_train <= available:
        refuse(f"--n-train must be from 1 to the {available} training rows of {args.dataset}, got {args.n_train}")
    args.n_train = args.n_train or min(available, QUICK_ROWS if args.quick else DEFAULT_ROWS)
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    args.out = results_folder(args.out, "scaling")
    machine = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if gpus else None,
        "gpus": gpus,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "commit": commit(),
        "backend": "nccl" if args.device == "cuda" else "gloo",
    }
    names = ",".join(f"{p}x{t}" for p, t in layouts)
    print(f"scaling: {args.dataset}, {args.n_train} training rows, x_dim-400-50 MLP, global batches "
          f"{args.batch_sizes}, layouts {names}, {args.epochs} epochs per run (1 warm-up), {args.rounds} rounds, "
          f"{args.device} ({machine['backend']} between processes)", flush=True)  # fmt: skip
    start = time.perf_counter()
    rows = measure(args, layouts, batch_sizes)
    header = (
        f"{args.n_train} training images ({args.dataset}, dynamically binarized), x_dim-400-50 MLP, Adam, eager "
        "engine; "
        f"{args.device} ({machine['gpu'] or machine['processor']}, {machine['cpu_count']} cores, load average "
        f"{machine['load_average_at_start'][0]:.1f} at the start; {machine['backend']} between processes; torch "
        f"{machine['torch']}, pyro {machine['pyro']}, commit {machine['commit']}); images/s of fit's training loop, "
        f"median of {args.rounds} runs per layout of {args.epochs - 1} timed epochs each (after 1 warm-up); "
        f"speed-up over 1 process of as many threads; efficiency = speed-up / processes"
    )
    table = markdown(rows)
    print(f"\n{header}\n\n{table}\n\n({time.perf_counter() - start:.0f} s)")
    report = {"settings": {"dataset": args.dataset, "n_train": args.n_train, "batch_sizes": batch_sizes,
                           "layouts": names.split(","), "epochs": args.epochs,
                           "rounds": args.rounds, "z_dim": Z_DIM, "hidden": list(HIDDEN)},
              "machine": machine, "results": rows}  # fmt: skip
    write_report(args.out, "scaling", args.device, report, header, table)
    return report


if __name__ == "__main__":
    main()
