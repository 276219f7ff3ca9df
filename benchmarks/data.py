"""Reading data: the resident path against the streaming path, and memory while streaming a set
larger than memory.

    python benchmarks/data.py                          # 10,000 Fashion-MNIST images, batch 128
    python benchmarks/data.py --n-train 2000 --large-mb 96 --memory-limit-mb 32   # a small run

It measures, in one run, side by side:

1. images/s of one training epoch (after a warm-up epoch; the ``images/s`` that ``fit`` records)
   of the same model (784-400-50 MLP, Bernoulli, dynamic binarization, batch ``--batch-size``) on
   the same rows read (a) resident, (b) streamed with 0, 2 and 4 DataLoader workers, for
   Fashion-MNIST as a memory-mapped ``.npy`` array and as a folder of PNG files (decoded once into
   pyrovae's cache; the first decode's rate is reported);
2. the peak resident memory (``VmHWM`` of a child process running ``pyrovae fit``; not
   ``ru_maxrss``, which keeps the peak of the process it was forked from across ``exec``) training
   one epoch with the streaming path (a small model, batch 512: :data:`MEMORY_RUN`) on a
   generated memory-mapped set of ``--large-mb`` megabytes of binary pixels,
   against the same run on a set of 1,000 rows (the footprint of Python, torch, Pyro and the
   model): what the large set adds must stay under ``--memory-limit-mb``, a limit the set is
   several times larger than. These runs take ``--memory-limit-mb`` as pyrovae's memory budget
   (:func:`pyrovae.data.budget.memory_budget`), so the large set is over it as a set larger than
   memory is, and its rows are read with ``os.preadv`` (a file within the budget is read through
   its memory map, which maps the pages read into the process); the report counts those reads.

Without Fashion-MNIST (``/usr/share/datasets/fashion-mnist``) it uses random 28x28 grey images and
says so. Writes ``data.json`` and ``data.md`` into a new folder (printed), or ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _provenance import ROOT, commit, write_report

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def images(n: int) -> tuple[np.ndarray, str]:
    """``n`` 28x28 ``uint8`` images: Fashion-MNIST's first training images where installed."""
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists() or (FASHION_MNIST / "train-images-idx3-ubyte").exists():
        from pyrovae.data import find_idx_file, read_idx

        pixels = read_idx(find_idx_file(FASHION_MNIST, "train-images-idx3-ubyte"))[:n]
        return pixels, f"Fashion-MNIST ({len(pixels)} training images from {FASHION_MNIST})"
    pixels = (np.random.default_rng(0).random((n, 28, 28)) * 255).astype(np.uint8)
    return pixels, f"random 28x28 grey images ({n}; no Fashion-MNIST in {FASHION_MNIST})"


def write_pngs(pixels: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:06d}.png")


def epoch_rate(dataset: str, loader: str, workers: int, batch_size: int, test_fraction: float, threads: int) -> float:
    """images/s of the second of two epochs of ``fit`` on ``dataset`` read as ``loader`` says, with ``threads``
    torch threads in the training process."""
    import pyro
    import torch

    from pyrovae import VAE
    from pyrovae.data import load_dataset
    from pyrovae.train import FitOptions, fit

    torch.set_num_threads(threads)
    data = load_dataset(dataset, "dynamic", test_fraction=test_fraction, data_loader=loader, workers=workers)
    data = dataclasses.replace(data, test=data.test[:256])  # (the test ELBO is not what is timed)
    pyro.set_rng_seed(0)
    vae = VAE(data.x_dim, z_dim=50, hidden_dims=(400,))
    history = fit(vae, data, FitOptions(epochs=2, batch_size=batch_size, seed=0, engine="eager"))
    return history.epochs[-1]["images_per_second"]


#: the model and batch of the memory runs: small, so that an epoch over a large set is quick (every row is read)
MEMORY_RUN = ["--batch-size", "512", "--hidden", "32", "--z-dim", "4", "--eval-particles", "1"]


