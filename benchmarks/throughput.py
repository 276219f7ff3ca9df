"""Training throughput: hand-written PyTorch vs the stock Pyro pattern vs pyrovae's ``fit``.

    python benchmarks/throughput.py                 # Fashion-MNIST if installed, 784-400-50 MLP
    python benchmarks/throughput.py --quick         # about a minute on 2 CPU cores

In one process, with the same architecture (x_dim-400-50 encoder, mirrored decoder), data,
optimizer (Adam, lr 1e-3) and batch sizes, it times one epoch of:

(a) ``hand``: hand-written PyTorch: z = mu + sigma * eps, BCE-with-logits + the closed-form KL
    (eq. 13 and eq. 18), one Adam; minibatches sliced from the in-memory tensor;
(b) ``stock-pyro``: the pattern of Pyro's VAE example: a torch ``DataLoader`` over a
    ``TensorDataset`` and ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())``, with Pyro's
    default validation on;
(c) ``pyrovae-<elbo>``: ``pyrovae.fit`` with each ELBO it offers.

Each method trains ``--repeats`` + 1 epochs; the first is a warm-up and the table reports the
median of the others. (a) and (b) are timed around their epoch loops; (c) reports the ``seconds``
that ``fit`` records for each epoch's training loop. Ratios are to (a). Writes
``throughput.json`` and ``throughput.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae import VAE, fit, load_dataset
from pyrovae.config import resolve_device
from pyrovae.data import minibatches

ELBO_NAMES = ("meanfield", "trace", "jit-meanfield", "jit-trace")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_written(x: torch.Tensor, batch_size: int, num_data: int) -> Callable[[], int]:
    """(a) The same network trained by hand: returns a function that runs one epoch."""
    vae = VAE(x.shape[1], z_dim=50, hidden_dims=(400,)).to(x.device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def epoch() -> int:
        steps = 0
        for batch in minibatches(x, batch_size):
            loc, scale = vae.encoder(batch)
            z = loc + scale * torch.randn_like(loc)
            reconstruction = -F.binary_cross_entropy_with_logits(vae.decoder(z), batch, reduction="none").sum(-1)
            kl = 0.5 * (-torch.log(scale**2) - 1 + scale**2 + loc**2).sum(-1)
            loss = -(reconstruction - kl).mean() * num_data
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        return steps

    return epoch


class StockVAE(nn.Module):
    """(b) Model and guide written as in Pyro's VAE example (same networks as pyrovae's)."""

    def __init__(self, x_dim: int):
        super().__init__()
        networks = VAE(x_dim, z_dim=50, hidden_dims=(400,))
        self.encoder, self.decoder, self.z_dim = networks.encoder, networks.decoder, 50

    def model(self, x: torch.Tensor) -> None:
        pyro.module("stock_decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros((x.shape[0], self.z_dim))
            z_scale = x.new_ones((x.shape[0], self.z_dim))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("stock_encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))


def stock_pyro(x: torch.Tensor, batch_size: int) -> Callable[[], int]:
    pyro.clear_param_store()
    vae = StockVAE(x.shape[1]).to(x.device)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), pyro.infer.Trace_ELBO())
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu()), batch_size=batch_size, shuffle=True)

    def epoch() -> int:
        steps = 0
        with pyro.validation_enabled(True):  # Pyro's default
            for (batch,) in loader:
                svi.step(batch.to(x.device))
                steps += 1
        return steps

    return epoch


def pyrovae_epochs(x: torch.Tensor, batch_size: int, elbo: str, epochs: int) -> tuple[list[float], int]:
    """(c) One call of ``pyrovae.fit``: the seconds of each epoch's training loop, and steps per epoch.

    These are the ``seconds`` of :class:`pyrovae.train.History`: the loop over minibatches, without
    the one-off set-up of a call (data validation, optimizer, JIT compilation happens in epoch 1).
    """
    vae = VAE(x.shape[1], z_dim=50, hidden_dims=(400,)).to(x.device)
    history = fit(vae, x, elbo=elbo, epochs=epochs, batch_size=batch_size)
    return [r["seconds"] for r in history.epochs], history.epochs[0]["step"]


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    if args.dataset == "auto":
        args.dataset = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").is_dir() else "digits"
    data = load_dataset(args.dataset, binarization="static")
    x = data.train[: args.n_train].to(device)
    n = x.shape[0]
    torch.manual_seed(0)
    methods = ["hand", "stock-pyro"] + [f"pyrovae-{e}" for e in args.elbos.split(",")]
    results = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        times: dict[str, list[float]] = {}
        steps: dict[str, int] = {}
        for method, epoch in (("hand", hand_written(x, batch_size, n)), ("stock-pyro", stock_pyro(x, batch_size))):
            times[method] = []
            for repeat in range(args.repeats + 1):  # epoch 0 is the warm-up
                _sync(device)
                start = time.perf_counter()
                steps[method] = epoch()
                _sync(device)
                if repeat:
                    times[method].append(time.perf_counter() - start)
        for e in args.elbos.split(","):
            seconds, steps[f"pyrovae-{e}"] = pyrovae_epochs(x, batch_size, e, args.repeats + 1)
            times[f"pyrovae-{e}"] = seconds[1:]
        base = statistics.median(times["hand"]) / steps["hand"]
        stock_epoch = statistics.median(times["stock-pyro"])
        for method in methods:
            epoch_seconds = statistics.median(times[method])
            step_ms = epoch_seconds / steps[method] * 1e3
            row = {
                "method": method,
                "batch_size": batch_size,
                "epoch_seconds": epoch_seconds,
                "epoch_seconds_all": times[method],
                "steps": steps[method],
                "ms_per_step": step_ms,
                # JIT ELBOs drop the last incomplete batch
                "images_per_second": min(n, steps[method] * batch_size) / epoch_seconds,
                "step_ratio_to_hand": step_ms / 1e3 / base,
                "epoch_speedup_vs_stock": stock_epoch / epoch_seconds,
            }
            results.append(row)
            print(
                f"batch {batch_size:>5} {method:<22} {step_ms:8.3f} ms/step  {row['images_per_second']:9.0f} img/s  "
                f"x{row['step_ratio_to_hand']:.2f} of hand  {row['epoch_speedup_vs_stock']:.2f}x faster than stock"
            )
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__,
            "pyro": pyro.__version__,
        },
        "settings": {k: v for k, v in vars(args).items()},
        "train_images": n,
        "results": results,
    }


def markdown(report: dict) -> str:
    lines = [
        "| batch | method | ms / step | images / s | step time ÷ hand-written | epoch speed-up vs stock Pyro |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['batch_size']} | {r['method']} | {r['ms_per_step']:.3f} | {r['images_per_second']:,.0f} | "
            f"{r['step_ratio_to_hand']:.2f}× | {r['epoch_speedup_vs_stock']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="auto", help="auto = fashion-mnist if installed, else digits")
    parser.add_argument("--n-train", type=int, default=20000, help="training images per epoch")
    parser.add_argument("--batch-sizes", default="32,256,1024")
    parser.add_argument("--elbos", default=",".join(ELBO_NAMES))
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per method (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="5000 images, 2 repeats: about a minute on 2 cores")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.repeats = min(args.n_train, 5000), min(args.repeats, 2)
    pyro.set_rng_seed(0)
    report = run(args)
    table = markdown(report)
    machine = report["machine"]
    header = (
        f"{report['train_images']} training images ({args.dataset}), x_dim-400-50 MLP, Adam; "
        f"{machine['device']} ({machine['processor']}, {machine['cpu_count']} cores, torch {machine['torch']}, "
        f"pyro {machine['pyro']}); median of {args.repeats} epochs after a warm-up"
    )
    print(f"\n{header}\n\n{table}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"_{machine['device'].split(':')[0]}"
    (out / f"throughput{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"throughput{suffix}.md").write_text(f"{header}\n\n{table}\n")
    return report


if __name__ == "__main__":
    main()
