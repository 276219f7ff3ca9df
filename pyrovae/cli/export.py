"""``pyrovae export``: a run's model as a folder to hand on, over :func:`pyrovae.commands.export_run`."""

from __future__ import annotations

import click

from .group import MODEL_NAMED, PRIOR_NAMED, THREADS, TRUST_MODEL, TRUST_PRIOR, main, one_line_errors


@main.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    type=click.Path(),
    required=True,
    help="The folder to write (it must not exist yet, unless --overwrite).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace --out if it holds a model pyrovae exported (the new folder takes its place only once complete).",
)
@click.option(
    "--onnx",
    is_flag=True,
    help="Also write encoder.onnx (x -> loc, scale) and decoder.onnx (z -> the likelihood's parameters), with a "
    'dynamic batch axis (needs pip install "pyrovae[onnx]").',
)
@PRIOR_NAMED
@TRUST_PRIOR
@MODEL_NAMED
@TRUST_MODEL
@THREADS
def export_command(run_dir: str, **options: object) -> None:
    """Write a run's model to a new folder: model.safetensors (its state), config.json (model kind,
    settings, data shape, the run's settings), README.md (a model card with the run's numbers) and
    the run's metrics.jsonl. Load it with pyrovae.load_pretrained(DIR) (no pickle, no training state),
    or give it to evaluate, sample and plots as RUN_DIR.
    """
    from .. import commands

    with one_line_errors():
        out = commands.export_run(run_dir, **options)  # type: ignore[arg-type]
    click.echo(f"wrote {out}")
