"""``pyrovae sample``: a grid of a run's model's :math:`E[x|z]` for prior draws of z."""

from __future__ import annotations

from pathlib import Path

import pyro

from ..errors import positive_int
from ..memory import PICTURE_BYTES, allocation_failures, check_fits
from ..spec.names import SAMPLE_DEFAULTS
from .loading import load_model, writable_file
from .run_directory import RunDirectory

__all__ = ["sample_run"]


def sample_run(
    run_dir: str | Path,
    n: int = SAMPLE_DEFAULTS["n"],
    out: str | Path | None = None,
    seed: int = SAMPLE_DEFAULTS["seed"],
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> Path:
    """What ``pyrovae sample`` does: decode ``n`` prior draws of a run's model into a PNG grid.

    Seeds torch's global RNG with ``seed``; ``out`` defaults to ``RUN_DIR/samples.png`` (the picture
    ``pyrovae fit`` draws, drawn again); a name without a suffix gets ``.png``. Returns the path
    written. ``prior``, ``trust_prior``, ``model``, ``trust_model``: as in :func:`pyrovae.load_vae`.
    """
    from ..plots import save_samples

    positive_int("n", n)
    run_dir = Path(run_dir)
    path = run_dir / "samples.png" if out is None else Path(out)
    if path.suffix == "":
        path = path.with_name(path.name + ".png")
    writable_file(path, "--out", ".png")
    vae = load_model(run_dir, prior, trust_prior, model, trust_model)
    decoded = n * (vae.activation_sizes().per_draw + vae.x_dim) * vae.dtype.itemsize
    given = f"--samples {n}"
    check_fits(
        [(f"{given} decoded samples", decoded), (f"{given} pictures", n * PICTURE_BYTES)], vae.device, "lower it"
    )
    with RunDirectory(run_dir).lock_if_holds(path), allocation_failures(f"while drawing {given}", "--samples"):
        pyro.set_rng_seed(seed)
        return save_samples(vae, path, n=n)
