"""``pyrovae plots``: a run's reconstructions, latent space (scatter, traversals, interpolations)
and training curves, as PNG."""

from __future__ import annotations

from pathlib import Path

from ..errors import RunDirectoryError, RunFileError
from ..memory import allocation_failures
from ..pretrained import is_pretrained
from ..rundir import os_errors
from .loading import load_run
from .run_directory import RunDirectory

__all__ = ["plot_run"]


def plot_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    dataset: str | None = None,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> list[Path]:
    """What ``pyrovae plots`` does: reconstructions, the latent space and training curves, as PNG.

    Writes to ``out`` (default: the run directory) ``reconstructions.png`` (the first 8 test images,
    their grey originals where the run binarized them, and their reconstructions), ``latent.png``
    (posterior means of the test set, coloured by label), ``traversals.png`` (the most active latent
    coordinates moved around the posterior mean of the first test image), ``interpolations.png``
    (between the posterior means of pairs of test images) and ``training_curves.png`` (from
    ``metrics.jsonl``). Everything is read and checked before the first file is written.
    ``run_dir`` may be a folder of ``pyrovae export`` (one exported from Python has no training curves).
    ``prior``, ``trust_prior``, ``model``, ``trust_model``: as in :func:`pyrovae.load_vae`.
    """
    from ..plots import (
        save_interpolations,
        save_latent_scatter,
        save_reconstructions,
        save_training_curves,
        save_traversals,
    )

    run = RunDirectory(run_dir)
    run_dir = run.path
    out = run_dir if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirectoryError(f"--out {out} exists and is not a directory")
    curves = not (is_pretrained(run_dir) and not (run_dir / "metrics.jsonl").exists())  # (a model exported from Python)
    records = run.read_metrics() if curves else []
    if curves and not records:
        raise RunFileError(
            f"{run_dir / 'metrics.jsonl'} holds no finished epoch, so there are no training curves to draw: "
            f"finish one with: pyrovae fit --resume {run_dir}"
        )
    vae, data, _ = load_run(run_dir, dataset, "cpu", prior, trust_prior, model, trust_model)
    with os_errors(out, "create the folder"):
        out.mkdir(parents=True, exist_ok=True)
    test = data.test.to(dtype=vae.dtype)
    grey = data.test_originals
    latent = test.shape[0] >= 2  # (traversals and interpolations need two test images)
    with run.lock_if_holds(out / "latent.png"), allocation_failures("while drawing", "nothing: the test set"):
        return [
            save_reconstructions(vae, test, out / "reconstructions.png", originals=grey),
            save_latent_scatter(vae, test, out / "latent.png", labels=data.test_labels),
            *([save_traversals(vae, test, out / "traversals.png")] if latent else []),
            *([save_interpolations(vae, test, out / "interpolations.png", originals=grey)] if latent else []),
            *([save_training_curves(records, out / "training_curves.png")] if curves else []),
        ]
