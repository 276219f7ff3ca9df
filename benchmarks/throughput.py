"""Training throughput: hand-written PyTorch vs the stock Pyro pattern vs pyrovae's ``fit``.

    python benchmarks/throughput.py                 # Fashion-MNIST if installed, 784-400-50 MLP
    python benchmarks/throughput.py --quick         # about a minute on 2 CPU cores

In one process, with the same architecture (x_dim-400-50 encoder, mirrored decoder), data,
optimizer (Adam, lr 1e-3) and batch sizes, it times one epoch of:

(a) ``hand``: hand-written PyTorch: z = mu + sigma * eps, BCE-with-logits + the closed-form KL
    (eq. 13 and eq. 18), ``torch.optim.Adam`` with its defaults; minibatches sliced from the
    in-memory tensor. ``hand-fused`` is the same loop with torch's fused Adam, the optimizer
    ``fit`` uses, so that the table shows how much of pyrovae's speed is the optimizer;
(b) ``stock-pyro``: the pattern of Pyro's VAE example: a torch ``DataLoader`` over a
    ``TensorDataset`` and ``SVI(model, guide, pyro.optim.Adam, Trace_ELBO())``, with Pyro's
    default validation on;
(c) ``pyrovae-<elbo>``: ``pyrovae.fit`` with each ELBO it offers, and ``pyrovae-pyro-meanfield``:
    ``fit`` given Pyro's own ``TraceMeanField_ELBO`` (what the lean ELBO saves). ``compiled-*``
    compile in their first (warm-up) epoch: the table's "first epoch" column shows that cost, and
    the target line says after how many epochs the fastest method is ahead in total time.

The machines this runs on are shared and noisy, so the methods take turns: each of ``--rounds``
rounds runs every method once (a fresh model, one warm-up epoch, one timed epoch), in an order
that rotates from round to round, and the table reports medians over rounds. pyrovae's times are
the ``seconds`` that ``fit`` records for the epoch's training loop.

It also measures where the time of one step goes (``--breakdown``, on by default): the
matrix products alone (the floor of any float32 step with these layers on this machine),
hand-written forward + backward, each optimizer, each ELBO's ``loss_and_grads`` (compiled ones
after compiling), a ``DataLoader``
batch and a sliced batch, at each of ``--breakdown-batches``. From the floor it prints the
largest epoch speed-up over the stock pattern that *any* implementation of the same float32 step
could reach here.

Writes ``throughput.json`` and ``throughput.md`` (``throughput_cuda.*`` on a GPU) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from pyrovae import VAE, fit, load_dataset
from pyrovae.config import resolve_device
from pyrovae.data import minibatches
from pyrovae.infer import DEPRECATED_ELBOS, ELBOS, Objective, make_elbo, make_engine
from pyrovae.train import make_adam

Z_DIM, HIDDEN = 50, (400,)

#: pyrovae's rows: name -> (what is estimated, the engine): the eager estimators, and an engine-elbo
#: label (the names pyrovae 0.1 gave them) for each other engine
PYROVAE_METHODS = {**{name: (name, "eager") for name in ELBOS}, **DEPRECATED_ELBOS}

#: targets of the issue (CPU, batch 256 for the step ratio)
STEP_RATIO_TARGET, STOCK_SPEEDUP_TARGET, TARGET_BATCH = 1.10, 2.5, 256


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _hand_loss(vae: VAE, batch: torch.Tensor, num_data: int) -> torch.Tensor:
    loc, scale = vae.encoder(batch)
    z = loc + scale * torch.randn_like(loc)
    reconstruction = -F.binary_cross_entropy_with_logits(vae.decoder(z), batch, reduction="none").sum(-1)
    kl = 0.5 * (-torch.log(scale**2) - 1 + scale**2 + loc**2).sum(-1)
    return -(reconstruction - kl).mean() * num_data


def hand_written(x: torch.Tensor, batch_size: int, fused: bool = False) -> Callable[[], int]:
    """(a) The same network trained by hand: returns a function that runs one epoch."""
    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(x.device)
    optimizer = make_adam(vae.parameters(), lr=1e-3) if fused else torch.optim.Adam(vae.parameters(), lr=1e-3)
    num_data = x.shape[0]

    def epoch() -> int:
        steps = 0
        for batch in minibatches(x, batch_size):
            loss = _hand_loss(vae, batch, num_data)
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
        networks = VAE(x_dim, z_dim=Z_DIM, hidden_dims=HIDDEN)
        self.encoder, self.decoder, self.z_dim = networks.encoder, networks.decoder, Z_DIM

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


def _stock_loader(x: torch.Tensor, batch_size: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu()), batch_size=batch_size, shuffle=True)


def stock_pyro(x: torch.Tensor, batch_size: int) -> Callable[[], int]:
    """(b) The stock pattern: returns a function that runs one epoch."""
    pyro.clear_param_store()
    vae = StockVAE(x.shape[1]).to(x.device)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    loader = _stock_loader(x, batch_size)

    def epoch() -> int:
        steps = 0
        with pyro.validation_enabled(True):  # Pyro's default
            for (batch,) in loader:
                svi.step(batch.to(x.device))
                steps += 1
        return steps

    return epoch


def _elbo_for(method: str) -> tuple[Any, str]:
    """(elbo, engine) that ``fit`` is given for a ``pyrovae-*`` method."""
    if method == "pyrovae-pyro-meanfield":
        return TraceMeanField_ELBO(max_plate_nesting=1), "eager"
    return PYROVAE_METHODS[method[len("pyrovae-") :]]


def time_epoch(method: str, x: torch.Tensor, batch_size: int) -> tuple[float, int, float]:
    """A fresh model, one warm-up epoch and one timed epoch: (seconds, steps) of the timed one and
    the seconds of the warm-up (first) epoch, which includes any compiling."""
    device = x.device
    if method.startswith("pyrovae-"):
        vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
        elbo, engine = _elbo_for(method)
        history = fit(vae, x, elbo=elbo, engine=engine, epochs=2, batch_size=batch_size)
        first, record = history.epochs
        return record["seconds"], record["step"] - first["step"], first["seconds"]
    if method == "stock-pyro":
        epoch = stock_pyro(x, batch_size)
    else:
        epoch = hand_written(x, batch_size, fused=method == "hand-fused")
    start = time.perf_counter()
    epoch()  # warm-up
    _sync(device)
    first = time.perf_counter() - start
    start = time.perf_counter()
    steps = epoch()
    _sync(device)
    return time.perf_counter() - start, steps, first


def _median_ms(fn: Callable[[], object], device: torch.device, repeats: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time of ``repeats`` calls, in ms (after a warm-up)."""
    for _ in range(max(2, repeats // 4)):
        fn()
    times = []
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        _sync(device)
        times.append((time.perf_counter() - start) / repeats * 1e3)
    return statistics.median(times)


def matmul_floor_ms(x_dim: int, batch_size: int, device: torch.device, repeats: int) -> float:
    """The matrix products of one training step alone, timed in isolation (ms).

    Per linear layer: the forward ``addmm``, the weight gradient ``g^T h`` and, except for the
    first layer (whose input is data), the input gradient ``g W``. No float32 implementation of
    the same step with these layers can take less on this device: every one of them is needed.
    """
    dims = (x_dim, *HIDDEN, 2 * Z_DIM)
    layers = list(zip(dims[:-1], dims[1:], strict=True))
    dims = (Z_DIM, *reversed(HIDDEN), x_dim)
    layers += list(zip(dims[:-1], dims[1:], strict=True))
    ops = []
    for index, (fan_in, fan_out) in enumerate(layers):
        h = torch.randn(batch_size, fan_in, device=device)
        w = torch.randn(fan_out, fan_in, device=device)
        b = torch.randn(fan_out, device=device)
        g = torch.randn(batch_size, fan_out, device=device)
        ops.append(lambda h=h, w=w, b=b: torch.addmm(b, h, w.t()))
        ops.append(lambda h=h, g=g: g.t().mm(h))
        if index != 0:
            ops.append(lambda w=w, g=g: g.mm(w))

    def step() -> None:
        for op in ops:
            op()

    return _median_ms(step, device, repeats)


def breakdown(x: torch.Tensor, batch_size: int, repeats: int, compiled: Sequence[str] = ()) -> dict[str, float]:
    """Where one step's time goes: each piece timed on its own, in ms per step (medians); the
    ``compiled`` ELBOs (names such as ``compiled-meanfield``) too, after they have compiled."""
    device, num_data = x.device, x.shape[0]
    batch = x[:batch_size]
    vae = VAE(x.shape[1], z_dim=Z_DIM, hidden_dims=HIDDEN).to(device)
    parts: dict[str, float] = {"matmuls only (floor)": matmul_floor_ms(x.shape[1], batch_size, device, repeats)}

    def forward_backward() -> None:
        _hand_loss(vae, batch, num_data).backward()
        vae.zero_grad(set_to_none=True)

    parts["hand-written forward + backward"] = _median_ms(forward_backward, device, repeats)
    _hand_loss(vae, batch, num_data).backward()
    vae.register_params()  # pyro.optim.Adam looks its tensors up by name in Pyro's param store
    parameters = list(vae.parameters())
    parts["torch Adam step (default)"] = _median_ms(torch.optim.Adam(parameters, lr=1e-9).step, device, repeats)
    parts["torch Adam step (fused, as in fit)"] = _median_ms(make_adam(parameters, lr=1e-9).step, device, repeats)
    pyro_adam = pyro.optim.Adam({"lr": 1e-9})
    parts["pyro.optim.Adam step (one Adam per tensor)"] = _median_ms(lambda: pyro_adam(parameters), device, repeats)
    vae.zero_grad(set_to_none=True)
    # pyrovae's steps as fit runs them: loss = module(batch); loss.backward() (compiled ones compile first)
    steps = {f"pyrovae {name} loss and gradients": PYROVAE_METHODS[name] for name in compiled}
    steps["pyrovae meanfield loss and gradients (eager)"] = ("meanfield", "eager")
    steps["pyrovae trace loss and gradients (eager)"] = ("trace", "eager")
    for name, (elbo, engine) in steps.items():
        module = make_engine(engine).wrap(Objective(vae.model, vae.guide, make_elbo(elbo), num_data=num_data))

        def module_step(module=module) -> None:
            module(batch).backward()
            vae.zero_grad(set_to_none=True)

        with pyro.validation_enabled(False):
            parts[name] = _median_ms(module_step, device, repeats)
    # Pyro's own classes, through Pyro's protocol (validation on as Pyro's default for the stock one)
    pyro_elbos = {
        "Pyro TraceMeanField_ELBO loss_and_grads": (TraceMeanField_ELBO(max_plate_nesting=1), False),
        "Pyro Trace_ELBO loss_and_grads, validation on (stock)": (Trace_ELBO(max_plate_nesting=1), True),
    }
    for name, (elbo, validate) in pyro_elbos.items():

        def elbo_step(elbo=elbo) -> None:
            elbo.loss_and_grads(vae.model, vae.guide, batch, num_data=num_data)
            vae.zero_grad(set_to_none=True)

        with pyro.validation_enabled(validate):
            parts[name] = _median_ms(elbo_step, device, repeats)
    loader = _stock_loader(x, batch_size)
    iterator = iter(loader)

    def loader_batch() -> None:
        nonlocal iterator
        try:
            (b,) = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            (b,) = next(iterator)
        b.to(device)

    parts["DataLoader batch (stock)"] = _median_ms(loader_batch, device, repeats)
    order = torch.randperm(num_data, device=device)
    parts["index_select batch (fit)"] = _median_ms(lambda: x.index_select(0, order[:batch_size]), device, repeats)
    return parts


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    if args.dataset == "auto":
        args.dataset = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").is_dir() else "digits"
    data = load_dataset(args.dataset, binarization="static")
    x = data.train[: args.n_train].to(device)
    n = x.shape[0]
    torch.manual_seed(0)
    elbos = args.elbos.split(",")
    unknown = sorted(set(elbos) - set(PYROVAE_METHODS))
    if unknown:
        raise SystemExit(f"--elbos: unknown {unknown}; expected names from {sorted(PYROVAE_METHODS)}")
    methods = ["hand", "hand-fused", "stock-pyro"] + [f"pyrovae-{e}" for e in elbos]
    if "meanfield" in elbos:
        methods.append("pyrovae-pyro-meanfield")
    results = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        times: dict[str, list[float]] = {m: [] for m in methods}
        firsts: dict[str, list[float]] = {m: [] for m in methods}
        steps: dict[str, int] = {}
        for round_index in range(args.rounds):
            shift = round_index % len(methods)
            for method in methods[shift:] + methods[:shift]:
                seconds, steps[method], first = time_epoch(method, x, batch_size)
                times[method].append(seconds)
                firsts[method].append(first)
        hand_step = statistics.median(times["hand"]) / steps["hand"]
        stock_rate = min(n, steps["stock-pyro"] * batch_size) / statistics.median(times["stock-pyro"])
        for method in methods:
            epoch_seconds = statistics.median(times[method])
            step_ms = epoch_seconds / steps[method] * 1e3
            row = {
                "method": method,
                "batch_size": batch_size,
                "epoch_seconds": epoch_seconds,
                "epoch_seconds_all": times[method],
                # the warm-up epoch: compiled ELBOs compile in it (round 1: inductor's on-disk cache
                # is cold for this process's first compile of each graph; later rounds hit it)
                "first_epoch_seconds": statistics.median(firsts[method]),
                "first_epoch_seconds_all": firsts[method],
                "steps": steps[method],
                "ms_per_step": step_ms,
                # JIT ELBOs drop the last incomplete batch
                "images_per_second": min(n, steps[method] * batch_size) / epoch_seconds,
                "step_ratio_to_hand": step_ms / 1e3 / hand_step,
                # the time for an epoch's worth of images (JIT ELBOs' epochs are a batch short)
                "epoch_speedup_vs_stock": min(n, steps[method] * batch_size) / epoch_seconds / stock_rate,
            }
            results.append(row)
            print(
                f"batch {batch_size:>5} {method:<24} {step_ms:8.3f} ms/step  {row['images_per_second']:9.0f} img/s  "
                f"x{row['step_ratio_to_hand']:.2f} of hand  {row['epoch_speedup_vs_stock']:.2f}x faster than stock",
                flush=True,
            )
    report = {
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
    if args.breakdown:
        report["breakdown"] = []
        for batch_size in [int(b) for b in args.breakdown_batches.split(",")]:
            compiled = [e for e in elbos if e.startswith("compiled-")]
            parts = breakdown(x, batch_size, args.breakdown_repeats, compiled)
            entry: dict = {"batch_size": batch_size, "ms_per_step": parts}
            stock = [r for r in results if r["method"] == "stock-pyro" and r["batch_size"] == batch_size]
            if stock:
                entry["max_speedup_vs_stock"] = stock[0]["ms_per_step"] / parts["matmuls only (floor)"]
            report["breakdown"].append(entry)
    report["targets"] = targets(report)
    return report


def targets(report: dict) -> dict:
    """The issue's two targets, read off the table (``None`` where the run did not measure them)."""
    rows = {(r["method"], r["batch_size"]): r for r in report["results"]}
    at_target = rows.get(("pyrovae-meanfield", TARGET_BATCH))
    compiled = rows.get(("pyrovae-compiled-meanfield", TARGET_BATCH))
    pyrovae = [r for r in report["results"] if r["method"].startswith("pyrovae-")]
    best = max(pyrovae, key=lambda r: r["epoch_speedup_vs_stock"], default=None)
    best_entry = None
    if best is not None:
        best_entry = {k: best[k] for k in ("method", "batch_size", "epoch_speedup_vs_stock", "first_epoch_seconds")}
        stock = rows[("stock-pyro", best["batch_size"])]
        # seconds per epoch's worth of images (JIT epochs are a batch short)
        per_image = best["epoch_seconds"] / min(report["train_images"], best["steps"] * best["batch_size"])
        stock_epoch, epoch = stock["epoch_seconds"], per_image * report["train_images"]
        best_entry["stock_epoch_seconds"] = stock_epoch
        # epochs after which the method's total time (first epoch, compiling included) is the lower
        overhead = best["first_epoch_seconds"] - best["epoch_seconds"]
        best_entry["break_even_epochs"] = (
            max(1, math.ceil(overhead / (stock_epoch - epoch))) if epoch < stock_epoch else None
        )
    return {
        "meanfield_step_ratio_at_256": at_target["step_ratio_to_hand"] if at_target else None,
        "meanfield_step_ratio_to_hand_fused_at_256": (
            at_target["ms_per_step"] / rows[("hand-fused", TARGET_BATCH)]["ms_per_step"] if at_target else None
        ),
        "compiled_meanfield_step_ratio_at_256": compiled["step_ratio_to_hand"] if compiled else None,
        "step_ratio_target": STEP_RATIO_TARGET,
        "best_epoch_speedup_vs_stock": best_entry,
        "epoch_speedup_target": STOCK_SPEEDUP_TARGET,
    }


def markdown(report: dict) -> str:
    lines = [
        "| batch | method | ms / step | images / s | step time ÷ hand-written | epoch speed-up vs stock Pyro "
        "| first epoch (s) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['batch_size']} | {r['method']} | {r['ms_per_step']:.3f} | {r['images_per_second']:,.0f} | "
            f"{r['step_ratio_to_hand']:.2f}× | {r['epoch_speedup_vs_stock']:.2f}× | {r['first_epoch_seconds']:.2f} |"
        )
    if report.get("breakdown"):
        entries = report["breakdown"]
        batches = ", ".join(str(b["batch_size"]) for b in entries)
        lines += ["", f"Where the time of one step goes (each piece timed alone; ms per step at batch {batches}):", ""]
        lines += ["| piece | " + " | ".join(f"batch {b['batch_size']}" for b in entries) + " |"]
        lines += ["| --- |" + " ---: |" * len(entries)]
        for name in entries[0]["ms_per_step"]:
            lines.append(f"| {name} | " + " | ".join(f"{b['ms_per_step'][name]:.3f}" for b in entries) + " |")
        ceilings = [
            f"{b['max_speedup_vs_stock']:.2f}× at batch {b['batch_size']}"
            for b in entries
            if b.get("max_speedup_vs_stock")
        ]
        if ceilings:
            lines += [
                "",
                "Largest epoch speed-up over the stock pattern that any float32 step with these layers could "
                f"reach here (stock ms/step ÷ matmul floor): {', '.join(ceilings)}.",
            ]
    t = report["targets"]
    lines.append("")
    if t["meanfield_step_ratio_at_256"] is not None:
        met = "met" if t["meanfield_step_ratio_at_256"] <= STEP_RATIO_TARGET else "not met"
        lines.append(
            f"Target: pyrovae-meanfield at batch {TARGET_BATCH} ≤ {STEP_RATIO_TARGET:.2f}× hand-written: "
            f"{t['meanfield_step_ratio_at_256']:.2f}× ({met}; {t['meanfield_step_ratio_to_hand_fused_at_256']:.2f}× "
            "hand-written with the same fused Adam)."
        )
    if t.get("compiled_meanfield_step_ratio_at_256") is not None:
        lines.append(
            f"pyrovae-compiled-meanfield (the same estimator, compiled) at batch {TARGET_BATCH}: "
            f"{t['compiled_meanfield_step_ratio_at_256']:.2f}× hand-written."
        )
    if t["best_epoch_speedup_vs_stock"] is not None:
        best = t["best_epoch_speedup_vs_stock"]
        met = "met" if best["epoch_speedup_vs_stock"] >= STOCK_SPEEDUP_TARGET else "not met"
        lines.append(
            f"Target: a pyrovae epoch ≥ {STOCK_SPEEDUP_TARGET}× faster than the stock pattern's: best "
            f"{best['epoch_speedup_vs_stock']:.2f}× ({best['method']}, batch {best['batch_size']}; {met}). "
            f"Its first epoch, compiling included, took {best['first_epoch_seconds']:.1f} s against the stock "
            f"epoch's {best['stock_epoch_seconds']:.1f} s: ahead in total time "
            + (f"from epoch {best['break_even_epochs']} on." if best["break_even_epochs"] else "never.")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="auto", help="auto = fashion-mnist if installed, else digits")
    parser.add_argument("--n-train", type=int, default=10000, help="training images per epoch")
    parser.add_argument("--batch-sizes", default="32,256,1024")
    parser.add_argument("--elbos", default=",".join(PYROVAE_METHODS))
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per method, taken in turns")
    parser.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--breakdown-batches", default=f"32,{TARGET_BATCH}", help="batch sizes of the breakdown")
    parser.add_argument("--breakdown-repeats", type=int, default=40, help="calls per timing of each piece")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="2000 images, 2 rounds: about a minute on 2 cores")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.rounds, args.breakdown_repeats = min(args.n_train, 2000), min(args.rounds, 2), 10
    for name in ("n_train", "rounds", "breakdown_repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    report = run(args)
    table = markdown(report)
    machine = report["machine"]
    header = (
        f"{report['train_images']} training images ({args.dataset}), x_dim-400-50 MLP, Adam; "
        f"{machine['device']} ({machine['gpu'] or machine['processor']}, {machine['cpu_count']} cores, "
        f"{machine['torch_threads']} torch threads, torch {machine['torch']}, pyro {machine['pyro']}); "
        f"median of {args.rounds} rounds, each method taking one warm-up and one timed epoch per round"
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
