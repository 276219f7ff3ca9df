"""``pyrovae evaluate``: a run's model on its test set, written to ``evaluation.json`` (and, where
asked, an ArviZ ``InferenceData`` netCDF file)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, positive_int
from ..evaluation import Evaluation, evaluate
from ..evaluation.arviz_compat import arviz_versions, check_arviz
from ..evaluation.netcdf import check_netcdf_space, netcdf_bytes, write_netcdf
from ..evaluation.psis import KHAT_THRESHOLD, PSIS_MIN_DRAWS
from ..memory import allocation_failures, check_fits
from ..plan import versions
from ..rundir import write_text
from ..spec.names import EVALUATE_DEFAULTS
from .loading import load_run, writable_file
from .run_directory import RunDirectory

__all__ = ["evaluate_run"]


def evaluate_run(
    run_dir: str | Path,
    dataset: str | None = None,
    k: int = EVALUATE_DEFAULTS["k"],
    n: int | None = EVALUATE_DEFAULTS["n"],
    batch_size: int = EVALUATE_DEFAULTS["batch_size"],
    chunk_size: int | None = EVALUATE_DEFAULTS["chunk_size"],
    seed: int = EVALUATE_DEFAULTS["seed"],
    device: str = EVALUATE_DEFAULTS["device"],
    inference_data: str | Path | None = None,
    inference_points: int = EVALUATE_DEFAULTS["inference_points"],
    max_minutes: float = EVALUATE_DEFAULTS["max_minutes"],
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> Evaluation:
    """What ``pyrovae evaluate`` does: evaluate a run on its test set and write ``evaluation.json``,
    with histograms of its per-point log p(x) and k-hat (``log_px_histogram.png``,
    ``khat_histogram.png``) beside it.

    :param n: evaluate the first ``n`` test points only (default: all).
    :param inference_data: also save an ArviZ ``InferenceData`` (netCDF) with the draws and log
        weights of the first ``inference_points`` test points (its folder's free space is checked
        before the work: :mod:`pyrovae.evaluation.netcdf`).
    :param max_minutes: before the work, its time is estimated from a timed pass over a few points
        (and logged); an estimate above this many minutes is refused in one line that says how to
        make it shorter (``n``, ``k``). 0: no limit.
    ``prior``, ``trust_prior``, ``model``, ``trust_model``: as in :func:`pyrovae.load_vae`. Other
    arguments as in :func:`pyrovae.evaluate`.
    """
    if n is not None:
        positive_int("n", n)
    positive_int("k", k)
    run = RunDirectory(run_dir)
    run_dir, out = run.path, run.path / "evaluation.json"
    netcdf = None if inference_data is None else writable_file(Path(inference_data), "--inference-data")
    if netcdf is not None:
        check_arviz()  # (a missing or broken ArviZ is said before any work)
    with run.lock():
        vae, data, config = load_run(run_dir, dataset, device, prior, trust_prior, model, trust_model)
        x = data.test if n is None else data.test[:n]
        keep = min(inference_points, x.shape[0]) if netcdf is not None else 0
        # the kept draws: z and log w in the model's dtype and float64, twice while saving
        kept_bytes = 2 * k * keep * (vae.z_dim * vae.dtype.itemsize + 8)
        check_fits([(f"--inference-points {keep} x --k {k} kept draws", kept_bytes)], vae.device, "lower them")
        netcdf_size = netcdf_bytes(k, keep, vae.z_dim * len(vae.latent_sites), vae.x_dim)
        if netcdf is not None:  # (said now, not after the work)
            check_netcdf_space(netcdf, netcdf_size)
        if log is not None:
            log(
                f"pyrovae evaluate: run={run_dir} dataset={data.name} "
                f"binarization={config['resolved']['binarization']} test points={x.shape[0]} of "
                f"{data.test.shape[0]} k={k} device={vae.device} threads={torch.get_num_threads()} "
                f"dtype={str(vae.dtype).replace('torch.', '')} seed={seed}"
            )
        with allocation_failures("while evaluating", "--k, --batch-size or --chunk-size"):
            _check_time(vae, x, k, batch_size, chunk_size, seed, max_minutes, log)
            result = evaluate(
                vae, x, k=k, batch_size=batch_size, chunk_size=chunk_size, seed=seed, keep_draws=keep,
                progress=progress, psis=k >= PSIS_MIN_DRAWS,  # (fewer draws: the report says k-hat was not computed)
            )  # fmt: skip
        record = {
            "run_dir": str(run_dir),
            "dataset": data.name,
            "binarization": config["resolved"]["binarization"],
            "split": "test",
            "test_size": data.test.shape[0],
            **result.to_dict(),
            "versions": {
                **{name: v for name, v in versions().items() if name != "python"},
                **arviz_versions(),  # the line (0.x or >= 1) that wrote --inference-data
            },
        }
        written = [write_text(out, _json_with_flat_lists(record))]
        if netcdf is not None:
            written.append(write_netcdf(result.to_inference_data(), netcdf, netcdf_size))
        written += _histograms(record["per_point"], run_dir)
    if log is not None:
        log(result.report())
        log(f"wrote {', '.join(str(p) for p in written)} ({result.seconds:.1f} s)")
    return result


#: below this many draws (points x k) the work is too small to be worth an estimate
_QUICK = 200_000
#: points of the timed pass
_PROBE = 4


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} minutes"


def _check_time(
    vae: Any, x: torch.Tensor, k: int, batch_size: int, chunk_size: int | None, seed: int, max_minutes: float, log: Any
) -> None:
    """Estimate the evaluation's time from a timed pass over :data:`_PROBE` points (the work grows
    with points x k), log it, and refuse one above ``max_minutes`` (0: no limit)."""
    if max_minutes < 0:
        raise ConfigError(f"max_minutes (--max-minutes) must be >= 0 (0: no limit), got {max_minutes!r}")
    n = x.shape[0]
    if n * k <= _QUICK:
        return
    probe = min(n, _PROBE)
    start = time.perf_counter()
    evaluate(vae, x[:probe], k=k, batch_size=batch_size, chunk_size=chunk_size, seed=seed, psis=False)
    seconds = (time.perf_counter() - start) * n / probe
    if log is not None:
        log(f"estimated time: about {_minutes(seconds)} for {n} points x k={k} (from a timed pass over {probe})")
    if max_minutes and seconds > 60 * max_minutes:
        fewer = max(1, int(n * 60 * max_minutes / seconds))
        raise ConfigError(
            f"evaluating {n} test points with --k {k} would take about {_minutes(seconds)}, more than --max-minutes "
            f"{max_minutes:g}: pass --points {fewer} (or a smaller --k) to finish within it, or --max-minutes 0 to "
            "run it all"
        )


def _histograms(per_point: dict[str, Any], folder: Path) -> list[Path]:
    """The histograms of the per-point log p(x) and k-hat, drawn from what ``evaluation.json`` holds."""
    from ..plots import save_evaluation_histograms

    with allocation_failures("while drawing the histograms", "nothing: evaluation.json is written"):
        return save_evaluation_histograms(per_point, folder, KHAT_THRESHOLD)


def _json_with_flat_lists(record: dict[str, Any]) -> str:
    """JSON with one key per line and each list on one line (per-point columns stay readable)."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict):
            inner = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"
