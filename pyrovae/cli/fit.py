"""``pyrovae fit``: the options of a run (each with its default from the run spec), run files
(``--config``, ``--print-config``) and ``--resume``, over :mod:`pyrovae.commands`."""

from __future__ import annotations

import click
from click.core import ParameterSource

from ..errors import PyrovaeError
from ..spec import RunSpec, spec_to_toml
from ..spec.names import (
    ACTIVATIONS,
    ARCHS,
    BINARIZE,
    DTYPES,
    LATENTS,
    LIKELIHOODS,
    LR_SCHEDULES,
)
from .data_options import CACHE_DIR, DATA_LOADER, IMAGE_SIZE, SKIP_BAD_IMAGES, WORKERS, with_dataset_defaults
from .group import (
    DEFAULTS,
    PROGRESS,
    SEED,
    THREADS,
    TRUST_MODEL,
    TRUST_PRIOR,
    checkpoint_note_of,
    dataset_option,
    deprecations_as_lines,
    device_option,
    fit_option,
    hidden_dims,
    main,
    model_name_option,
    model_options_option,
    prior_name_option,
    prior_options_option,
    traceback_wanted,
)
from .logger_options import LOG_EVERY, LOGGER, MLFLOW_URI, RESUMABLE_LOGGING
from .objective_options import objective_options
from .plugins import OBJECTIVE_OPTION, TRUST_PLUGINS, plugin_option, run_plugins
from .run_files import CONFIG_FILE, PRINT_CONFIG, fit_config
from .verbosity import verbosity_options


