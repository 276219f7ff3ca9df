r"""Analytic vs Monte Carlo KL: gradient variance, time per step and test ELBO of every pyrovae ELBO.

    python benchmarks/kl_estimators.py             # the reference run (Fashion-MNIST where installed)
    python benchmarks/kl_estimators.py --quick     # digits, a small network: 17 s on 2 CPU cores, one thread

``meanfield`` (Pyro's ``TraceMeanField_ELBO``) computes :math:`\mathrm{KL}(q_\phi(z|x)\,\|\,p(z))`
in closed form (eq. 18 of docs/theory.md) and estimates only the reconstruction term by Monte
Carlo; ``trace`` (``Trace_ELBO``) estimates :math:`\log p_\theta(x|z) + \log p(z) - \log q_\phi(z|x)` at one draw
:math:`z \sim q_\phi(z|x)`. ``jit-meanfield`` and ``jit-trace`` are the same two estimators run
through ``torch.jit`` (and ``compiled-meanfield``, ``compiled-trace`` through ``torch.compile``,
on request with ``--elbos``). For one VAE and data set the script measures:

1. **Gradient variance at fixed parameters**, at three points of the first seed's training run
   with the first ELBO (``meanfield``): initialisation, middle and end. Each ELBO gives R gradient
   estimates :math:`g_1, \dots, g_R` of the per-data-point ELBO; their total variance is
   :math:`\mathrm{tr}\,\widehat{\mathrm{Cov}}(g) = \sum_j \widehat{\mathrm{Var}}(g_{\cdot j})`,
   for the encoder, the decoder and all parameters. Two kinds of noise: ``fixed`` (one minibatch,
   only the draw of :math:`z` varies) and ``random`` (a fresh minibatch per estimate, the noise
   that SGD sees). Draw :math:`r` of every ELBO uses the same seeds and minibatch, so ``trace``
   and ``meanfield`` see the same :math:`z` and their decoder gradients are equal draw by draw (the
   KL does not depend on the decoder); only the encoder's gradient carries the Monte Carlo KL.
   The ratio of each ELBO's total variance to the first ELBO's has a 95 % percentile bootstrap
   interval: the R draws are resampled with replacement, the same indices for every ELBO.
2. **Time per step**: training seconds of an epoch / steps of the epoch, from :func:`pyrovae.fit`'s
   history (which excludes the test-set evaluation); the median over epochs, then over seeds.
3. **Test ELBO** (nats per test image, analytic KL, as :func:`pyrovae.fit` evaluates it) against
   steps and against training seconds, for every seed (the same seeds, hence the same
   initialisation and minibatch order, for every ELBO).

It prints a markdown table and writes ``kl_estimators.json``, ``kl_estimators.md``,
``kl_estimators_variance.png`` and ``kl_estimators_curves.png`` to ``--out`` (by default a new
folder under the system's temporary folder; ``--out benchmarks/results`` replaces the committed
results). Training is :func:`pyrovae.fit`, the one training loop.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pyro
import torch
from _provenance import OUT_HELP, HelpFormatter, results_folder  # noqa: I001 (this folder's helper)

import pyrovae
from pyrovae import VAE, FitOptions, estimate_elbo, fit, load_dataset, make_elbo
from pyrovae.config import resolve_device
from pyrovae.data import DEFAULT_DATA_DIRS, Dataset, binarize
from pyrovae.infer import DEPRECATED_ELBOS, ELBOS, Objective, kl_modes
from pyrovae.train.engines import make_engine

#: the rows this benchmark can run: name -> (what is estimated, the engine): the eager estimators, and
#: an engine-elbo label (the names pyrovae 0.1 gave them) for each other engine
METHODS = {**{name: (name, "eager") for name in ELBOS}, **DEPRECATED_ELBOS}
#: run unless --elbos says otherwise (jit-* and compiled-* give the eager twins' numbers)
DEFAULT_METHODS = ("meanfield", "trace", "jit-meanfield", "jit-trace")
NAME = "kl_estimators"
#: settings of the reference run and of ``--quick``; every one can be overridden by its flag
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"z_dim": 20, "hidden": "256", "epochs": 10, "batch_size": 128, "seeds": 3, "draws": 200},
    "quick": {
        "dataset": "digits",
        "z_dim": 10,
        "hidden": "128",
        "epochs": 8,
        "batch_size": 128,
        "seeds": 3,
        "draws": 100,
    },
}
BATCH_KINDS = ("fixed", "random")
#: gradient draw r of every ELBO, at every point, runs with the RNG seeded to DRAW_SEED + r
DRAW_SEED = 10_000
LEVEL = 0.95


# -- gradient variance ------------------------------------------------------------------------
def parameter_groups(vae: VAE) -> dict[str, list[torch.nn.Parameter]]:
    """The VAE's trainable parameters by part: ``encoder``, ``decoder``, and ``likelihood`` /
    ``prior`` where those have parameters (a parameter shared by two parts counts in the first)."""
    groups: dict[str, list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name in ("encoder", "decoder", "likelihood", "prior"):
        params = [p for p in getattr(vae, name).parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups[name] = params
    rest = [p for p in vae.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups["other"] = rest
    return groups


def gradient_draws(
    vae: VAE, elbo: str, batch: Callable[[int], torch.Tensor], num_data: int, draws: int, seed: int
) -> torch.Tensor:
    r"""``(draws, P)``: ``draws`` gradient estimates of the per-data-point ELBO at fixed parameters.

    Draw :math:`r` seeds the RNG with ``seed + r``, calls ``loss_and_grads`` of the ELBO called
    ``elbo`` on ``batch(r)`` scaled to ``num_data`` rows (what one step of :func:`pyrovae.fit`
    computes), and flattens the gradients of :func:`parameter_groups` in order, divided by
    ``num_data``. One call before the draws compiles a JIT ELBO, so that draw :math:`r` of
    ``jit-meanfield`` and ``meanfield`` (``jit-trace`` and ``trace``) are the same numbers. The
    parameters are left unchanged and their gradients cleared.
    """
    params = [p for group in parameter_groups(vae).values() for p in group]
    out = torch.zeros(draws, sum(p.numel() for p in params), device=vae.device, dtype=vae.dtype)
    estimator, engine = METHODS[elbo]
    module = make_engine(engine).wrap(Objective(vae.model, vae.guide, make_elbo(estimator), num_data=num_data))
    with pyro.validation_enabled(False):
        module(batch(0)).backward()  # a traced or compiled engine records its graph here
        for r in range(draws):
            pyro.set_rng_seed(seed + r)
            vae.zero_grad(set_to_none=True)
            module(batch(r)).backward()
            offset = 0
            for p in params:
                if p.grad is not None:
                    out[r, offset : offset + p.numel()] = p.grad.reshape(-1)
                offset += p.numel()
    vae.zero_grad(set_to_none=True)
    return out / num_data


def centered_gram(g: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    r""":math:`K_{rs} = (g_r - \bar g)\cdot(g_s - \bar g)` in float64, for ``g`` of shape ``(R, P)``
    (columns taken ``chunk`` at a time, so memory stays at one float64 copy of a chunk)."""
    gram = torch.zeros(g.shape[0], g.shape[0], dtype=torch.float64, device=g.device)
    for block in g.split(chunk, dim=1):
        block = block.double()
        block = block - block.mean(0)
        gram += block @ block.T
    return gram


def total_variance(gram: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    r"""Total variance :math:`\sum_j \widehat{\mathrm{Var}}(g_{\cdot j})` from the centred Gram matrix.

    With ``counts`` of shape ``(B, R)`` (how often each draw is in each of B bootstrap resamples,
    rows summing to R) it is the total variance of every resample, by

    .. math::

        \frac1{R-1}\Big(\sum_r w_r K_{rr} - \frac1R\, w^\top K w\Big)

    (the sample variance of the resample with the usual :math:`R-1`; translation invariance lets
    the centred :math:`K` stand for the raw draws).
    """
    num = gram.shape[0]
    if counts is None:
        return torch.diagonal(gram).sum() / (num - 1)
    counts = counts.to(gram)
    return (counts @ torch.diagonal(gram) - ((counts @ gram) * counts).sum(1) / num) / (num - 1)


def bootstrap_counts(draws: int, resamples: int, seed: int) -> torch.Tensor:
    """``(resamples, draws)`` multinomial counts: each row is one resample with replacement."""
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(draws, (resamples, draws), generator=generator)
    return torch.zeros(resamples, draws, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones_like(idx, dtype=torch.float64)
    )


def variance_summary(
    grams: dict[str, dict[str, torch.Tensor]], baseline: str, counts: torch.Tensor
) -> dict[str, dict[str, Any]]:
    """Per group: each ELBO's total variance, and its ratio to ``baseline``'s with a bootstrap CI."""
    lo, hi = (1 - LEVEL) / 2, (1 + LEVEL) / 2
    out: dict[str, dict[str, Any]] = {}
    for group in next(iter(grams.values())):
        boot = {e: total_variance(grams[e][group].cpu(), counts) for e in grams}
        entry: dict[str, Any] = {"variance": {}, "ratio": {}}
        base = float(total_variance(grams[baseline][group]))
        for e in grams:
            value = float(total_variance(grams[e][group]))
            entry["variance"][e] = value
            ratio = boot[e] / boot[baseline]
            ci = torch.quantile(ratio, torch.tensor([lo, hi], dtype=ratio.dtype)).tolist()
            entry["ratio"][e] = {"value": value / base, "ci": ci}
        out[group] = entry
    return out


def measure_gradient_variance(
    vae: VAE,
    snapshots: list[dict[str, Any]],
    data: Dataset,
    elbos: Sequence[str],
    batch_size: int,
    draws: int,
    resamples: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Gradient variance of every ELBO at every snapshot, for a ``fixed`` and ``random`` batches."""
    device = vae.device
    train = data.train
    if data.dynamic_binarization:  # one fixed binarization: the noise measured is that of z (and batches)
        train = binarize(train, seed)
    train = train.to(device, vae.dtype)
    num_data, size = train.shape[0], min(batch_size, train.shape[0])
    generator = torch.Generator().manual_seed(seed)
    rows = torch.stack([torch.randperm(num_data, generator=generator)[:size] for _ in range(draws + 1)]).to(device)
    batch_of = {"fixed": lambda r: train[rows[-1]], "random": lambda r: train[rows[r]]}
    counts = bootstrap_counts(draws, resamples, seed)
    sizes = {name: sum(p.numel() for p in params) for name, params in parameter_groups(vae).items()}
    bounds, start = {}, 0
    for name, n in sizes.items():
        bounds[name], start = (start, start + n), start + n
    results = []
    for snap in snapshots:
        vae.load_state_dict(snap["state"])
        for kind in BATCH_KINDS:
            grams: dict[str, dict[str, torch.Tensor]] = {}
            seconds = {}
            for elbo in elbos:
                begin = time.perf_counter()
                g = gradient_draws(vae, elbo, batch_of[kind], num_data, draws, seed=DRAW_SEED)
                seconds[elbo] = time.perf_counter() - begin
                grams[elbo] = {name: centered_gram(g[:, a:b]) for name, (a, b) in bounds.items()}
                grams[elbo]["all"] = sum(grams[elbo].values())
                del g
            groups = variance_summary(grams, elbos[0], counts)
            for name, entry in groups.items():
                entry["num_params"] = sum(sizes.values()) if name == "all" else sizes[name]
            results.append(
                {
                    "point": snap["point"],
                    "epoch": snap["epoch"],
                    "step": snap["step"],
                    "batches": kind,
                    "draw_seconds": seconds,
                    "groups": groups,
                }
            )
            ratios = ", ".join(
                f"{e}/{elbos[0]} {groups['encoder']['ratio'][e]['value']:.3g}" for e in elbos[1:] if "encoder" in groups
            )
            print(f"  gradient variance at {snap['point']} (step {snap['step']}), {kind} batch: encoder {ratios}")
    return results


