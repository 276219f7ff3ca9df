"""The ``pyrovae`` command line: parses options, calls the library, turns errors into one line."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from click.core import ParameterSource

from . import runs
from .config import DEVICES, DTYPES, FitConfig, default_of
from .data import BINARIZE, DATASETS, is_array_path
from .errors import TRACEBACK_VARIABLE, PyrovaeError
from .infer import DEPRECATED_ELBOS, ELBOS, ENGINE_NAMES
from .infer.options import IWAE_GRADS
from .models.hierarchical import LATENTS
from .models.likelihoods import LIKELIHOODS
from .models.mmd import KERNELS
from .models.networks import ACTIVATIONS
from .models.prior_spec import check_prior_name, parse_prior_options
from .models.vae import ARCHS
from .train.options import LR_SCHEDULES, SEED_RANGE, check_device

#: the default of every ``fit`` option, from its owner (through FitConfig): never restated here
DEFAULTS = FitConfig.defaults()


def _hidden(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in value.split(","))
    except ValueError:
        example = "32,64" if param.name == "channels" else "400 or 512,256"
        raise click.BadParameter(
            f"expected comma-separated positive integers such as {example}; got {value!r}"
        ) from None
    if not dims or min(dims) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return dims


def _dataset(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value in DATASETS or is_array_path(value):
        return value
    raise click.BadParameter(f"expected one of {', '.join(DATASETS)} or a path to a .npy/.npz file, got {value!r}")


def _elbo(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in ELBOS or value in DEPRECATED_ELBOS:  # pyrovae 0.1's names: FitConfig warns and splits them
        return value
    raise click.BadParameter(f"expected one of {', '.join(ELBOS)}, got {value!r}")


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_device(value)  # the one check of a device name (pyrovae.train.options)
    except PyrovaeError:
        raise click.BadParameter(f"expected one of {', '.join(DEVICES)} or cuda:N, got {value!r}") from None


def _device_option(default: str) -> Callable[[Callable], Callable]:
    return click.option(
        "--device", default=default, show_default=True, callback=_device, help="cpu, cuda, cuda:N or auto."
    )


def _prior(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        return value if value is None else check_prior_name(value)
    except PyrovaeError as error:
        raise click.BadParameter(str(error)) from None


def _prior_options(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, object]:
    try:
        return parse_prior_options(value)
    except PyrovaeError as error:
        raise click.BadParameter(str(error)) from None


def _fit_option(
    flag: str, kind: click.ParamType | type | None, help: str, **extra: object
) -> Callable[[Callable], Callable]:
    """A ``fit`` option with its default from :class:`FitConfig` (the option's owner), shown in ``--help``."""
    default = DEFAULTS[flag[2:].replace("-", "_")]
    return click.option(flag, type=kind, default=default, show_default=True, help=help, **extra)  # type: ignore[call-overload]


_PRIOR_NAMED = click.option(
    "--prior",
    default=None,
    callback=_prior,
    metavar="PACKAGE.MODULE:CLASS",
    help="For a run trained with a prior class of yours: name that class again (a run directory alone never "
    "makes pyrovae import code it names).",
)
_TRUST_PRIOR = click.option(
    "--trust-prior",
    is_flag=True,
    help="Import the prior class that the run records without naming it with --prior (only for runs you trust).",
)
_PROGRESS = click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
_SEED = click.IntRange(*SEED_RANGE)


def _traceback_wanted() -> bool:
    """``PYROVAE_TRACEBACK=1``: pyrovae's errors keep their traceback, and that of the user's code they chain."""
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """pyrovae's own errors (bad input) become click's one-line ``Error: ...`` and exit 1 (unless
    ``PYROVAE_TRACEBACK=1``); anything else (a bug, an error inside Pyro or torch) keeps its traceback."""
    try:
        yield
    except PyrovaeError as error:
        if _traceback_wanted():
            raise
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
    default=DEFAULTS["dataset"],
    show_default=True,
    callback=_dataset,
    metavar="NAME|PATH",
    help="Data set: digits = scikit-learn's 8x8 digits (embedded, offline); fashion-mnist = the four IDX "
    "files (raw or .gz) in --data-dir, by default /usr/share/datasets/fashion-mnist "
    "(apt-get install dataset-fashion-mnist); mnist = the four IDX files in --data-dir; cifar10 = the six "
    "files of CIFAR-10's binary version (data_batch_1.bin ... test_batch.bin) in --data-dir; or a .npy/.npz "
    "file of your own: an array (N, ...), or an .npz with x [y] or train, test [train_labels, test_labels].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=DEFAULTS["data_dir"],
    help="Folder of the IDX files of mnist / fashion-mnist, or of the binary files of cifar10.",
)
@_fit_option(
    "--test-fraction",
    click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    "Share of the data held out for testing when the data set gives no split (digits, .npy, .npz with x).",
)
@_fit_option(
    "--binarize",
    click.Choice(("auto", *BINARIZE)),
    "Binarize grey levels: static (one fixed draw), dynamic (fresh draw each epoch); "
    "auto = dynamic for bernoulli, none for gaussian. The test set is always drawn once.",
)
@click.option(
    "--elbo",
    default=DEFAULTS["elbo"],
    show_default=True,
    callback=_elbo,
    metavar="|".join(ELBOS),
    help="What is estimated: meanfield = TraceMeanField_ELBO (analytic KL where the prior has one), "
    "trace = Trace_ELBO (Monte Carlo KL); iwae = the importance-weighted bound with --particles K "
    "(--iwae-grad); infovae = InfoVAE with an MMD term (--infovae-alpha, --infovae-lambda, --mmd-kernel). "
    "meanfield and trace take --beta, --kl-warmup and --free-bits. The test ELBO is always the ELBO (eq. 11).",
)
@_fit_option(
    "--engine",
    click.Choice(ENGINE_NAMES),
    "How a step runs (same numbers on the same draws): eager = Pyro programs every step; compiled = "
    "recorded and compiled by torch.compile once per batch shape (seconds first, faster steps); jit = "
    "TorchScript traces (drops an epoch's last, smaller batch); cudagraph = the compiled step recorded in a "
    "CUDA graph and replayed (one GPU, one process, one batch shape); auto = compiled for runs of 10,000 "
    "steps or more, else eager.",
)
@_fit_option(
    "--particles",
    click.IntRange(min=1),
    "Samples of z per data point per step (K of --elbo iwae).",
)
@_fit_option(
    "--beta",
    click.FloatRange(min=0),
    "meanfield/trace: the weight of the KL term (eq. 26); 1 is the ELBO.",
)
@_fit_option(
    "--kl-warmup",
    click.IntRange(min=0),
    "meanfield/trace: raise the KL weight linearly from 0 to --beta over this many steps (0: no warm-up).",
    metavar="STEPS",
)
@_fit_option(
    "--free-bits",
    click.FloatRange(min=0),
    "meanfield/trace: the batch-average KL of each latent coordinate is not penalised below this "
    "(eq. 27; 0: off; needs the normal or gaussian prior).",
    metavar="NATS",
)
@_fit_option(
    "--iwae-grad",
    click.Choice(IWAE_GRADS),
    "iwae: the encoder's gradient estimator, standard (eq. 24) or dreg (doubly reparameterised, eq. 25: "
    "same expectation, lower variance; runs the model twice per step).",
)
@_fit_option(
    "--infovae-alpha",
    click.FloatRange(max=1),
    "infovae: alpha of eq. 28 (the KL's weight is 1 - alpha).",
)
@_fit_option(
    "--infovae-lambda",
    float,
    "infovae: lambda of eq. 28 (the MMD's weight is alpha + lambda - 1, which must not be negative).",
)
@_fit_option(
    "--mmd-kernel",
    click.Choice(KERNELS),
    "infovae: the MMD's kernel, imq (inverse multiquadratic) or rbf, each summed over 7 bandwidths (eq. 30).",
)
@_fit_option(
    "--likelihood",
    click.Choice(LIKELIHOODS),
    "p(x|z): bernoulli (eq. 13) or gaussian (eq. 14).",
)
@_fit_option(
    "--sigma",
    click.FloatRange(min=0, min_open=True),
    "Gaussian likelihood sigma (initial value with --learn-sigma).",
)
@click.option(
    "--learn-sigma",
    is_flag=True,
    default=DEFAULTS["learn_sigma"],
    help="Learn a per-pixel sigma (gaussian likelihood).",
)
@click.option(
    "--prior",
    default=DEFAULTS["prior"],
    show_default=True,
    callback=_prior,
    metavar="NAME|PACKAGE.MODULE:CLASS",
    help="p(z): normal = N(0, I); gaussian = learned diagonal Gaussian; mog = learned mixture of "
    "Gaussians; vamp = VampPrior (learned pseudo-inputs); flow = N(0, I) through learned "
    "autoregressive maps; or a subclass of pyrovae.models.priors.Prior of yours, importable as "
    "package.module:ClassName, built with z_dim and the --prior-option values. The KL mode each one gets "
    "is printed at the start.",
)
@click.option(
    "--prior-option",
    "prior_options",
    multiple=True,
    callback=_prior_options,
    metavar="KEY=VALUE",
    help="A keyword argument of your prior class (repeatable); values are read as JSON where they are "
    "numbers, true/false or null, else as text.",
)
@_fit_option(
    "--prior-components",
    click.IntRange(min=1),
    "Mixture components K of the mog and vamp priors.",
)
@click.option(
    "--z-dim", type=click.IntRange(min=1), default=DEFAULTS["z_dim"], show_default=True, help="Latent dimension."
)
@click.option(
    "--hidden",
    "hidden_dims",
    default=",".join(str(h) for h in DEFAULTS["hidden_dims"]),
    show_default=True,
    callback=_hidden,
    help="Hidden layer widths, comma-separated (the decoder mirrors the encoder).",
)
@_fit_option(
    "--activation",
    click.Choice(list(ACTIVATIONS)),
    "Activation of the hidden layers.",
)
@_fit_option(
    "--arch",
    click.Choice(ARCHS),
    "Encoder and decoder: mlp = dense layers (--hidden); conv = stride-2 convolutions (--channels) then "
    "dense layers (--hidden), for image data of any (C, H, W) the data set knows.",
)
@click.option(
    "--channels",
    default=",".join(str(c) for c in DEFAULTS["channels"]),
    show_default=True,
    callback=_hidden,
    help="With --arch conv: feature maps of each stride-2 convolution, comma-separated (the decoder mirrors them).",
)
@_fit_option(
    "--latents",
    click.IntRange(min=min(LATENTS), max=max(LATENTS)),
    "Levels of latent variables: 1 = p(z) p(x|z); 2 = p(z2) p(z1|z2) p(x|z1) with guide q(z2|x) q(z1|x,z2), "
    "each level --z-dim wide, the --prior on z2.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS["epochs"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS["batch_size"], show_default=True)
@_fit_option(
    "--lr",
    click.FloatRange(min=0, min_open=True),
    "Adam learning rate.",
)
@_fit_option(
    "--lr-schedule",
    click.Choice(LR_SCHEDULES),
    "constant = --lr throughout; cosine = half a cosine from --lr down to 0 at the last step.",
)
@_fit_option(
    "--clip-norm",
    click.FloatRange(min=0),
    "Rescale each step's gradient to at most this norm (0: no clipping).",
)
@_fit_option(
    "--validation",
    click.IntRange(min=0),
    "Training rows to hold out (a fixed random choice; never test rows) for model selection: the run ends "
    "with the parameters of the epoch with the best validation ELBO (0: none held out, the last epoch's).",
)
@_fit_option(
    "--patience",
    click.IntRange(min=0),
    "Stop after this many epochs without a better validation ELBO (needs --validation; 0: never).",
)
@_fit_option(
    "--eval-particles",
    click.IntRange(min=1),
    "Samples per test point for the test ELBO.",
)
@_device_option(DEFAULTS["device"])
@click.option("--dtype", type=click.Choice(list(DTYPES)), default=DEFAULTS["dtype"], show_default=True)
@click.option("--seed", type=_SEED, default=DEFAULTS["seed"], show_default=True)
@click.option(
    "--validate", is_flag=True, default=DEFAULTS["validate"], help="Turn on Pyro's distribution validation (slower)."
)
@_fit_option(
    "--out",
    click.Path(file_okay=False),
    "Run directory to write (must not hold a run already).",
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
@_TRUST_PRIOR
@click.option("--detect-anomaly", is_flag=True, help="Find the operation that made a NaN (slow).")
@click.pass_context
def fit_command(
    ctx: click.Context,
    progress: bool,
    checkpoint_every: int | None,
    resume_dir: str | None,
    trust_prior: bool,
    detect_anomaly: bool,
    **options: object,
) -> None:
    """Train a VAE and write a run directory.

    Writes to --out: config.json, metrics.jsonl (one JSON object per epoch), checkpoint.pt
    (loadable with torch.load(..., weights_only=True); rewritten atomically after every epoch),
    samples.png and reconstructions.png. Ctrl-C or SIGTERM stops at the end of the current step,
    writes the checkpoint and says how to resume (exit 130 or 143). To resume a run trained with a
    prior class of yours, name it again with --prior (or pass --trust-prior).

    Started by torchrun (torchrun --nproc-per-node N -m pyrovae fit ...), N processes train the
    same run together: --batch-size is the global batch, split over them; rank 0 writes and prints.
    """
    from .signals import Stopped, exit_code
    from .train import NonFiniteLossError, TrainingInterrupted
    from .train.distributed import speaks  # (under torchrun, rank 0 reports for every rank)

    common = {"log": click.echo, "progress": progress, "checkpoint_every": checkpoint_every,
              "handle_signals": True, "detect_anomaly": detect_anomaly}  # fmt: skip
    out = resume_dir or options["out"]
    try:
        if resume_dir is not None:
            given = [name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            flags = {param.name: param.opts[0] for param in ctx.command.params}
            clashes = [flags[name] for name in given if name not in ("epochs", "prior")]
            if clashes:
                raise click.UsageError(
                    f"{', '.join(clashes)} cannot be combined with --resume: a resumed run keeps its options"
                )
            epochs = options["epochs"] if "epochs" in given else None
            prior = options["prior"] if "prior" in given else None
            runs.resume_run(resume_dir, epochs=epochs, prior=prior, trust_prior=trust_prior, **common)  # type: ignore[arg-type]
        else:
            if trust_prior:
                raise click.UsageError("--trust-prior is for --resume: a new run names its prior with --prior")
            runs.train_run(FitConfig(**options), **common)  # type: ignore[arg-type]
    except (PyrovaeError, NonFiniteLossError) as error:
        if not speaks(error):
            ctx.exit(1)
        if _traceback_wanted():
            raise
        note = f". {runs.checkpoint_note(out)}" if isinstance(error, NonFiniteLossError) else ""
        raise click.ClickException(f"{error}{note}") from None
    except TrainingInterrupted as stop:
        if speaks(stop):
            click.echo(f"stopped by {stop.signal_name} at epoch {stop.epoch}, step {stop.step}; resume with: "
                       f"pyrovae fit --resume {out}", err=True)  # fmt: skip
        ctx.exit(exit_code(stop))
    except (KeyboardInterrupt, Stopped) as stop:  # outside the training loop: before it, or drawing after it
        if speaks(stop):
            click.echo(f"stopped by {getattr(stop, 'signal_name', 'SIGINT')}. {runs.checkpoint_note(out)}", err=True)
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
    default=default_of(runs.evaluate_run, "k"),
    show_default=True,
    help="Importance samples per test point (5000 as in Burda et al. 2015).",
)
@click.option(
    "-n", "--n", "n", type=click.IntRange(min=1), default=default_of(runs.evaluate_run, "n"),
    help="Evaluate the first N test points only.",
)  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=default_of(runs.evaluate_run, "batch_size"), show_default=True,
    help="Test points per pass.",
)  # fmt: skip
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=default_of(runs.evaluate_run, "chunk_size"),
    help="Importance samples per pass (default: sized to keep one pass near 64 MiB).",
)
@click.option(
    "--seed", type=_SEED, default=default_of(runs.evaluate_run, "seed"), show_default=True,
    help="Seed of the importance samples.",
)  # fmt: skip
@_device_option(default_of(runs.evaluate_run, "device"))
@click.option(
    "--inference-data",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also save an ArviZ InferenceData (netCDF) with the z draws and log weights of the first test points.",
)
@click.option(
    "--inference-points",
    type=click.IntRange(min=1),
    default=default_of(runs.evaluate_run, "inference_points"),
    show_default=True,
    help="How many test points --inference-data holds.",
)
@_PRIOR_NAMED
@_TRUST_PRIOR
@_PROGRESS
def evaluate_command(run_dir: str, **options: object) -> None:
    """Evaluate a run on its test set and write RUN_DIR/evaluation.json.

    Per test point: the ELBO with its reconstruction and KL terms, the importance-weighted (IWAE)
    estimate of log p(x) with k samples, and the Pareto k-hat of the importance weights (ArviZ
    psislw); over the test set: active latent units. Prints a summary; pictures are made by
    `pyrovae plots` and `pyrovae sample`.
    """
    with _one_line_errors():
        runs.evaluate_run(run_dir, log=click.echo, **options)  # type: ignore[arg-type]


