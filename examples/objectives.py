"""Train one VAE with each objective on Fashion-MNIST and measure what each one bought.

    python examples/objectives.py --out docs/results/objectives

For every objective the same network, data, seed, optimizer and number of steps; then, on the
test set: the test ELBO (eq. 11, always the ELBO whatever was optimised), the importance-weighted
log p(x) (k draws per image on the first --n-eval test images), the mean closed-form
KL(q(z|x) || p(z)) (eq. 18), the squared MMD between the aggregate posterior and the prior (one
code per image of those --n-eval, against as many prior draws; eq. 29, imq kernel), the active
units, and the seconds the training steps took. Writes objectives.md (the table) and objectives.json (every number
and the settings) to --out.

--dataset digits runs offline (the test suite runs it that way, with tiny settings).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyro
import torch

from pyrovae import VAE, FitOptions, evaluate, fit, load_dataset
from pyrovae.data import Dataset
from pyrovae.infer import describe_objective, make_elbo
from pyrovae.models.mmd import mmd

#: name -> (what the table calls it, fit options besides the shared ones)
OBJECTIVES: dict[str, tuple[str, dict]] = {
    "meanfield": ("meanfield (the ELBO)", dict(elbo="meanfield")),
    "iwae-5": ("iwae, K = 5, DReG", dict(elbo="iwae", particles=5)),
    "iwae-50": ("iwae, K = 50, DReG", dict(elbo="iwae", particles=50)),
    "infovae": ("infovae, α = 0, λ = 1000, imq", dict(elbo="infovae")),
    "infovae-alpha-1": ("infovae, α = 1, λ = 1000, imq (no per-point KL)", dict(elbo="infovae", infovae_alpha=1.0)),
    "beta-0.5": ("meanfield, β = 0.5", dict(elbo="meanfield", beta=0.5)),
    "beta-2": ("meanfield, β = 2", dict(elbo="meanfield", beta=2.0)),
    "warmup": ("meanfield, KL warm-up over the first third", dict(elbo="meanfield", kl_warmup=-1)),
    "free-bits": ("meanfield, free bits 0.25 nats", dict(elbo="meanfield", free_bits=0.25)),
}


def subset(data: Dataset, n_train: int) -> Dataset:
    return Dataset(data.name, data.train[:n_train], data.test, data.image_shape,
                   dynamic_binarization=data.dynamic_binarization)  # fmt: skip


@torch.no_grad()
def aggregate_mmd(vae: VAE, x: torch.Tensor, seed: int) -> float:
    """Unbiased squared MMD between one code per row of ``x`` and as many prior draws (imq, eq. 29-30)."""
    generator = torch.Generator().manual_seed(seed)
    loc, scale = vae.encoder(x)
    codes = loc + scale * torch.randn(loc.shape, generator=generator)
    prior = torch.randn(loc.shape, generator=generator)  # the normal prior N(0, I)
    return float(mmd(codes, prior))


def run(name: str, options: dict, data: Dataset, args: argparse.Namespace) -> dict:
    options = dict(options)  # (kl_warmup -1: a third of the run's steps)
    steps = args.epochs * -(-data.train.shape[0] // args.batch_size)
    if options.get("kl_warmup") == -1:
        options["kl_warmup"] = max(1, steps // 3)
    pyro.set_rng_seed(args.seed)
    vae = VAE(data.x_dim, z_dim=args.z_dim, hidden_dims=(args.hidden,), image_shape=data.image_shape)
    start = time.perf_counter()
    history = fit(
        vae,
        data,
        FitOptions(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            engine="eager",
            eval_particles=args.eval_particles,
            **options,
        ),
    )
    seconds = time.perf_counter() - start
    x = data.test[: args.n_eval]
    summary = evaluate(vae, x, k=args.k, seed=args.seed, psis=False).summary()
    last = history.last
    particles = options.pop("particles", 1)
    row = {
        "objective": name,
        "options": {"particles": particles, **options},
        "optimised": describe_objective(make_elbo(options.pop("elbo"), particles, **options)),
        "train_objective": last.get("train_objective", last["train_elbo"]),
        "train_elbo": last["train_elbo"],
        "test_elbo": last["test_elbo"],
        "log_px": summary["log_px"],
        "log_px_se": summary["log_px_se"],
        "kl": summary["kl_analytic"],
        "mmd": aggregate_mmd(vae, x, args.seed),
        "active_units": summary["active_units"],
        "seconds": seconds,  # fit: training and the per-epoch ELBOs
        "train_seconds": sum(r["seconds"] for r in history.epochs),  # the training steps alone
    }
    print(f"{name:>44}: objective {row['train_objective']:9.2f}  test ELBO {row['test_elbo']:8.2f}  "
          f"log p(x) {row['log_px']:8.2f}  KL {row['kl']:6.2f}  MMD {row['mmd']:.4f}  "
          f"AU {row['active_units']:>2}/{args.z_dim}  {row['train_seconds']:6.1f} s", flush=True)  # fmt: skip
    return row


def table(rows: list[dict], args: argparse.Namespace) -> str:
    header = (
        f"| objective | train objective (nats) | test ELBO (nats) | log p(x), IWAE k={args.k} (nats) | "
        f"KL(q(z|x) ‖ p(z)) | MMD²(q(z), p(z)) | active units (of {args.z_dim}) | training seconds |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['objective']} | {r['train_objective']:.2f} | {r['test_elbo']:.2f} | "
            f"{r['log_px']:.2f} ± {r['log_px_se']:.2f} | {r['kl']:.2f} | {r['mmd']:.4f} | {r['active_units']} | "
            f"{r['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring above as written, and the default of every option."""


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--n-train", type=int, default=60_000, help="training rows used (the first ones)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--z-dim", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--eval-particles", type=int, default=1, help="samples per test image for the test ELBO")
    parser.add_argument("--n-eval", type=int, default=10_000, help="test images for log p(x), KL, MMD, active units")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per test image for log p(x)")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated names from the list")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (None: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="objectives", help="directory for objectives.md and objectives.json")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.objectives.split(",")]
    unknown = [name for name in names if name not in OBJECTIVES]
    if unknown:
        parser.error(f"unknown objectives {unknown}; choose from: {', '.join(OBJECTIVES)}")

    data = subset(load_dataset(args.dataset, "dynamic"), args.n_train)
    args.n_eval = min(args.n_eval, data.test.shape[0])
    print(f"{args.dataset}: {data.train.shape[0]} training rows, {data.test.shape[0]} test rows "
          f"(log p(x), KL, MMD and active units on the first {args.n_eval}, k={args.k}); z={args.z_dim}, "
          f"hidden={args.hidden}, batch {args.batch_size}, {args.epochs} epochs, Adam lr {args.lr}, seed {args.seed}, "
          f"{torch.get_num_threads()} torch threads", flush=True)  # fmt: skip
    rows = [run(*OBJECTIVES[name], data, args) for name in names]
    text = table(rows, args)
    print()
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "objectives.md").write_text(text + "\n")
    settings = {**vars(args), "n_train": data.train.shape[0], "n_test": data.test.shape[0]}
    versions = {"torch": torch.__version__, "pyro": pyro.__version__}
    (out / "objectives.json").write_text(json.dumps({"settings": settings, "versions": versions, "rows": rows},
                                                    indent=2) + "\n")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
