"""The ``pyrovae`` command line: parses options, calls the library, turns errors into one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from click.core import ParameterSource

from .config import DEVICES, DTYPES, FitConfig
from .data import BINARIZE, DATASETS, is_array_path
from .infer.elbo import ELBOS
from .models.likelihoods import LIKELIHOODS
from .models.priors import PRIORS


def _hidden(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated positive integers such as 400 or 512,256; got {value!r}"
        ) from None
    if not dims or min(dims) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return dims


def _dataset(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value in DATASETS or is_array_path(value):
        return value
    raise click.BadParameter(f"expected one of {', '.join(DATASETS)} or a path to a .npy/.npz file, got {value!r}")


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise click.BadParameter(f"expected one of {', '.join(DEVICES)} or cuda:N, got {value!r}")


_DEVICE = click.option(
    "--device", default="auto", show_default=True, callback=_device, help="cpu, cuda, cuda:N or auto."
)
_PROGRESS = click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
_SEED = click.IntRange(min=0, max=2**32 - 1)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """The library's ValueErrors (bad input) become click's one-line ``Error: ...`` and exit 1."""
    try:
        yield
    except ValueError as error:
        raise click.ClickException(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pyrovae")
def main() -> None:
    """pyrovae: variational autoencoders on Pyro.

    The generative model p(x|z)p(z) is a Pyro model, q(z|x) a Pyro guide, trained by SVI with
    Trace_ELBO (Monte Carlo KL) or TraceMeanField_ELBO (analytic KL).
    """


@main.command("fit")
@click.option(
    "--dataset",
    default="digits",
    show_default=True,
    callback=_dataset,
    metavar="NAME|PATH",
    help="Data set: digits = scikit-learn's 8x8 digits (embedded, offline); fashion-mnist = the four IDX "
    "files (raw or .gz) in --data-dir, by default /usr/share/datasets/fashion-mnist "
    "(apt-get install dataset-fashion-mnist); mnist = the four IDX files in --data-dir; or a .npy/.npz "
    "file of your own: an array (N, ...), or an .npz with x [y] or train, test [train_labels, test_labels].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the IDX files of mnist / fashion-mnist.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of the data held out for testing when the data set gives no split (digits, .npy, .npz with x).",
)
@click.option(
    "--binarize",
    type=click.Choice(("auto", *BINARIZE)),
    default="auto",
    show_default=True,
    help="Binarize grey levels: static (one fixed draw), dynamic (fresh draw each epoch); "
    "auto = dynamic for bernoulli, none for gaussian. The test set is always drawn once.",
)
@click.option(
    "--elbo",
    type=click.Choice(list(ELBOS)),
    default="meanfield",
    show_default=True,
    help="meanfield = TraceMeanField_ELBO (analytic KL), trace = Trace_ELBO (Monte Carlo KL), compiled-* = the same "
    "with loss and gradient compiled by torch.compile (seconds to compile, then faster steps), jit-* = Pyro's JIT.",
)
@click.option(
    "--particles",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Samples of z per data point per step.",
)
@click.option(
    "--likelihood",
    type=click.Choice(LIKELIHOODS),
    default="bernoulli",
    show_default=True,
    help="p(x|z): bernoulli (eq. 13) or gaussian (eq. 14).",
)
@click.option(
    "--sigma",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Gaussian likelihood sigma (initial value with --learn-sigma).",
)
@click.option("--learn-sigma", is_flag=True, help="Learn a per-pixel sigma (gaussian likelihood).")
@click.option(
    "--prior",
    type=click.Choice(PRIORS),
    default="normal",
    show_default=True,
    help="p(z): normal = N(0, I); gaussian = learned diagonal Gaussian; mog = learned mixture of "
    "Gaussians; vamp = VampPrior (learned pseudo-inputs); flow = N(0, I) through learned "
    "autoregressive maps. The KL mode each one gets is printed at the start.",
)
@click.option(
    "--prior-components",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Mixture components K of the mog and vamp priors.",
)
@click.option("--z-dim", type=click.IntRange(min=1), default=50, show_default=True, help="Latent dimension.")
@click.option(
    "--hidden",
    "hidden_dims",
    default="400",
    show_default=True,
    callback=_hidden,
    help="Hidden layer widths, comma-separated (the decoder mirrors the encoder).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="Adam learning rate."
)
@click.option(
    "--eval-particles",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Samples per test point for the test ELBO.",
)
@_DEVICE
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True)
@click.option("--seed", type=_SEED, default=0, show_default=True)
@click.option("--validate", is_flag=True, help="Turn on Pyro's distribution validation (slower).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs/latest",
    show_default=True,
    help="Run directory to write (must not hold a run already).",
)
@_PROGRESS
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=None,
    help="Also write checkpoint.pt every N steps (it is always written after every epoch).",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Continue the run in this directory exactly where it stopped (its options are kept; "
    "--epochs may raise the number of epochs).",
)
@click.option("--detect-anomaly", is_flag=True, help="Find the operation that made a NaN (slow).")
@click.pass_context
def fit_command(
    ctx: click.Context,
    progress: bool,
    checkpoint_every: int | None,
    resume_dir: str | None,
    detect_anomaly: bool,
    **options: object,
) -> None:
    """Train a VAE and write a run directory.

    Writes to --out: config.json, metrics.jsonl (one JSON object per epoch), checkpoint.pt
    (loadable with torch.load(..., weights_only=True); rewritten atomically after every epoch),
    samples.png and reconstructions.png. Ctrl-C or SIGTERM stops at the end of the current step,
    writes the checkpoint and says how to resume (exit 130 or 143).
    """
    from .runs import checkpoint_note, resume_run, train_run
    from .signals import Stopped, exit_code
    from .train import NonFiniteLossError, TrainingInterrupted

    common = {"log": click.echo, "progress": progress, "checkpoint_every": checkpoint_every,
              "handle_signals": True, "detect_anomaly": detect_anomaly}  # fmt: skip
    out = resume_dir or options["out"]
    try:
        if resume_dir is not None:
            given = [name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            flags = {param.name: param.opts[0] for param in ctx.command.params}
            clashes = [flags[name] for name in given if name != "epochs"]
            if clashes:
                raise click.UsageError(
                    f"{', '.join(clashes)} cannot be combined with --resume: a resumed run keeps its options"
                )
            epochs = options["epochs"] if "epochs" in given else None
            resume_run(resume_dir, epochs=epochs, **common)  # type: ignore[arg-type]
        else:
            train_run(FitConfig(**options), **common)  # type: ignore[arg-type]
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except NonFiniteLossError as error:
        raise click.ClickException(f"{error}. {checkpoint_note(out)}") from None
    except TrainingInterrupted as stop:
        click.echo(f"stopped by {stop.signal_name} at epoch {stop.epoch}, step {stop.step}; resume with: "
                   f"pyrovae fit --resume {out}", err=True)  # fmt: skip
        ctx.exit(exit_code(stop))
    except (KeyboardInterrupt, Stopped) as stop:  # outside the training loop: before it, or drawing after it
        click.echo(f"stopped by {getattr(stop, 'signal_name', 'SIGINT')}. {checkpoint_note(out)}", err=True)
        ctx.exit(exit_code(stop))


_RUN_DIR = click.argument("run_dir", type=click.Path(exists=True, file_okay=False))


@main.command("evaluate")
@_RUN_DIR
@click.option(
    "--dataset",
    callback=_dataset,
    default=None,
    help="Data set to evaluate on (default: the run's, from config.json, with the run's binarization).",
)
@click.option(
    "--k",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Importance samples per test point (5000 as in Burda et al. 2015).",
)
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=None, help="Evaluate the first N test points only.")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True, help="Test points per pass.")
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=None,
    help="Importance samples per pass (default: sized to keep one pass near 64 MiB).",
)
@click.option("--seed", type=_SEED, default=0, show_default=True, help="Seed of the importance samples.")
@_DEVICE
@click.option(
    "--inference-data",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also save an ArviZ InferenceData (netCDF) with the z draws and log weights of the first test points.",
)
@click.option(
    "--inference-points",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many test points --inference-data holds.",
)
@_PROGRESS
def evaluate_command(run_dir: str, **options: object) -> None:
    """Evaluate a run on its test set and write RUN_DIR/evaluation.json.

    Per test point: the ELBO with its reconstruction and KL terms, the importance-weighted (IWAE)
    estimate of log p(x) with k samples, and the Pareto k-hat of the importance weights (ArviZ
    psislw); over the test set: active latent units. Prints a summary; pictures are made by
    `pyrovae plots` and `pyrovae sample`.
    """
    from .runs import evaluate_run

    with _one_line_errors():
        evaluate_run(run_dir, log=click.echo, **options)  # type: ignore[arg-type]


@main.command("sample")
@_RUN_DIR
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=64, show_default=True, help="Number of samples.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG file to write (default: RUN_DIR/prior_samples.png).",
)
@click.option("--seed", type=_SEED, default=0, show_default=True)
def sample_command(run_dir: str, n: int, out: str | None, seed: int) -> None:
    """Save a grid of E[x|z] for z drawn from the prior of a run's model."""
    from .runs import sample_run

    with _one_line_errors():
        path = sample_run(run_dir, n=n, out=out, seed=seed)
    click.echo(f"wrote {path}")


@main.command("plots")
@_RUN_DIR
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory to write the PNG files to (default: RUN_DIR).",
)
@click.option("--dataset", default=None, callback=_dataset, help="Data set (default: the run's).")
def plots_command(run_dir: str, out: str | None, dataset: str | None) -> None:
    """Draw a run: reconstructions.png, latent.png (posterior means of the test set, 2-D, PCA when
    z_dim > 2, coloured by label) and training_curves.png (ELBO against epoch and seconds).
    """
    from .runs import plot_run

    with _one_line_errors():
        paths = plot_run(run_dir, out=out, dataset=dataset)
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")