def peak_rss(dataset: Path, budget_mb: float) -> tuple[float, str, int]:
    """Peak resident megabytes of a ``pyrovae fit`` process streaming one epoch of ``dataset`` with a
    memory budget of ``budget_mb``; its start line; how many ``os.preadv`` calls read rows."""
    out = dataset.parent / f"runs-{dataset.stem}"
    code = (
        "import os, resource, sys\n"
        "import pyrovae.data.budget\n"
        "from pyrovae.cli import main\n"
        f"pyrovae.data.budget.memory_budget = lambda: {int(budget_mb * 2**20)}\n"
        "reads, preadv = [0], os.preadv\n"
        "def counted(*args):\n"
        "    reads[0] += 1\n"
        "    return preadv(*args)\n"
        "os.preadv = counted\n"
        "try:\n"
        f"    main(['fit', '--dataset', {str(dataset)!r}, '--data-loader', 'stream', '--epochs', '1', *{MEMORY_RUN!r},"
        f" '--test-fraction', '0.002', '--device', 'cpu', '--out', {str(out / 'run')!r}], prog_name='pyrovae')\n"
        "except SystemExit as stop:\n"
        "    peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
        "    rss = peak[0] if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    print('rss', rss, reads[0], stop.code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if not last.startswith("rss") or not last.endswith(" 0"):
        raise SystemExit(f"the streaming run on {dataset} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    first = done.stdout.splitlines()[0]
    return int(last.split()[1]) / 1024, first, int(last.split()[2])  # (kilobytes)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=10_000, help="images timed (Fashion-MNIST's first ones)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", default="0,2,4", help="worker counts of the streaming path")
    parser.add_argument("--large-mb", type=float, default=1024, help="size of the generated memory-mapped set")
    parser.add_argument("--memory-limit-mb", type=float, default=256,
                        help="the memory the large set may add to the footprint (the set is larger)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3,
                        help="times each reading is timed, in turns; the medians are reported")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    parser.add_argument("--out", default=None, help="folder of data.json and data.md (default: a new folder)")
    args = parser.parse_args(argv)
    if args.n_train < 10 or args.batch_size < 1 or args.large_mb <= args.memory_limit_mb:
        parser.error("--n-train must be >= 10, --batch-size >= 1, and --large-mb above --memory-limit-mb")
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be >= 1")
    workers = [int(w) for w in args.workers.split(",")]
    work = Path(tempfile.mkdtemp(prefix="pyrovae-data-bench-"))
    pixels, source = images(args.n_train)
    print(f"benchmarks/data.py: {source}; batch {args.batch_size}; workers {workers}; scratch {work}", flush=True)
    np.save(work / "fashion.npy", pixels.astype(np.float32) / 255)  # (a .npy file's values are used as they are)
    write_pngs(pixels, work / "png")
    from pyrovae.data.image_cache import decoded_images

    start = time.perf_counter()
    decoded_images(work / "png", None)
    decode_rate = len(pixels) / (time.perf_counter() - start)
    print(f"first decode of {len(pixels)} PNG files: {decode_rate:.0f} images/s", flush=True)
    rows = []
    for name, dataset in (("array (.npy)", str(work / "fashion.npy")), ("PNG folder", f"folder:{work / 'png'}")):
        readings = [("resident", 0)] + [("stream", count) for count in workers]
        rates: dict[tuple[str, int], list[float]] = {reading: [] for reading in readings}
        for _ in range(args.rounds):  # (in turns, so that a noisy neighbour slows every reading alike)
            for loader, count in readings:
                rates[loader, count].append(epoch_rate(dataset, loader, count, args.batch_size, 0.05, args.threads))
        resident = statistics.median(rates["resident", 0])
        for (loader, count), measured in rates.items():
            rate = statistics.median(measured)
            rows.append({"data": name, "loader": loader, "workers": count, "images_per_second": rate,
                         "rounds": measured, "cost": resident / rate - 1})  # fmt: skip
            print(f"{name}: {loader} ({count} workers) {rate:.0f} images/s (median of {args.rounds})", flush=True)
    large_rows = int(args.large_mb * 2**20 / 784)
    large = np.lib.format.open_memmap(work / "large.npy", mode="w+", dtype=np.uint8, shape=(large_rows, 784))
    for start_row in range(0, large_rows, 65536):  # (binary pixels 0/1, written a block at a time)
        stop = min(large_rows, start_row + 65536)
        large[start_row:stop] = np.random.default_rng(start_row).random((stop - start_row, 784)) > 0.5
    large.flush()
    del large
    np.save(work / "small.npy", (np.random.default_rng(1).random((1000, 784)) > 0.5).astype(np.uint8))
    small_rss, _, _ = peak_rss(work / "small.npy", args.memory_limit_mb)
    large_rss, start_line, preadv_reads = peak_rss(work / "large.npy", args.memory_limit_mb)
    memory = {"set_mb": os.path.getsize(work / "large.npy") / 2**20, "rows": large_rows,
              "limit_mb": args.memory_limit_mb, "budget_mb": args.memory_limit_mb, "preadv_reads": preadv_reads,
              "peak_rss_mb": large_rss, "footprint_rss_mb": small_rss,
              "added_mb": large_rss - small_rss, "under_limit": large_rss - small_rss < args.memory_limit_mb,
              "start_line": start_line}  # fmt: skip
    print(f"streaming {memory['set_mb']:.0f} MB: peak RSS {large_rss:.0f} MB (1,000 rows: {small_rss:.0f} MB; "
          f"the set may add {args.memory_limit_mb:.0f} MB; over a budget of {args.memory_limit_mb:.0f} MB, read with "
          f"{preadv_reads} os.preadv calls)", flush=True)  # fmt: skip
    command = " ".join(["python", "benchmarks/data.py", *(argv if argv is not None else sys.argv[1:])])
    report = {"source": source, "n_train": len(pixels), "batch_size": args.batch_size, "rounds": args.rounds,
              "threads": args.threads,
              "first_decode_rate": decode_rate, "throughput": rows, "memory": memory, "commit": commit(),
              "cpus": os.cpu_count(), "command": command}  # fmt: skip
    table = "| data | loader | workers | images/s | cost per step vs resident |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {r['data']} | {r['loader']} | {r['workers']} | {r['images_per_second']:.0f} | {100 * r['cost']:+.0f}% |"
        for r in rows
    )
    table += (
        f"\n\nFirst decode of the PNG folder: {decode_rate:.0f} images/s. Streaming a {memory['set_mb']:.0f} MB "
        f"memory-mapped set ({large_rows} rows): peak RSS {large_rss:.0f} MB, against {small_rss:.0f} MB for 1,000 "
        f"rows (the footprint of Python, torch, Pyro and the model): {large_rss - small_rss:+.0f} MB, "
        f"{'under' if large_rss - small_rss < args.memory_limit_mb else 'OVER'} the limit of "
        f"{args.memory_limit_mb:.0f} MB the set may add (the set over a memory budget of that size, its rows "
        f"read with os.preadv: {preadv_reads} calls)."
    )
    header = (f"# Reading data\n\n`{report['command']}` at {report['commit']} on {os.cpu_count()} CPUs, "
              f"{args.threads} torch thread(s), medians of {args.rounds} rounds taken in turns; {source}.")  # fmt: skip
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pyrovae-data-results-"))
    write_report(out, "data", "cpu", report, header, table)
    shutil.rmtree(work, ignore_errors=True)
    print(table)
    print(f"wrote {out / 'data.json'} and {out / 'data.md'}")
    return report


if __name__ == "__main__":
    main()
