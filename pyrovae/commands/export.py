"""``pyrovae export``: a run's model as a folder to hand on (``model.safetensors``, ``config.json``,
a model card ``README.md``, the run's ``metrics.jsonl``, and with ``onnx`` the encoder and decoder
as ONNX graphs), and the reading back of such a folder by ``evaluate``, ``sample`` and ``plots``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import FitConfig
from ..data import BINARIZE
from ..errors import ConfigError, RunFileError
from ..models.base import LatentVariableModel
from ..pretrained import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    check_onnx,
    check_out,
    export_onnx,
    is_pretrained,
    pretrained_config,
    read_pretrained_config,
    save_pretrained,
    write_pretrained,
)
from ..rundir import os_errors, read_json_object
from ..train.checkpoint import load_checkpoint, vae_from_checkpoint
from .run_directory import RunDirectory, config_from

__all__ = ["export_run", "model_card", "pretrained_run_config"]


def export_run(
    source: str | Path | LatentVariableModel,
    out: str | Path,
    overwrite: bool = False,
    onnx: bool = False,
    prior: str | None = None,
    trust_prior: bool = False,
    model: str | None = None,
    trust_model: bool = False,
) -> Path:
    """What ``pyrovae export`` does: write the model of a run directory (or a model object) to the
    new folder ``out`` (:func:`pyrovae.pretrained.write_pretrained`: all or nothing).

    The weights and settings are copied from the run's checkpoint without rebuilding the model, so
    no class of yours is imported; ``onnx`` rebuilds it (and then follows the trust rule: ``prior``,
    ``trust_prior``, ``model``, ``trust_model`` as in :func:`pyrovae.load_vae`).

    :param out: a folder that does not exist yet (or, with ``overwrite``, one pyrovae exported).
    :returns: ``out``.
    """
    extra = None
    check_out(out, overwrite)  # (before any work)
    if onnx:
        check_onnx()
    if isinstance(source, LatentVariableModel):
        if onnx:
            extra = _onnx_writer(source)
        card = model_card(pretrained_config(source.kind, source.hparams(), source.dtype), _count(source.state_dict()))
        return save_pretrained(source, out, overwrite, files={"README.md": card}, extra=extra)
    run = RunDirectory(source)
    if not run.is_dir():
        raise RunFileError(f"{run} is not a folder: expected a run directory written by `pyrovae fit`")
    if is_pretrained(run.path):
        raise ConfigError(f"{run} is already an exported model ({WEIGHTS_NAME}): copy the folder instead")
    settings = run.read_config()
    payload = load_checkpoint(run.checkpoint)
    hparams = dict(payload["vae"])
    kind = hparams.pop("model", "vae")
    state = payload["model"]
    dtype = next(iter(state.values())).dtype
    if onnx:
        built = vae_from_checkpoint(
            payload, prior=prior, trust_prior=trust_prior, source=str(run.checkpoint), model=model,
            trust_model=trust_model,
        )  # fmt: skip
        extra = _onnx_writer(built)
        latents = tuple(built.latent_sites)
    else:
        latents = None
    config = pretrained_config(kind, hparams, dtype, run=settings, latent_sites=latents)
    files = {"README.md": model_card(config, _count(state), _metrics(run), _evaluation(run))}
    metrics = run.path / "metrics.jsonl"
    if metrics.is_file():
        with os_errors(metrics, "read"):
            files["metrics.jsonl"] = metrics.read_text()
    return write_pretrained(out, config, state, files, extra, overwrite)


def _onnx_writer(model: LatentVariableModel) -> Any:
    return lambda folder: export_onnx(model, folder)


def _count(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in state.values())


def _metrics(run: RunDirectory) -> list[dict[str, Any]]:
    return run.read_metrics() if (run.path / "metrics.jsonl").is_file() else []


def _evaluation(run: RunDirectory) -> dict[str, Any] | None:
    """``evaluation.json``'s summary where ``pyrovae evaluate`` wrote one (a damaged file is left out)."""
    path = run.path / "evaluation.json"
    if not path.is_file():
        return None
    try:
        summary = read_json_object(path, "the evaluation.json that `pyrovae evaluate` writes").get("summary")
    except RunFileError:
        return None
    return summary if isinstance(summary, dict) else None


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_card(
    config: dict[str, Any],
    parameters: int,
    metrics: list[dict[str, Any]] | None = None,
    evaluation: dict[str, Any] | None = None,
) -> str:
    """The ``README.md`` of an exported model: Hugging Face's metadata header, then the run's data,
    model and objective, and the numbers it measured (the last epoch of ``metrics.jsonl``, the summary
    of ``evaluation.json``), each only where the run has it."""
    meta = config["pyrovae"]
    run = meta.get("run") or {}
    resolved = run.get("resolved") or {}
    dataset = run.get("dataset", "data of your own")
    lines = [
        "---",
        "library_name: pyrovae",
        "tags: [pyrovae, pyro, vae, variational-autoencoder]",
        "---",
        "",
        f"# {meta['model']} on {dataset}",
        "",
        f"A latent-variable model exported by pyrovae {meta['version']}: `{WEIGHTS_NAME}` (its state) and "
        f"`{CONFIG_NAME}` (its settings), loaded without pickle.",
        "",
        "## Data",
        "",
        f"- data set: {dataset}" + (f", binarization {resolved['binarization']}" if "binarization" in resolved else ""),
        f"- x_dim: {meta.get('x_dim', '-')}"
        + (f", image shape {meta['image_shape']}" if meta.get("image_shape") else ""),
    ]
    if "train_size" in resolved:
        lines.append(f"- train / test points: {resolved['train_size']} / {resolved.get('test_size', '-')}")
    lines += ["", "## Model", "", f"- kind: {meta['model']}, dtype {meta['dtype']}, {parameters} numbers"]
    lines.append(
        f"- z_dim: {meta.get('z_dim', '-')}, likelihood: {meta.get('likelihood', '-')}, prior: {meta.get('prior', '-')}"
    )
    for key in ("hidden_dims", "arch", "channels", "activation"):
        if key in config and (key != "channels" or config.get("arch") == "conv"):
            lines.append(f"- {key}: {config[key]}")
    if run:
        lines += ["", "## Objective", ""]
        lines.append(
            f"- {run.get('elbo')} (particles {run.get('particles')}, beta {run.get('beta')}, KL warm-up "
            f"{run.get('kl_warmup')} epochs), {run.get('epochs')} epoch(s) of batch {run.get('batch_size')}, "
            f"lr {run.get('lr')}, seed {run.get('seed')}"
        )
    lines += _measured(metrics or [], evaluation)
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import pyrovae",
        "",
        'model = pyrovae.load_pretrained("THIS_FOLDER")',
        "```",
        "",
        "or on the command line: `pyrovae evaluate THIS_FOLDER`, `pyrovae sample THIS_FOLDER`.",
        "",
    ]
    return "\n".join(lines)


