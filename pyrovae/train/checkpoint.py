"""Checkpoints: atomic writes, and loading with ``torch.load(..., weights_only=True)`` only.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts, so it loads
without unpickling arbitrary objects:
``{"format", "version", "vae": {"model": kind, **hparams}, "model": state_dict, "config": FitConfig dict,
"history": [epoch records], "resume": {optimizer state, loop position, RNG states, ...}}``, where
``kind`` and ``hparams`` are the model's (:class:`~pyrovae.models.LatentVariableModel`): a built-in
kind from :data:`pyrovae.models.MODELS` or the class path of a model of yours
(:mod:`pyrovae.models.model_spec`); a checkpoint without ``"model"`` holds a :class:`~pyrovae.VAE`.
Loading checks that structure (:func:`load_checkpoint`, :func:`check_resume_state`) and says
which field is wrong in one line.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelError, PriorError
from ..models.base import LatentVariableModel
from ..models.model_spec import check_hparams, recorded_model_class
from ..rundir import write_bytes
from .state import ResumeState

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_vae",
    "vae_from_checkpoint",
    "check_resume_state",
    "CHECKPOINT_NAME",
]

CHECKPOINT_FORMAT = "pyrovae-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(
    path: str | Path,
    vae: LatentVariableModel,
    config: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    resume: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (:func:`pyrovae.rundir.write_bytes`: a temporary file in the
    same folder, fsync, rename), so a crash or a full disk mid-write leaves the previous checkpoint
    intact; an OSError is one line naming the path and the cause.

    :param vae: the model; its :attr:`~pyrovae.models.LatentVariableModel.kind` and
        :meth:`~pyrovae.models.LatentVariableModel.hparams` (plain JSON values, checked here) are recorded.
    :param resume: :meth:`pyrovae.train.FitState.resume_state` (optimizer, loop position, RNG) for
        :func:`pyrovae.runs.resume_run`.
    """
    path = Path(path)
    hparams = check_hparams(vae.hparams(), f"{type(vae).__name__}.hparams()")
    if "model" in hparams:
        raise ModelError(f"{type(vae).__name__}.hparams() has a key 'model', which checkpoints keep for the kind")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "vae": {"model": vae.kind, **hparams},
        "model": {k: v.detach().cpu() for k, v in vae.state_dict().items()},
        "config": config or {},
        "history": history or [],
    }
    if resume is not None:
        payload["resume"] = resume
    buffer = io.BytesIO()  # serialised in memory first, so a full disk is an OSError, not torch's RuntimeError
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())
    return path


def _unpickling_reason(error: Exception) -> str:
    """What torch's weights-only unpickler objected to, without its advice to load the file unsafely."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:\n\s*\n|Check the documentation|$)", text, re.S)
    if found and found.group(1).strip():
        return found.group(1).strip().splitlines()[0]
    if "weights_only" in text:
        return "it holds objects other than tensors and plain containers"
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check its structure; raise a one-line
    :class:`~pyrovae.errors.CheckpointError` (a ``ValueError``) for anything else.

    Checked: the format marker, ``vae`` (a dict of hyper-parameters), ``model`` (a non-empty dict
    of finite tensors), ``config`` (a dict) and ``history`` (a list).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a run directory or a {CHECKPOINT_NAME} file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain-tensor checkpoint ({_unpickling_reason(error)})"
        ) from None
    except OSError as error:
        from ..rundir import os_error_message

        raise CheckpointError(os_error_message(error, path, "read")) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError... for non-checkpoints
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"cannot read {path} as a checkpoint (truncated or not a torch file): {type(error).__name__}: {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a pyrovae checkpoint (no format={CHECKPOINT_FORMAT!r})")
    for key, kind in (("vae", dict), ("model", dict), ("config", dict), ("history", list)):
        if not isinstance(payload.get(key), kind):
            found = type(payload.get(key)).__name__ if key in payload else "nothing"
            raise CheckpointError(f"{path}: field {key!r} should be a {kind.__name__}, found {found}")
    if not payload["model"] or not all(torch.is_tensor(t) for t in payload["model"].values()):
        raise CheckpointError(f"{path}: field 'model' should map parameter names to tensors")
    for name, tensor in payload["model"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: parameter {name!r} holds NaN or infinite values: the file was altered or damaged; "
                "use an earlier copy of the run"
            )
    return payload


def check_resume_state(path: str | Path, resume: Any) -> ResumeState:
    """The training state a checkpoint holds for ``fit(..., resume=...)``, checked field by field
    (:meth:`pyrovae.train.ResumeState.from_dict`); a one-line :class:`~pyrovae.errors.CheckpointError`
    names the field that is missing or wrong."""
    if not isinstance(resume, dict):
        raise CheckpointError(f"{path} holds no training state to resume from (field 'resume' is missing)")
    return ResumeState.from_dict(resume, str(path))


def load_vae(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    prior: str | type | nn.Module | None = None,
    trust_prior: bool = False,
    model: str | type | None = None,
    trust_model: bool = False,
) -> LatentVariableModel:
    """Rebuild the model (a :class:`~pyrovae.VAE`, or any :class:`~pyrovae.models.LatentVariableModel`)
    saved in a checkpoint (or a run directory).

    A checkpoint whose prior or model is a class of yours names it by its class path, but loading
    never imports what a file names. For the prior: pass ``prior`` (the class, which is built with
    ``z_dim`` and the recorded options; a prior module already built; or its class path as a
    string, which is then imported), or ``trust_prior=True`` to import the recorded path (see
    :mod:`pyrovae.models.prior_spec`). For the model: pass ``model`` (the class or its class path),
    or ``trust_model=True`` (see :mod:`pyrovae.models.model_spec`).
    """
    payload = load_checkpoint(path, map_location)
    return vae_from_checkpoint(
        payload, prior=prior, trust_prior=trust_prior, source=str(path), model=model, trust_model=trust_model
    )


def vae_from_checkpoint(
    payload: dict[str, Any],
    prior: str | type | nn.Module | None = None,
    trust_prior: bool = False,
    source: str = "the checkpoint",
    model: str | type | None = None,
    trust_model: bool = False,
) -> LatentVariableModel:
    """Rebuild the model of a loaded checkpoint (``prior``, ``trust_prior``, ``model``,
    ``trust_model``: as in :func:`load_vae`): the class its kind names (:data:`pyrovae.models.MODELS`
    or a class of yours, :func:`~pyrovae.models.model_spec.recorded_model_class`), built by its
    :meth:`~pyrovae.models.LatentVariableModel.from_hparams`, in the saved dtype, with the saved parameters."""
    hparams = dict(payload["vae"])
    dtype = next(iter(payload["model"].values())).dtype
    kind = hparams.pop("model", "vae")
    cls = recorded_model_class(kind, named=model, trust=trust_model, source=source)  # (a ModelError names the class)
    # cast before loading, so loading does not round float64 weights
    try:
        vae = cls.from_hparams(hparams, prior=prior, trust_prior=trust_prior, source=source).to(dtype)
    except (PriorError, ModelError):  # about the class named: they say so themselves
        raise
    except (TypeError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"the model in {source} does not match its hyper-parameters ('vae'): {first}") from None
    try:
        vae.load_state_dict(payload["model"])
    except RuntimeError as error:
        said = " ".join(str(error).split())
        said = said if len(said) <= 300 else said[:297] + "..."
        raise CheckpointError(
            f"the parameters in {source} do not fit the model rebuilt from its settings ({said}); "
            "for a prior of yours, pass the prior module built as in training"
        ) from None
    return vae
