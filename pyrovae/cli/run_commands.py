"""``pyrovae evaluate``, ``sample`` and ``plots``: a run directory read back, over :mod:`pyrovae.commands`."""

from __future__ import annotations

import click

from ..reporting import info
from ..spec.names import EVALUATE_DEFAULTS, SAMPLE_DEFAULTS
from .group import (
    MODEL_NAMED,
    PRIOR_NAMED,
    PROGRESS,
    SEED,
    THREADS,
    TRUST_MODEL,
    TRUST_PRIOR,
    dataset_option,
    deprecations_as_lines,
    device_option,
    main,
    one_line_errors,
)
from .plugins import TRUST_PLUGINS, plugin_option, run_plugins
from .renamed import renamed_option, take_renamed
from .verbosity import verbosity_options

PLUGIN = plugin_option("read", expose=False)
_RUN_DIR = click.argument("run_dir", type=click.Path(exists=True, file_okay=False))


@main.command("evaluate")
@_RUN_DIR
@click.option(
    "--dataset",
    callback=dataset_option,
    default=None,
    help="Data set to evaluate on (default: the run's, from config.json, with the run's binarization).",
)
@click.option(
    "--k",
    type=click.IntRange(min=1),
    default=EVALUATE_DEFAULTS["k"],
    show_default=True,
    help="Importance samples per test point (5000 as in Burda et al. 2015).",
)
@click.option(
    "--points", "n", type=click.IntRange(min=1), default=EVALUATE_DEFAULTS["n"],
    help="Evaluate the first N test points only (default: all).",
)  # fmt: skip
@renamed_option("-n", "--n", new="--points", name="n", type=click.IntRange(min=1))
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=EVALUATE_DEFAULTS["batch_size"],
    show_default=True, help="Test points per pass.",
)  # fmt: skip
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=EVALUATE_DEFAULTS["chunk_size"],
    help="Importance samples per pass (default: sized to keep one pass near 64 MiB).",
)
@click.option(
    "--seed", type=SEED, default=EVALUATE_DEFAULTS["seed"], show_default=True,
    help="Seed of the importance samples.",
)  # fmt: skip
@device_option(EVALUATE_DEFAULTS["device"])
@click.option(
    "--inference-data",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also save the z draws and log weights of the first test points as netCDF (an ArviZ InferenceData; "
    "an xarray DataTree with ArviZ >= 1).",
)
@click.option(
    "--inference-points",
    type=click.IntRange(min=1),
    default=EVALUATE_DEFAULTS["inference_points"],
    show_default=True,
    help="How many test points --inference-data holds.",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0),
    default=EVALUATE_DEFAULTS["max_minutes"],
    show_default=True,
    help="The work's time is estimated first from a timed pass over a few points; refuse an estimate above "
    "this (with the --points that fits), 0: no limit.",
)
@PRIOR_NAMED
@TRUST_PRIOR
@MODEL_NAMED
@TRUST_MODEL
@PLUGIN
@TRUST_PLUGINS
@THREADS
@PROGRESS
@verbosity_options
def evaluate_command(run_dir: str, **options: object) -> None:
    """Evaluate a run on its test set and write RUN_DIR/evaluation.json.

    Per test point: the ELBO with its reconstruction and KL terms, the importance-weighted (IWAE)
    estimate of log p(x) with k samples, and the Pareto k-hat of the importance weights (PSIS);
    over the test set: active latent units. Says first how long it will take (--max-minutes), and
    prints a summary. Also draws RUN_DIR/log_px_histogram.png and khat_histogram.png (per test point).
    RUN_DIR may be a folder written by `pyrovae export`.
    """
    from .. import commands

    with deprecations_as_lines():
        take_renamed(options, "evaluate")
    try:
        with one_line_errors():
            run_plugins(run_dir)
            commands.evaluate_run(run_dir, log=info, **options)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        click.echo(f"stopped by SIGINT: {run_dir}/evaluation.json was not written", err=True)
        click.get_current_context().exit(130)


@main.command("sample")
@_RUN_DIR
@click.option(
    "--samples", "n", type=click.IntRange(min=1), default=SAMPLE_DEFAULTS["n"], show_default=True,
    help="Number of samples drawn.",
)  # fmt: skip
@renamed_option("-n", "--n", new="--samples", name="n", type=click.IntRange(min=1))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG file to write (default: RUN_DIR/samples.png, the picture `pyrovae fit` draws, redrawn).",
)
@click.option("--seed", type=SEED, default=SAMPLE_DEFAULTS["seed"], show_default=True)
@PRIOR_NAMED
@TRUST_PRIOR
@MODEL_NAMED
@TRUST_MODEL
@PLUGIN
@TRUST_PLUGINS
@THREADS
@verbosity_options
def sample_command(run_dir: str, **options: object) -> None:
    """Save a grid of E[x|z] for z drawn from the prior of a run's model (RUN_DIR: a run directory or a
    folder written by `pyrovae export`)."""
    from .. import commands

    with deprecations_as_lines():
        take_renamed(options, "sample")
    with one_line_errors():
        run_plugins(run_dir)
        path = commands.sample_run(run_dir, **options)  # type: ignore[arg-type]
    info(f"wrote {path}")


@main.command("plots")
@_RUN_DIR
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory to write the PNG files to (default: RUN_DIR).",
)
@click.option("--dataset", default=None, callback=dataset_option, help="Data set (default: the run's).")
@PRIOR_NAMED
@TRUST_PRIOR
@MODEL_NAMED
@TRUST_MODEL
@PLUGIN
@TRUST_PLUGINS
@THREADS
@verbosity_options
def plots_command(run_dir: str, **options: object) -> None:
    """Draw a run: reconstructions.png (test images, their grey originals where the run binarized them,
    reconstructions), latent.png (posterior means of the test set, 2-D, PCA when z_dim > 2, coloured by
    label), traversals.png, interpolations.png and training_curves.png (train/validation/test ELBO,
    reconstruction and KL where recorded, the selected epoch). RUN_DIR may be a folder written by
    `pyrovae export`.
    """
    from .. import commands

    with one_line_errors():
        run_plugins(run_dir)
        paths = commands.plot_run(run_dir, **options)  # type: ignore[arg-type]
    info(f"wrote {', '.join(str(p) for p in paths)}")