def _measured(metrics: list[dict[str, Any]], evaluation: dict[str, Any] | None) -> list[str]:
    if not metrics and not evaluation:
        return []
    lines = ["", "## Measured", ""]
    if metrics:
        last = metrics[-1]
        lines.append(
            f"- epoch {last['epoch']} (metrics.jsonl, nats per data point): "
            f"train ELBO {_number(last.get('train_elbo'))}"
            + (f", test ELBO {_number(last['test_elbo'])}" if "test_elbo" in last else "")
            + (f", validation ELBO {_number(last['validation_elbo'])}" if "validation_elbo" in last else "")
        )
    if evaluation:
        lines.append(
            f"- pyrovae evaluate on {_number(evaluation.get('n'))} test points, k={_number(evaluation.get('k'))}: "
            f"log p(x) {_number(evaluation.get('log_px'))} ± {_number(evaluation.get('log_px_se'))}, "
            f"ELBO {_number(evaluation.get('elbo'))}, KL {_number(evaluation.get('kl'))}, "
            f"active units {_number(evaluation.get('active_units'))} of {_number(evaluation.get('z_dim'))}, "
            f"seed {_number(evaluation.get('seed'))}"
        )
    return lines


def pretrained_run_config(folder: str | Path, dataset: str | None) -> dict[str, Any]:
    """The run settings an exported model's ``config.json`` keeps (what ``evaluate`` and ``plots``
    load its data with), ``dataset`` overriding its data set; for a model exported from Python, which
    keeps none, ``dataset`` is needed and the data are read with the defaults of ``pyrovae fit``."""
    meta = read_pretrained_config(folder)["pyrovae"]
    run = meta.get("run")
    if run is None:
        if dataset is None:
            raise ConfigError(
                f"{Path(folder) / CONFIG_NAME} records no data set (the model was exported from Python): pass --dataset"
            )
        likelihood = meta.get("likelihood", "bernoulli")
        values = {"dataset": dataset, **({"likelihood": likelihood} if isinstance(likelihood, str) else {})}
        values["model"] = None if meta["model"] in ("vae", "hierarchical") else meta["model"]
        try:
            fit_config = FitConfig.from_dict(values)
        except ValueError as error:
            raise ConfigError(f"cannot read {dataset!r} for this model: {error}") from None
        return {**fit_config.to_dict(), "resolved": {"binarization": fit_config.binarization}}
    where = f"{Path(folder) / CONFIG_NAME} (field pyrovae.run)"
    config_from(run, where)
    resolved = run.get("resolved")
    binarization = resolved.get("binarization") if isinstance(resolved, dict) else None
    if binarization not in BINARIZE:
        raise RunFileError(
            f"{where}: resolved.binarization should be one of {', '.join(BINARIZE)}, found {binarization!r}"
        )
    return json.loads(json.dumps(run))
