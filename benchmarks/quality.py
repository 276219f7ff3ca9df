"""Model quality against published numbers: test log-likelihood on dynamically binarized Fashion-MNIST.

    python benchmarks/quality.py --models mlp-vamp --components 100 --minutes 10 --n 500 --full-test-after
                                                                            # this project's 2-core CPU
    python benchmarks/quality.py --minutes 30 --device cuda --models conv-hvae-vamp   # one H100/H200

The protocol of the published table (Exemplar VAE paper: S. Norouzi, D. J. Fleet, M. Norouzi,
"Exemplar VAE: linking generative models, nearest neighbor retrieval, and data augmentation",
NeurIPS 2020, table of density estimation; numbers below): Fashion-MNIST's 60,000 training images,
binarized afresh every epoch (dynamic binarization), ``--validation`` of them (10,000 by default,
a fixed random choice) held out to select the model (the epoch with the best validation ELBO:
never the test set), and at the end the IWAE estimate of log p(x) with k = 5000 importance samples
(eq. 7), averaged over the test set, which is binarized once with a fixed seed. The table
reports -log p(x) in nats, lower is better, beside the published numbers.

Each model of ``--models`` (see :data:`MODELS`) is trained by :func:`pyrovae.fit` under one time
budget for the whole command, ``--minutes``: the evaluation time is estimated first (from a timed
piece of the IWAE), the rest is shared equally between the models, and each model trains with a
learning rate that falls along a cosine *in time*, from ``--lr`` at the start of its share to 0 at
its end, until the next epoch would overrun the share (:func:`train`); it then keeps its best
epoch's parameters. The KL term is warmed up linearly over the first ``--kl-warmup`` steps (20,000
by default: 40 epochs at batch 100; the VampPrior paper warms up over its first 100 epochs), and the
step runs under the ``compiled`` engine unless ``--engine`` says otherwise. On a CPU, k = 5000 over
the whole test set takes longer than the training: ``--n`` evaluates the first N test images only,
and the report says so; ``--full-test-after`` then evaluates the same models on the whole test set
*after* the timed command (not counted in the budget) and reports that number beside it. The
standard error over the test points is reported beside every number.

Writes ``quality.json`` and ``quality.md`` (``quality_cuda.*`` on a GPU) under ``--out``, with the
machine, its load average before and after, the time, the command and the commit.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

import pyro
import torch
from _provenance import OUT_HELP, HelpFormatter, commit, results_folder, write_report  # noqa: I001 (this folder's helper)

from pyrovae import FitOptions, evaluate, fit, load_dataset
from pyrovae.config import resolve_device
from pyrovae.data import Dataset
from pyrovae.models import make_vae

#: published -log p(x) in nats on dynamically binarized Fashion-MNIST (Exemplar VAE paper, density estimation)
SOURCE = "Norouzi, Fleet & Norouzi, Exemplar VAE, NeurIPS 2020: density estimation, dynamically binarized Fashion-MNIST"
#: the data set of the published numbers and the targets
PROTOCOL_DATASET = "fashion-mnist"
#: the issue's targets: -log p(x) at most this, within this many minutes, by device type
TARGETS = {"cpu": (230.0, 10.0), "cuda": (224.5, 30.0)}


@dataclass(frozen=True)
class ModelSpec:
    """One row of the table: the model pyrovae trains, and the published model it is compared with."""

    published: float
    published_model: str
    latents: int = 1
    arch: str = "mlp"
    prior: str = "normal"
    components: int = 500
    hidden_dims: tuple[int, ...] = (300, 300)
    channels: tuple[int, ...] = (32, 64)
    z_dim: int = 40

    def options(self, components: int | None = None) -> dict[str, Any]:
        """The arguments of :func:`pyrovae.models.make_vae` (``components`` overrides the VampPrior's K)."""
        k = (components or self.components) if self.prior == "vamp" else 1
        return dict(
            latents=self.latents, arch=self.arch, prior=self.prior, prior_components=k, hidden_dims=self.hidden_dims,
            channels=self.channels, z_dim=self.z_dim,
        )  # fmt: skip

    def describe(self, components: int | None = None) -> str:
        o = self.options(components)
        body = f"conv {'-'.join(map(str, self.channels))} + dense {'-'.join(map(str, self.hidden_dims))}"
        body = body if self.arch == "conv" else f"MLP {'-'.join(map(str, self.hidden_dims))}"
        levels = f"two levels z1 = z2 = {self.z_dim}" if self.latents == 2 else f"z = {self.z_dim}"
        prior = f"VampPrior (K = {o['prior_components']})" if self.prior == "vamp" else "N(0, I) prior"
        return f"{body} (ReLU), {levels}, {prior}"

    def build(self, data: Dataset, components: int | None = None) -> torch.nn.Module:
        vae = make_vae(data.x_dim, image_shape=data.image_shape, **self.options(components))
        vae.prior.initialize_from_data(data.train)  # the VampPrior's pseudo-inputs start at training images
        return vae


MODELS: dict[str, ModelSpec] = {
    "mlp-normal": ModelSpec(228.70, "VAE, Gaussian prior"),
    "mlp-vamp": ModelSpec(227.35, "VAE, VampPrior", prior="vamp"),
    "mlp-hvae-vamp": ModelSpec(224.67, "convolutional hierarchical VAE, VampPrior", latents=2, prior="vamp"),
    "conv-hvae-vamp": ModelSpec(
        224.67, "convolutional hierarchical VAE, VampPrior", latents=2, arch="conv", prior="vamp", hidden_dims=(300,)
    ),
}


def refuse(message: str) -> NoReturn:
    """An impossible setting: one line on stderr and exit code 2, before anything is trained."""
    print(f"quality.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _machine(device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": str(device),
        "gpu": gpu,
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models", default="mlp-normal,mlp-vamp,mlp-hvae-vamp", help=f"of {', '.join(MODELS)}")
    parser.add_argument("--minutes", type=float, default=10.0, help="time budget of the whole command")
    parser.add_argument("--n", type=int, default=None, help="evaluate the first N test images (default: all)")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per test image")
    parser.add_argument("--chunk-size", type=int, default=None, help="draws per evaluation pass (default: evaluate's)")
    parser.add_argument("--validation", type=int, default=10_000, help="training images held out for selection")
    parser.add_argument("--patience", type=int, default=0, help="early stopping (0: run the planned epochs)")
    parser.add_argument("--components", type=int, default=None, help="VampPrior pseudo-inputs (default: 500)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak of the cosine schedule")
    parser.add_argument("--clip-norm", type=float, default=0.0)
    parser.add_argument(
        "--kl-warmup",
        type=int,
        default=20_000,
        help="steps of a linear KL warm-up from 0 to 1 (0: none; fit's --kl-warmup)",
    )
    parser.add_argument("--engine", default="compiled", help="fit's --engine (compiled: measured fastest here)")
    parser.add_argument(
        "--full-test-after",
        action="store_true",
        help="with --n: after the timed command, evaluate the models on the whole test set too (outside the budget)",
    )
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (the protocol's), or digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help=OUT_HELP)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[list[str], Dataset, torch.device]:
    """Check the settings and load the data; an impossible setting is refused in one line."""
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        refuse(f"unknown --models {','.join(unknown) or '(none)'}: choose from {', '.join(MODELS)}")
    if not args.minutes > 0:
        refuse(f"--minutes must be > 0, got {args.minutes}")
    for name in ("k", "batch_size", "max_epochs"):
        if getattr(args, name) < 1:
            refuse(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        device = resolve_device(args.device)
        data = load_dataset(args.dataset, binarization="dynamic", data_dir=args.data_dir)
    except ValueError as error:
        refuse(str(error))
    if args.n is not None and not 1 <= args.n <= data.test.shape[0]:
        refuse(f"--n must be between 1 and the {data.test.shape[0]} test images, got {args.n}")
    if not 0 < args.validation < data.train.shape[0]:
        refuse(f"--validation must be between 1 and {data.train.shape[0] - 1}, got {args.validation}")
    if args.batch_size > data.train.shape[0] - args.validation:
        refuse(f"--batch-size {args.batch_size} is more than the {data.train.shape[0] - args.validation} training rows")
    return names, data, device


def _eval_seconds(vae: torch.nn.Module, x: torch.Tensor, k: int, chunk_size: int | None) -> float:
    """The time of ``evaluate`` on ``x`` with ``k`` draws, from a timed piece (20 points, k/10 draws)."""
    piece, draws = x[:20], max(21, k // 10)
    evaluate(vae, piece[:2], k=21, seed=0, chunk_size=chunk_size)  # warm-up
    start = time.perf_counter()
    evaluate(vae, piece, k=draws, seed=0, chunk_size=chunk_size)
    return (time.perf_counter() - start) * (x.shape[0] / piece.shape[0]) * (k / draws)


class _TimeUpError(Exception):
    """A model's share of the budget would be overrun by one more epoch."""


def annealed_lr(peak: float, elapsed: float, share: float) -> float:
    """The cosine schedule in time: ``peak`` at the start of a model's share, 0 at its end."""
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, max(0.0, elapsed / share))))


def train(name: str, data: Dataset, args: argparse.Namespace, device: torch.device, deadline: float) -> dict:
    """Train one model until ``deadline``; returns its row of the table and the model (:func:`main`
    adds the test numbers).

    The learning rate follows a cosine in *time*: before each epoch it is set from the share of
    the budget used so far (:func:`annealed_lr`), so that it reaches 0 when the share ends however
    fast this machine runs meanwhile (a shared machine's speed changes from minute to minute, and an
    epoch count planned at the start would end the schedule too early or not at all). Training
    stops before the first epoch that would overrun the share, at the latest at ``--max-epochs``,
    and the model keeps its best epoch's parameters (the validation ELBO's).
    """
    spec = MODELS[name]
    engine = args.engine
    pyro.set_rng_seed(args.seed)
    vae = spec.build(data, args.components).to(device)
    start = time.perf_counter()
    share = deadline - start
    print(f"{name}: {share / 60:.1f} min of training, engine {engine}", flush=True)
    train_data = Dataset(data.name, data.train, data.test[:0], data.image_shape, dynamic_binarization=True)
    seen: dict[str, Any] = {}

    def schedule(state: Any) -> None:  # set the next epoch's rate; stop before an epoch that would overrun
        if state.event != "epoch":
            return
        seen["history"], seen["selection"] = state.history, state.selection
        now = time.perf_counter()
        per_epoch = (now - start) / state.record["epoch"]
        state.record["lr"] = state.optimizer.param_groups[0]["lr"]
        if now + per_epoch > deadline and state.record["epoch"] < args.max_epochs:
            state.selection.restore(state.vae)
            raise _TimeUpError
        rate = min(state.record["lr"], annealed_lr(args.lr, now - start, share - per_epoch))  # never back up
        for group in state.optimizer.param_groups:
            group["lr"] = rate

    try:
        fit(
            vae,
            train_data,
            FitOptions(
                epochs=args.max_epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                clip_norm=args.clip_norm,
                kl_warmup=args.kl_warmup,
                validation=args.validation,
                patience=args.patience,
                engine=engine,
                seed=args.seed,
            ),
            callbacks=[schedule],
            log=lambda line: print(f"  {line}", flush=True),
        )
        stopped = False
    except _TimeUpError:
        stopped = True
    history, selection = seen["history"], seen["selection"]
    return {
        "name": name,
        "model": {**asdict(spec), **spec.options(args.components), "description": spec.describe(args.components)},
        "parameters": sum(p.numel() for p in vae.parameters()),
        "engine": engine,
        "epochs_run": len(history.epochs),
        "best_epoch": selection.best_epoch,
        "best_validation_elbo": selection.best_elbo,
        "stopped_at_deadline": stopped,
        "stopped_early": bool(history.stopped_early),
        "train_seconds": time.perf_counter() - start,
        "validation_elbos": [r["validation_elbo"] for r in history.epochs],
        "learning_rates": [r["lr"] for r in history.epochs],
    }, vae


def published(row: dict[str, Any]) -> str:
    return "-" if row["published"] is None else f"{row['published']:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The table of pyrovae's numbers beside the published ones, and what was measured how."""
    s = report["settings"]
    lines = [
        "| model | pyrovae -log p(x) (nats) | published | published model | epochs (best) | train min | eval min |"
        " PSIS k-hat median |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['name']}: {r['model']['description']} | **{r['nll']:.2f}** ± {r['nll_se']:.2f} | "
            f"{published(r)} | {r['model']['published_model']} | "
            f"{r['epochs_run']} ({r['best_epoch']}) | "
            f"{r['train_seconds'] / 60:.1f} | {r['eval_seconds'] / 60:.1f} | "
            f"{'-' if r['khat_median'] is None else format(r['khat_median'], '.2f')} |"
        )
    target = report["target"]
    test = f"the first {s['n']} of {s['test_size']} test images" if s["n"] < s["test_size"] else "all test images"
    lines += [
        "",
        f"-log p(x): IWAE with k = {s['k']} on {test} of {s['dataset']} (± one standard error over those "
        f"images); published: {SOURCE}.",
        f"Protocol: dynamic binarization, {s['validation']} training images held out for model selection "
        f"(best validation ELBO), Adam with a learning rate from {s['lr']:g} down to 0 along a cosine in time, "
        f"batch {s['batch_size']}"
        + (f", a KL warm-up over the first {s['kl_warmup']} steps" if s.get("kl_warmup") else "")
        + f"; one {s['minutes']:g}-minute budget for the whole command, {report['seconds'] / 60:.1f} minutes used.",
    ]
    for r in report["results"]:
        if "full_test" in r:
            f = r["full_test"]
            lines.append(
                f"After the timed command (not counted in its budget), the same {r['name']} model on all {f['n']} "
                f"test images: -log p(x) = **{f['nll']:.2f}** ± {f['nll_se']:.2f} nats (IWAE, k = {s['k']}; "
                f"{f['seconds'] / 60:.1f} minutes)."
            )
    if target is None:
        lines.append(f"No target: the published numbers and the targets are for {PROTOCOL_DATASET}.")
    else:
        lines.append(
            f"Target ({report['machine']['device'].split(':')[0]}): -log p(x) <= {target['nll']} within "
            f"{target['minutes']:g} minutes: **{'met' if target['met'] else 'not met'}** (best "
            f"{target['best_nll']:.2f} by {target['best_model']}, {report['seconds'] / 60:.1f} minutes"
            + ("" if s["n"] == s["test_size"] else f"; on {s['n']} test images, not the whole test set")
            + ")."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    began, began_at, load_before = time.perf_counter(), time.localtime(), os.getloadavg()
    names, data, device = plan(args)
    n = args.n or data.test.shape[0]
    test = data.test[:n].to(device)
    args.out = results_folder(args.out, "quality")
    print(f"quality: {data.name}, {data.train.shape[0]} training images ({args.validation} held out for selection), "
          f"IWAE k={args.k} on {n} of {data.test.shape[0]} test images, models {', '.join(names)}, "
          f"{args.minutes:g} minutes, device {device}", flush=True)  # fmt: skip
    deadline = began + 60 * args.minutes
    # the evaluations come last: estimate them first, from a model of each kind as it starts
    eval_estimates = {}
    for name in names:
        pyro.set_rng_seed(args.seed)
        vae = MODELS[name].build(data, args.components).to(device)
        eval_estimates[name] = _eval_seconds(vae, test, args.k, args.chunk_size)
    print("estimated evaluation minutes: " + ", ".join(f"{k} {v / 60:.1f}" for k, v in eval_estimates.items()),
          flush=True)  # fmt: skip
    evaluation = sum(eval_estimates.values())
    if evaluation > 0.8 * (deadline - time.perf_counter()):
        refuse(
            f"the evaluations alone would take about {evaluation / 60:.1f} of the {args.minutes:g} minutes "
            f"(k={args.k} on {n} test images, timed on this machine now): lower --n or --k, or raise --minutes"
        )
    results, trained = [], {}
    for i, name in enumerate(names):
        # (a margin for the evaluations' estimate, which a timed piece makes from a fresh model on a
        # machine whose speed changes: 50 %, and 10 s for writing the report)
        left = deadline - time.perf_counter() - 1.5 * sum(eval_estimates.values()) - 10.0
        row, vae = train(name, data, args, device, time.perf_counter() + left / (len(names) - i))
        start = time.perf_counter()
        result = evaluate(vae, test, k=args.k, seed=args.seed, chunk_size=args.chunk_size)
        summary = result.summary()
        row.update(
            published=MODELS[name].published if data.name == PROTOCOL_DATASET else None,
            nll=-summary["log_px"], nll_se=summary["log_px_se"], elbo=summary["elbo"],
            khat_median=summary["khat_median"], active_units=summary["active_units"],
            eval_seconds=time.perf_counter() - start, eval_estimate_seconds=eval_estimates.pop(name),
        )  # fmt: skip
        print(f"{name}: -log p(x) = {row['nll']:.2f} ± {row['nll_se']:.2f} nats (published {published(row)}); "
              f"{row['eval_seconds'] / 60:.1f} min of evaluation", flush=True)  # fmt: skip
        results.append(row)
        trained[name] = vae
    seconds = time.perf_counter() - began
    nll, minutes = TARGETS["cuda" if device.type == "cuda" else "cpu"]
    best = min(results, key=lambda r: r["nll"])
    target = None
    if data.name == PROTOCOL_DATASET:  # the targets and the published numbers are Fashion-MNIST's
        met = best["nll"] <= nll and seconds <= 60 * minutes
        target = {"nll": nll, "minutes": minutes, "best_nll": best["nll"], "best_model": best["name"], "met": met}
    if args.full_test_after and n < data.test.shape[0]:  # outside the budget: `seconds` is measured
        whole = data.test.to(device)
        for row in results:
            start = time.perf_counter()
            summary = evaluate(trained[row["name"]], whole, k=args.k, seed=args.seed, chunk_size=args.chunk_size)
            summary = summary.summary()
            row["full_test"] = {
                "n": whole.shape[0], "nll": -summary["log_px"], "nll_se": summary["log_px_se"],
                "seconds": time.perf_counter() - start,
            }  # fmt: skip
            print(f"{row['name']}: on all {whole.shape[0]} test images (after the budget): -log p(x) = "
                  f"{row['full_test']['nll']:.2f} ± {row['full_test']['nll_se']:.2f} nats", flush=True)  # fmt: skip
    report = {
        "results": results,
        "target": target,
        "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "n": n, "test_size": data.test.shape[0]},
        "published_source": SOURCE,
        "seconds": seconds,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "machine": _machine(device),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", began_at),
        "command": " ".join(["python benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": commit(),
    }
    table = markdown(report)
    m = report["machine"]
    header = (
        f"pyrovae on {data.name}: {m['gpu'] or m['processor']} ({m['device']}, {m['cpu_count']} cores, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}, pyro {m['pyro']}); started {report['started']}, "
        f"load average {report['load_average_before'][0]:.2f} before and {report['load_average_after'][0]:.2f} after "
        f"(1 min); commit {report['commit'] or 'unknown'}; `{report['command']}`"
    )
    print(f"\n{header}\n\n{table}")
    write_report(args.out, "quality", device.type, report, header, table)
    return report


if __name__ == "__main__":
    main()