@main.command("sample")
@_RUN_DIR
@click.option(
    "-n", "--n", "n", type=click.IntRange(min=1), default=default_of(runs.sample_run, "n"), show_default=True,
    help="Number of samples.",
)  # fmt: skip
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG file to write (default: RUN_DIR/prior_samples.png).",
)
@click.option("--seed", type=_SEED, default=default_of(runs.sample_run, "seed"), show_default=True)
@_PRIOR_NAMED
@_TRUST_PRIOR
def sample_command(run_dir: str, n: int, out: str | None, seed: int, prior: str | None, trust_prior: bool) -> None:
    """Save a grid of E[x|z] for z drawn from the prior of a run's model."""
    with _one_line_errors():
        path = runs.sample_run(run_dir, n=n, out=out, seed=seed, prior=prior, trust_prior=trust_prior)
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
@_PRIOR_NAMED
@_TRUST_PRIOR
def plots_command(run_dir: str, out: str | None, dataset: str | None, prior: str | None, trust_prior: bool) -> None:
    """Draw a run: reconstructions.png, latent.png (posterior means of the test set, 2-D, PCA when
    z_dim > 2, coloured by label) and training_curves.png (ELBO against epoch and seconds).
    """
    with _one_line_errors():
        paths = runs.plot_run(run_dir, out=out, dataset=dataset, prior=prior, trust_prior=trust_prior)
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")
