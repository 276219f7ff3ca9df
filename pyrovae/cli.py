"""The ``pyrovae`` command line: parses options, calls the library, turns errors into one line."""

from __future__ import annotations

import click

from .config import DEVICES, DTYPES, FitConfig
from .data import BINARIZE, DATASETS, is_array_path
from .elbo import ELBOS
from .likelihoods import LIKELIHOODS
from .priors import PRIORS


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


def _dataset(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in DATASETS or is_array_path(value):
        return value
    raise click.BadParameter(f"expected one of {', '.join(DATASETS)} or a path to a .npy/.npz file, got {value!r}")


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise click.BadParameter(f"expected one of {', '.join(DEVICES)} or cuda:N, got {value!r}")


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
    help="meanfield = TraceMeanField_ELBO (analytic KL), trace = Trace_ELBO (Monte Carlo KL), jit-* = compiled.",
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
@click.option("--device", default="auto", show_default=True, callback=_device, help="cpu, cuda, cuda:N or auto.")
@click.option("--dtype", type=click.Choice(list(DTYPES)), default="float32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--validate", is_flag=True, help="Turn on Pyro's distribution validation (slower).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs/latest",
    show_default=True,
    help="Run directory to write (must not hold a run already).",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def fit_command(progress: bool, **options: object) -> None:
    """Train a VAE and write a run directory.

    Writes to --out: config.json, metrics.jsonl (one JSON object per epoch), checkpoint.pt
    (loadable with torch.load(..., weights_only=True)), samples.png and reconstructions.png.
    """
    from .runs import train_run

    try:
        config = FitConfig(**options)  # type: ignore[arg-type]
        train_run(config, log=click.echo, progress=progress)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