@main.command("fit")
@click.option(
    "--dataset",
    default=DEFAULTS["dataset"],
    show_default=True,
    callback=dataset_option,
    metavar="NAME|PATH",
    help="Data set: digits = scikit-learn's 8x8 digits (embedded, offline); fashion-mnist = the four IDX "
    "files (raw or .gz) in --data-dir, by default /usr/share/datasets/fashion-mnist "
    "(apt-get install dataset-fashion-mnist); mnist = the four IDX files in --data-dir; cifar10 = the six "
    "files of CIFAR-10's binary version (data_batch_1.bin ... test_batch.bin) in --data-dir; celeba = "
    "img_align_celeba/ (and list_eval_partition.txt) in --data-dir; folder:PATH = a folder of PNG/JPEG images; "
    "or a .npy (memory-mapped) / .npz file of your own: an array (N, ...), or an .npz with x [y] or train, "
    "test [train_labels, test_labels]; or a name registered with pyrovae.data.register_dataset.",
)
@IMAGE_SIZE
@CACHE_DIR
@SKIP_BAD_IMAGES
@DATA_LOADER
@WORKERS
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=DEFAULTS["data_dir"],
    help="Folder of the IDX files of mnist / fashion-mnist, of the binary files of cifar10, or of celeba's "
    "img_align_celeba/.",
)
@fit_option(
    "--test-fraction",
    click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    "Share of the data held out for testing when the data set gives no split (digits, .npy, .npz with x).",
)
@fit_option(
    "--binarize",
    click.Choice(("auto", *BINARIZE)),
    "Binarize grey levels: static (one fixed draw), dynamic (fresh draw each epoch); "
    "auto = dynamic for bernoulli, none for gaussian. The test set is always drawn once.",
)
@objective_options
@fit_option(
    "--likelihood",
    click.Choice(LIKELIHOODS),
    "p(x|z): bernoulli (eq. 13), gaussian (eq. 14) or discretized-logistic (8-bit images, eq. 33).",
)
@fit_option(
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
    callback=prior_name_option,
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
    callback=prior_options_option,
    metavar="KEY=VALUE",
    help="A keyword argument of your prior class (repeatable); values are read as JSON where they are "
    "numbers, true/false or null, else as text.",
)
@fit_option(
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
    callback=hidden_dims,
    help="Hidden layer widths, comma-separated (the decoder mirrors the encoder).",
)
@fit_option(
    "--activation",
    click.Choice(ACTIVATIONS),
    "Activation of the hidden layers.",
)
@fit_option(
    "--arch",
    click.Choice(ARCHS),
    "Encoder and decoder: mlp = dense layers (--hidden); conv = stride-2 convolutions (--channels) then "
    "dense layers (--hidden), for image data of any (C, H, W) the data set knows.",
)
@click.option(
    "--channels",
    default=",".join(str(c) for c in DEFAULTS["channels"]),
    show_default=True,
    callback=hidden_dims,
    help="With --arch conv: feature maps of each stride-2 convolution, comma-separated (the decoder mirrors them).",
)
@click.option(
    "--model",
    default=DEFAULTS["model"],
    callback=model_name_option,
    metavar="PACKAGE.MODULE:CLASS",
    help="Train a model class of yours (a subclass of pyrovae.models.LatentVariableModel with its own Pyro model "
    "and guide), built as Class(x_dim, **options) from the --model-option values, in place of the built-in VAE; "
    "the built-in model's options (--z-dim, --hidden, --prior...) are refused with it.",
)
@click.option(
    "--model-option",
    "model_options",
    multiple=True,
    callback=model_options_option,
    metavar="KEY=VALUE",
    help="A keyword argument of your --model class (repeatable); values are read as JSON where they are "
    "numbers, true/false or null, else as text.",
)
@fit_option(
    "--latents",
    click.IntRange(min=min(LATENTS), max=max(LATENTS)),
    "Levels of latent variables: 1 = p(z) p(x|z); 2 = p(z2) p(z1|z2) p(x|z1) with guide q(z2|x) q(z1|x,z2), "
    "each level --z-dim wide, the --prior on z2.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS["epochs"], show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS["batch_size"], show_default=True)
@fit_option(
    "--lr",
    click.FloatRange(min=0, min_open=True),
    "Adam learning rate.",
)
@fit_option(
    "--lr-schedule",
    click.Choice(LR_SCHEDULES),
    "constant = --lr throughout; cosine = half a cosine from --lr down to 0 at the last step.",
)
@fit_option(
    "--clip-norm",
    click.FloatRange(min=0),
    "Rescale each step's gradient to at most this norm (0: no clipping).",
)
@fit_option(
    "--validation",
    click.IntRange(min=0),
    "Training rows to hold out (a fixed random choice; never test rows) for model selection: the run ends "
    "with the parameters of the epoch with the best validation ELBO (0: none held out, the last epoch's).",
)
@fit_option(
    "--patience",
    click.IntRange(min=0),
    "Stop after this many epochs without a better validation ELBO (needs --validation; 0: never).",
)
@fit_option(
    "--eval-particles",
    click.IntRange(min=1),
    "Samples per test point for the test ELBO.",
)
@device_option(DEFAULTS["device"])
@click.option("--dtype", type=click.Choice(DTYPES), default=DEFAULTS["dtype"], show_default=True)
@click.option("--seed", type=SEED, default=DEFAULTS["seed"], show_default=True)
@click.option(
    "--validate", is_flag=True, default=DEFAULTS["validate"], help="Turn on Pyro's distribution validation (slower)."
)
@fit_option(
    "--out",
    click.Path(file_okay=False),
    "Run directory to write (must not hold a run already); default: a new one for each run, "
    "runs/DATASET-ELBO/version_N with the next free N.",
)
@THREADS
@PROGRESS
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
    "--epochs may raise the number of epochs; --logger adds loggers, --log-every and --mlflow-uri change "
    "how they log).",
)
@TRUST_PRIOR
@TRUST_MODEL
@click.option("--detect-anomaly", is_flag=True, help="Find the operation that made a NaN (slow).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run in --out: the new run trains beside it and takes its place once it has written its "
    "first checkpoint (a new run that stops before that leaves the old one as it was).",
)
@LOGGER
@LOG_EVERY
@MLFLOW_URI
@CONFIG_FILE
@PRINT_CONFIG
@verbosity_options
@plugin_option("fit")
@TRUST_PLUGINS
@OBJECTIVE_OPTION
@click.pass_context
def fit_command(
    ctx: click.Context,
    progress: bool,
    checkpoint_every: int | None,
    resume_dir: str | None,
    trust_prior: bool,
    trust_model: bool,
    detect_anomaly: bool,
    overwrite: bool,
    config_file: str | None,
    print_config: bool,
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
    from .. import commands
    from ..reporting import info
    from ..signals import Stopped, exit_code, raise_if_stopped
    from ..train import FitInterrupted, NonFiniteLossError
    from ..train.distributed import speaks  # (under torchrun, rank 0 reports for every rank)

    common = {"log": info, "progress": progress, "checkpoint_every": checkpoint_every,
              "handle_signals": True, "detect_anomaly": detect_anomaly}  # fmt: skip
    config = None

    def where() -> str | None:  # the run directory (one of its own is chosen once the run is checked)
        return resume_dir or (config.out if config is not None else options["out"])  # type: ignore[return-value]

    try:
        raise_if_stopped()  # (a Ctrl-C that a library swallowed while the imports above ran)
        if resume_dir is not None:
            given = [name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
            flags = {param.name: param.opts[0] for param in ctx.command.params}
            kept = ("epochs", "prior", "model", "plugins", *RESUMABLE_LOGGING)  # (the others are the run's own)
            clashes = [flags[name] for name in given if name not in kept]
            clashes += ["--config"] * (config_file is not None) + ["--print-config"] * print_config
            clashes += ["--overwrite"] * overwrite
            if clashes:
                raise click.UsageError(
                    f"{', '.join(clashes)} cannot be combined with --resume: a resumed run keeps its options"
                )
            epochs = options["epochs"] if "epochs" in given else None
            prior = options["prior"] if "prior" in given else None
            model = options["model"] if "model" in given else None
            run_plugins(resume_dir)
            commands.resume_run(
                resume_dir, epochs=epochs, prior=prior, trust_prior=trust_prior, model=model,  # type: ignore[arg-type]
                trust_model=trust_model, logging={k: options[k] for k in RESUMABLE_LOGGING if k in given},
                **common,  # type: ignore[arg-type]
            )  # fmt: skip
        else:
            if trust_prior or trust_model:
                what = "prior" if trust_prior else "model"
                raise click.UsageError(f"--trust-{what} is for --resume: a new run names its {what} with --{what}")
            with deprecations_as_lines():  # (pyrovae 0.1's --elbo names)
                config = fit_config(ctx, with_dataset_defaults(ctx, options), config_file)
            if print_config:
                click.echo(spec_to_toml(RunSpec.from_flat(config.to_dict())), nl=False)
                return
            commands.fit_run(config, overwrite=overwrite, **common)
    except (PyrovaeError, NonFiniteLossError) as error:
        if not speaks(error):
            ctx.exit(1)
        if traceback_wanted():
            raise
        note = f". {checkpoint_note_of(where())}" if isinstance(error, NonFiniteLossError) else ""
        raise click.ClickException(f"{error}{note}") from None
    except FitInterrupted as stop:
        if speaks(stop):
            click.echo(f"stopped by {stop.signal_name} at epoch {stop.epoch}, step {stop.step}; resume with: "
                       f"pyrovae fit --resume {where()}", err=True)  # fmt: skip
        ctx.exit(exit_code(stop))
    except (KeyboardInterrupt, Stopped) as stop:  # outside the training loop: before it, or drawing after it
        if speaks(stop):
            click.echo(f"stopped by {getattr(stop, 'signal_name', 'SIGINT')}. {checkpoint_note_of(where())}", err=True)
        ctx.exit(exit_code(stop))