# -- training curves --------------------------------------------------------------------------
def train_runs(
    make_vae: Callable[[], VAE],
    data: Dataset,
    elbos: Sequence[str],
    seeds: Sequence[int],
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train every (seed, ELBO) with :func:`pyrovae.fit`; snapshot the first run at init, middle, end."""
    middle = max(1, args.epochs // 2)
    snap_epochs = {middle: "middle", args.epochs: "end"}
    runs, snapshots = [], []
    test = data.test.to(device)
    for seed in seeds:
        for elbo in elbos:  # ELBOs interleaved within a seed, so a slow spell of the machine hits all alike
            pyro.set_rng_seed(seed)
            vae = make_vae().to(device)
            first = not runs
            if first:
                snapshots.append({"point": "init", "epoch": 0, "step": 0, "state": copy.deepcopy(vae.state_dict())})
            init_elbo = estimate_elbo(vae, test.to(vae.dtype), num_particles=args.eval_particles)

            def snapshot(state, first=first):
                if first and state.event == "epoch" and state.record["epoch"] in snap_epochs:
                    snapshots.append(
                        {
                            "point": snap_epochs[state.record["epoch"]],
                            "epoch": state.record["epoch"],
                            "step": state.record["step"],
                            "state": copy.deepcopy(state.vae.state_dict()),
                        }
                    )

            history = fit(
                vae,
                data,
                FitOptions(
                    elbo=METHODS[elbo][0],
                    engine=METHODS[elbo][1],
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    seed=seed,
                    eval_particles=args.eval_particles,
                ),
                callbacks=[snapshot],
            )
            steps = [r["step"] for r in history.epochs]
            per_epoch = [b - a for a, b in zip([0, *steps[:-1]], steps, strict=True)]
            seconds = [r["seconds"] for r in history.epochs]
            run = {
                "elbo": elbo,
                "seed": seed,
                "kl_mode": history.kl_mode["z"],
                "step": [0, *steps],
                "seconds": [0.0, *(sum(seconds[: i + 1]) for i in range(len(seconds)))],
                "test_elbo": [init_elbo, *(r["test_elbo"] for r in history.epochs)],
                "train_elbo": [r["train_elbo"] for r in history.epochs],
                "seconds_per_step": [s / n for s, n in zip(seconds, per_epoch, strict=True)],
            }
            runs.append(run)
            print(
                f"  {elbo:<13} seed={seed} device={vae.device} dtype={str(vae.dtype).replace('torch.', '')} "
                f"KL {run['kl_mode']}: test ELBO {run['test_elbo'][-1]:.3f} after {steps[-1]} steps, "
                f"{run['seconds'][-1]:.1f} s training, {1000 * statistics.median(run['seconds_per_step']):.2f} ms/step"
            )
    return runs, snapshots


def training_summary(runs: list[dict[str, Any]], elbos: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per ELBO: time per step (median over epochs, then over seeds), final test ELBO over seeds,
    and the per-seed difference of the final test ELBO to the first ELBO's."""
    final = {(r["elbo"], r["seed"]): r["test_elbo"][-1] for r in runs}
    out = {}
    for elbo in elbos:
        mine = [r for r in runs if r["elbo"] == elbo]
        per_seed = [statistics.median(r["seconds_per_step"]) for r in mine]
        finals = [r["test_elbo"][-1] for r in mine]
        diffs = [final[(elbo, r["seed"])] - final[(elbos[0], r["seed"])] for r in mine]
        out[elbo] = {
            "kl_mode": mine[0]["kl_mode"],
            "seconds_per_step": statistics.median(per_seed),
            "seconds_per_step_by_seed": per_seed,
            "training_seconds_mean": statistics.fmean(r["seconds"][-1] for r in mine),
            "steps": mine[0]["step"][-1],
            "final_test_elbo_mean": statistics.fmean(finals),
            "final_test_elbo_sd": statistics.stdev(finals) if len(finals) > 1 else None,
            "final_test_elbo_min": min(finals),
            "final_test_elbo_max": max(finals),
            "difference_to_first_by_seed": diffs,
        }
    return out


# -- output -----------------------------------------------------------------------------------
def _number(x: float) -> str:
    """Three significant digits, without exponents between 0.01 and 100,000."""
    if not 1e-2 <= abs(x) < 1e5:
        return f"{x:.2e}"
    return f"{x:.3g}" if abs(x) < 1e3 else f"{x:.0f}"


def markdown(result: dict[str, Any]) -> str:
    """The two tables: gradient variance, and time per step with the final test ELBO."""
    s, elbos = result["settings"], result["settings"]["elbos"]
    base = elbos[0]
    m = result["machine"]
    load = m["load_average_start"]
    lines = [
        f"`{result['command']}`: {m['device']}, {m['dtype']}, torch threads: {m['torch_threads']}, "
        f"{m['cpu_count']} CPUs"
        + (f" (load average {load[0]:.1f} at the start)" if load else "")
        + f", {result['wall_seconds']:.0f} s.",
        "",
        f"### Gradient variance at fixed parameters ({s['dataset']}, z={s['z_dim']}, hidden {s['hidden']}, "
        f"batch {s['batch_size']}, R={s['draws']} draws)",
        "",
        f"Total variance tr Cov of the gradient of the per-data-point ELBO (squared nats) under `{base}`, and each "
        f"ELBO's ratio to it with a {LEVEL:.0%} paired bootstrap interval ({s['bootstrap']} resamples). Parameters "
        f"from the `{base}` run with seed {s['seeds'][0]}. `fixed`: one minibatch, only z varies; `random`: a fresh "
        "minibatch per draw.",
        "",
        f"| point | batch | group | params | Var `{base}` | "
        + " | ".join(f"`{e}` / `{base}`" for e in elbos[1:])
        + " |",
        "| --- | --- | --- | ---: | ---: |" + " --- |" * (len(elbos) - 1),
    ]
    for point in result["gradient_variance"]["points"]:
        for group, entry in point["groups"].items():
            cells = [
                f"{entry['ratio'][e]['value']:.3f} [{entry['ratio'][e]['ci'][0]:.3f}, {entry['ratio'][e]['ci'][1]:.3f}]"
                for e in elbos[1:]
            ]
            lines.append(
                f"| {point['point']} (step {point['step']}) | {point['batches']} | {group} | {entry['num_params']} | "
                f"{_number(entry['variance'][base])} | " + " | ".join(cells) + " |"
            )
    n = len(s["seeds"])
    lines += [
        "",
        f"### Training ({s['epochs']} epochs, seeds {', '.join(map(str, s['seeds']))}, device "
        f"{m['device']}, torch threads: {m['torch_threads']})",
        "",
        f"| ELBO | KL | ms/step (median; seeds' range) | test ELBO at the end, mean ± sd over {n} seeds [min, max] | "
        f"minus `{base}`, same seed: mean [min, max] | training s |",
        "| --- | --- | --- | --- | --- | ---: |",
    ]
    for elbo, t in result["training"]["summary"].items():
        by_seed = t["seconds_per_step_by_seed"]
        sd = f" ± {t['final_test_elbo_sd']:.2f}" if t["final_test_elbo_sd"] is not None else ""
        diffs = t["difference_to_first_by_seed"]
        diff = "—" if elbo == base else f"{statistics.fmean(diffs):+.2f} [{min(diffs):+.2f}, {max(diffs):+.2f}]"
        lines.append(
            f"| `{elbo}` | {t['kl_mode']} | {1000 * t['seconds_per_step']:.2f} ({1000 * min(by_seed):.2f}–"
            f"{1000 * max(by_seed):.2f}) | {t['final_test_elbo_mean']:.2f}{sd} [{t['final_test_elbo_min']:.2f}, "
            f"{t['final_test_elbo_max']:.2f}] | {diff} | {t['training_seconds_mean']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _log_axis(ax: Any) -> None:
    """A log y axis labelled with plain numbers, minor ticks too where the range is short."""
    from matplotlib.ticker import LogFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _eager(elbo: str) -> str:
    """The estimator a compiled ELBO computes: ``jit-trace`` and ``compiled-trace`` are ``trace``."""
    return METHODS[elbo][0]


def _style(elbo: str, elbos: Sequence[str]) -> dict[str, Any]:
    """A JIT or compiled ELBO gives its eager twin's gradients draw by draw: same colour, thin line,
    crosses (JIT) or pluses (compiled)."""
    eager = _eager(elbo)
    colour = f"C{list(dict.fromkeys(_eager(e) for e in elbos)).index(eager)}"
    if METHODS[elbo][1] == "compiled":
        return {"color": colour, "marker": "+", "lw": 0.8, "ms": 8}
    if METHODS[elbo][1] == "jit":
        return {"color": colour, "marker": "x", "lw": 0.8, "ms": 7}
    return {"color": colour, "marker": "o", "lw": 1.8, "ms": 6}


def plot_variance(result: dict[str, Any], path: Path) -> None:
    """Top: total variance per group against the training point; bottom: ratios with their CIs."""
    from matplotlib.figure import Figure

    elbos = result["settings"]["elbos"]
    points = result["gradient_variance"]["points"]
    labels = list(dict.fromkeys(f"{p['point']}\nstep {p['step']}" for p in points))
    groups = list(points[0]["groups"])
    fig = Figure(figsize=(4.2 * len(groups), 7.6))
    axes = fig.subplots(2, len(groups), squeeze=False)
    for col, group in enumerate(groups):
        top, bottom = axes[0, col], axes[1, col]
        bounds = []
        for k, kind in enumerate(BATCH_KINDS):
            mine = [p for p in points if p["batches"] == kind]
            x = list(range(len(mine)))
            for i, elbo in enumerate(elbos):
                style = _style(elbo, elbos)
                fill = style["color"] if kind == "fixed" else "none"
                variance = [p["groups"][group]["variance"][elbo] for p in mine]
                top.plot(
                    x, variance, "-" if kind == "fixed" else "--", mfc=fill, label=f"{elbo}, {kind} batch", **style
                )
                if i == 0:
                    continue
                ratios = [p["groups"][group]["ratio"][elbo] for p in mine]
                offset = 0.07 * (2 * (i - 1) + k) - 0.07 * (len(elbos) - 1.5)
                value = [r["value"] for r in ratios]
                bounds += [b for r in ratios for b in r["ci"]]
                err = [
                    [v - r["ci"][0] for v, r in zip(value, ratios, strict=True)],
                    [r["ci"][1] - v for v, r in zip(value, ratios, strict=True)],
                ]
                style.pop("lw")
                bottom.errorbar([xi + offset for xi in x], value, yerr=err, ls="none", mfc=fill, capsize=3, **style)
        _log_axis(top)
        if bounds and max(bounds) > 4 * min(bounds):
            _log_axis(bottom)
        top.set_title(f"{group}: total gradient variance")
        bottom.axhline(1.0, color="grey", lw=0.8)
        bottom.set_title(f"{group}: ratio to {elbos[0]} ({LEVEL:.0%} CI)")
        for ax in (top, bottom):
            ax.set_xticks(range(len(labels)), labels)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("tr Cov (nats² per data point²)")
    axes[1, 0].set_ylabel(f"Var / Var {elbos[0]}")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(elbos), fontsize=8, frameon=False)
    s = result["settings"]
    fig.suptitle(
        f"{s['dataset']}: gradient variance at fixed parameters, R={s['draws']} draws per ELBO "
        "(filled: fixed batch, open: random batches; jit-X: crosses on X, compiled-X: pluses)"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """Test ELBO against steps and against training seconds: mean over seeds, band from min to max."""
    from matplotlib.figure import Figure

    runs, elbos = result["training"]["runs"], result["settings"]["elbos"]
    fig = Figure(figsize=(11.0, 4.2))
    axes = fig.subplots(1, 2)
    lowest = math.inf
    for elbo in elbos:
        mine = [r for r in runs if r["elbo"] == elbo]
        curves = list(zip(*(r["test_elbo"] for r in mine), strict=True))
        mean = [statistics.fmean(c) for c in curves]
        low, high = [min(c) for c in curves], [max(c) for c in curves]
        lowest = min(lowest, *low[1:]) if len(low) > 1 else min(lowest, *low)
        for ax, key in zip(axes, ("step", "seconds"), strict=True):
            x = [statistics.fmean(c) for c in zip(*(r[key] for r in mine), strict=True)]
            style = _style(elbo, elbos)
            ls = "-" if elbo == _eager(elbo) else "--"
            ax.plot(x, mean, ls, label=f"{elbo} ({mine[0]['kl_mode']} KL)", **style)
            ax.fill_between(x, low, high, color=style["color"], alpha=0.2, lw=0)
    top = max(max(r["test_elbo"]) for r in runs)
    clipped = any(r["test_elbo"][0] < lowest for r in runs)
    for ax, xlabel in zip(axes, ("SVI steps", "training seconds (mean over seeds)"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test ELBO (nats per image)")
        ax.set_ylim(lowest - 0.05 * (top - lowest), top + 0.05 * (top - lowest))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    s = result["settings"]
    note = " (step 0, the initialisation, is below the axis)" if clipped else ""
    fig.suptitle(f"{s['dataset']}: test ELBO, mean and min–max over {len(s['seeds'])} seeds{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# -- command line -----------------------------------------------------------------------------
def refuse(message: str) -> NoReturn:
    """A setting that cannot be measured: one line on stderr and exit code 2, before any training."""
    print(f"kl_estimators.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def default_dataset() -> tuple[str, str]:
    """Fashion-MNIST where its IDX files are installed, else the embedded digits; and why."""
    folder = DEFAULT_DATA_DIRS.get("fashion-mnist")
    if folder and Path(folder).is_dir():
        return "fashion-mnist", f"--dataset not given: Fashion-MNIST found in {folder}"
    return "digits", f"--dataset not given: no Fashion-MNIST in {folder}, so the 8x8 digits"


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="digits, small network, few epochs (17 s with --threads 1 on 2 CPU cores)"
    )
    parser.add_argument("--dataset", help="a pyrovae data set (default: fashion-mnist where installed, else digits)")
    parser.add_argument("--data-dir", help="folder of the IDX files of mnist / fashion-mnist")
    parser.add_argument(
        "--elbos",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from {', '.join(METHODS)}; the first is the baseline (compiled-* are the eager "
        "estimators' numbers draw by draw, after seconds of compiling per model: not run by default)",
    )
    parser.add_argument("--z-dim", type=int)
    parser.add_argument("--hidden", help="hidden widths, e.g. 256 or 512,256")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...); 3 or more for a spread")
    parser.add_argument("--draws", type=int, help="R, gradient estimates per ELBO and point (100 or more)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the ratio CIs")
    parser.add_argument("--eval-particles", type=int, default=1, help="samples per test image for the test ELBO")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 gives steadier timings on a shared machine)",
    )
    parser.add_argument("--out", help=OUT_HELP)
    args = parser.parse_args(argv)
    args.dataset_chosen = "--dataset" if args.dataset is not None else "--quick"
    for key, value in PRESETS["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.dataset is None:
        args.dataset, args.dataset_chosen = default_dataset()
    args.elbos = [e.strip() for e in args.elbos.split(",") if e.strip()]
    unknown = [e for e in args.elbos if e not in METHODS]
    if unknown or not args.elbos or len(set(args.elbos)) != len(args.elbos):
        refuse(f"--elbos must be distinct names from {', '.join(METHODS)}; got {','.join(args.elbos) or '(none)'}")
    try:
        args.hidden_dims = tuple(int(h) for h in args.hidden.split(","))
    except ValueError:
        refuse(f"--hidden must be comma-separated integers such as 512,256; got {args.hidden!r}")
    for key, least in (
        ("z_dim", 1),
        ("epochs", 1),
        ("batch_size", 1),
        ("seeds", 1),
        ("draws", 3),
        ("bootstrap", 100),
        ("eval_particles", 1),
        ("threads", 1),
    ):
        value = getattr(args, key)
        if value is not None and value < least:
            refuse(f"--{key.replace('_', '-')} must be at least {least}, got {value}")
    if not args.lr > 0:
        refuse(f"--lr must be > 0, got {args.lr}")
    try:
        args.resolved_device = resolve_device(args.device)
    except ValueError as error:
        refuse(str(error))
    if args.draws < 100:
        warnings.warn(f"--draws {args.draws} < 100: the variance ratios' intervals will be wide", stacklevel=2)
    if args.seeds < 3:
        warnings.warn(f"--seeds {args.seeds} < 3: the spread over seeds means little", stacklevel=2)
    return parser, args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return what was written to ``kl_estimators.json``."""
    parser, args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _run(parser, args, argv)
    finally:
        torch.set_num_threads(threads)  # a caller's process keeps its own setting


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    wall = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    device = args.resolved_device
    binarization = "dynamic"
    try:
        data = load_dataset(args.dataset, binarization, data_dir=args.data_dir)
    except ValueError as error:
        refuse(str(error))
    if args.batch_size > data.train.shape[0]:
        refuse(
            f"--batch-size {args.batch_size} is larger than the {data.train.shape[0]} training rows of "
            f"{args.dataset} ({args.dataset_chosen}): pass --batch-size {data.train.shape[0]} or less"
        )
    seeds = list(range(args.seeds))
    out = results_folder(args.out, NAME)

    def make_vae() -> VAE:
        return VAE(data.x_dim, z_dim=args.z_dim, hidden_dims=args.hidden_dims, image_shape=data.image_shape)

    print(
        f"kl_estimators: {args.dataset} ({args.dataset_chosen}; train {data.train.shape[0]}, test "
        f"{data.test.shape[0]}, x_dim {data.x_dim}, {binarization} binarization), z={args.z_dim}, "
        f"hidden {args.hidden}, batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs, seeds {seeds}, "
        f"device {device}, dtype float32, "
        f"{torch.get_num_threads()} torch threads; ELBOs {', '.join(args.elbos)}"
    )
    print("training curves:")
    runs, snapshots = train_runs(make_vae, data, args.elbos, seeds, args, device)
    print(f"gradient variance: R={args.draws} draws per ELBO and point, parameters of {args.elbos[0]} seed {seeds[0]}")
    vae = make_vae().to(device)
    variance = measure_gradient_variance(
        vae, snapshots, data, args.elbos, args.batch_size, args.draws, args.bootstrap, seed=seeds[0]
    )
    settings = {
        "dataset": args.dataset,
        "dataset_chosen": args.dataset_chosen,
        "train_size": data.train.shape[0],
        "test_size": data.test.shape[0],
        "x_dim": data.x_dim,
        "binarization": binarization,
        "z_dim": args.z_dim,
        "hidden": args.hidden,
        "likelihood": "bernoulli",
        "prior": "normal",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seeds": seeds,
        "draws": args.draws,
        "bootstrap": args.bootstrap,
        "eval_particles": args.eval_particles,
        "elbos": args.elbos,
        "quick": args.quick,
    }
    result = {
        "benchmark": NAME,
        "command": " ".join(["python", "benchmarks/kl_estimators.py", *(sys.argv[1:] if argv is None else argv)]),
        "settings": settings,
        "kl_mode": {e: kl_modes(vae, METHODS[e][0])["z"] for e in args.elbos},
        "machine": {
            "device": str(device),
            "dtype": "float32",
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "pyro": pyro.__version__,
                "pyrovae": pyrovae.__version__,
            },
        },
        "gradient_variance": {
            "definition": "total variance = sum over parameters of the sample variance (R - 1) of the R gradient "
            "estimates of the per-data-point ELBO; ratio = total variance of an ELBO / that of the first ELBO",
            "interval": f"{LEVEL:.0%} percentile bootstrap over the R draws, the same resampled indices for every "
            "ELBO (draw r of every ELBO uses the same seed and minibatch)",
            "draws": args.draws,
            "points": variance,
        },
        "training": {"summary": training_summary(runs, args.elbos), "runs": runs},
    }
    result["wall_seconds"] = time.perf_counter() - wall
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    (out / f"{NAME}.md").write_text(table)
    plot_variance(result, out / f"{NAME}_variance.png")
    plot_curves(result, out / f"{NAME}_curves.png")
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=1) + "\n")
    print()
    print(table)
    print(f"wrote {out}/{NAME}.json, .md, _variance.png, _curves.png in {result['wall_seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
