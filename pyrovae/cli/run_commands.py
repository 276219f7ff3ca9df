"""``pyrovae evaluate``, ``sample`` and ``plots``: a run directory read back, over :mod:`pyrovae.commands`."""

from __future__ import annotations

import click

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
    device_option,
    main,
    one_line_errors,
)
from .plugins import TRUST_PLUGINS, plugin_option, run_plugins

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
    "-n", "--n", "n", type=click.IntRange(min=1), default=EVALUATE_DEFAULTS["n"],
    help="Evaluate the first N test points only.",
)  # fmt: skip
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
    help="Also save an ArviZ InferenceData (netCDF) with the z draws and log weights of the first test points.",
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
    "this (with the -n that fits), 0: no limit.",
)
@PRIOR_NAMED
@TRUST_PRIOR
@MODEL_NAMED
@TRUST_MODEL
@PLUGIN
@TRUST_PLUGINS
@THREADS
@PROGRESS
def evaluate_command(run_dir: str, **options: object) -> None:
    """Evaluate a run on its test set and write RUN_DIR/evaluation.json.

    Per test point: the ELBO with its reconstruction and KL terms, the importance-weighted (IWAE)
    estimate of log p(x) with k samples, and the Pareto k-hat of the importance weights (PSIS);
    over the test set: active latent units. Says first how long it will take (--max-minutes), and
    prints a summary; pictures are made by `pyrovae plots` and `pyrovae sample`.
    """
    from .. import commands

    try:
        with one_line_errors():
            run_plugins(run_dir)
            commands.evaluate_run(run_dir, log=click.echo, **options)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        click.echo(f"stopped by SIGINT: {run_dir}/evaluation.json was not written", err=True)
        click.get_current_context().exit(130)


@main.command("sample")
@_RUN_DIR
@click.option(
    "-n", "--n", "n", type=click.IntRange(min=1), default=SAMPLE_DEFAULTS["n"], show_default=True,
    help="Number of samples.",
)  # fmt: skip
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="PNG file to write (default: RUN_DIR/prior_samples.png).",
)
@click.option("--seed", type=SEED, default=SAMPLE_DEFAULTS["seed"], show_default=True)
@PRIOR_NAMED
@TRUST_PRIOR
@MODEL_NAMED
@TRUST_MODEL
@PLUGIN
@TRUST_PLUGINS
@THREADS
def sample_command(run_dir: str, **options: object) -> None:
    """Save a grid of E[x|z] for z drawn from the prior of a run's model."""
    from .. import commands

    with one_line_errors():
        run_plugins(run_dir)
        path = commands.sample_run(run_dir, **options)  # type: ignore[arg-type]
    click.echo(f"wrote {path}")


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
def plots_command(run_dir: str, **options: object) -> None:
    """Draw a run: reconstructions.png, latent.png (posterior means of the test set, 2-D, PCA when
    z_dim > 2, coloured by label) and training_curves.png (ELBO against epoch and seconds).
    """
    from .. import commands

    with one_line_errors():
        run_plugins(run_dir)
        paths = commands.plot_run(run_dir, **options)  # type: ignore[arg-type]
    click.echo(f"wrote {', '.join(str(p) for p in paths)}")
