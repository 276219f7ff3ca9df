"""Checkpoints: atomic writes, and loading with ``torch.load(..., weights_only=True)`` only.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts, so it loads
without unpickling arbitrary objects:
``{"format", "version", "vae": hparams, "model": state_dict, "config": FitConfig dict,
"history": [epoch records], "resume": {optimizer state, loop position, RNG states, ...}}``.
Loading checks that structure (:func:`load_checkpoint`, :func:`check_resume_state`) and says
which field is wrong in one line.
"""

from __future__ import annotations

import io
import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import RunFileError
from ..models.vae import VAE
from ..rundir import write_bytes

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
    vae: VAE,
    config: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    resume: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (:func:`pyrovae.rundir.write_bytes`: a temporary file in the
    same folder, fsync, rename), so a crash or a full disk mid-write leaves the previous checkpoint
    intact; an OSError is one line naming the path and the cause.

    :param resume: :meth:`pyrovae.train.FitState.resume_state` (optimizer, loop position, RNG) for
        :func:`pyrovae.runs.resume_run`.
    """
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "vae": vae.hparams,
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
    :class:`~pyrovae.errors.RunFileError` (a ``ValueError``) for anything else.

    Checked: the format marker, ``vae`` (a dict of hyper-parameters), ``model`` (a non-empty dict
    of finite tensors), ``config`` (a dict) and ``history`` (a list).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise RunFileError(f"no checkpoint at {path}: expected a run directory or a {CHECKPOINT_NAME} file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise RunFileError(
            f"refused to load {path}: it is not a plain-tensor checkpoint ({_unpickling_reason(error)})"
        ) from None
    except OSError as error:
        from ..rundir import os_error_message

        raise RunFileError(os_error_message(error, path, "read")) from None
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError... for non-checkpoints
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RunFileError(
            f"cannot read {path} as a checkpoint (truncated or not a torch file): {type(error).__name__}: {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise RunFileError(f"{path} is a torch file but not a pyrovae checkpoint (no format={CHECKPOINT_FORMAT!r})")
    for key, kind in (("vae", dict), ("model", dict), ("config", dict), ("history", list)):
        if not isinstance(payload.get(key), kind):
            found = type(payload.get(key)).__name__ if key in payload else "nothing"
            raise RunFileError(f"{path}: field {key!r} should be a {kind.__name__}, found {found}")
    if not payload["model"] or not all(torch.is_tensor(t) for t in payload["model"].values()):
        raise RunFileError(f"{path}: field 'model' should map parameter names to tensors")
    for name, tensor in payload["model"].items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunFileError(
                f"{path}: parameter {name!r} holds NaN or infinite values: the file was altered or damaged; "
                "use an earlier copy of the run"
            )
    return payload


_RESUME_FIELDS: dict[str, tuple[type, ...]] = {
    "optimizer": (dict,),
    "epoch": (int,),
    "batch": (int,),
    "step": (int,),
    "epoch_loss": (int, float),
    "epoch_rng": (dict,),
    "rng": (dict,),
    "history": (dict,),
}


def check_resume_state(path: str | Path, resume: Any) -> dict[str, Any]:
    """Check the training state a checkpoint holds for ``fit(..., resume=...)``; return it.

    It must have the fields of :meth:`pyrovae.train.FitState.resume_state`: ``optimizer`` (a torch
    optimizer state with ``state`` and ``param_groups``), ``epoch`` >= 1, ``batch`` >= 0, ``step``
    >= 0, a finite ``epoch_loss``, ``epoch_rng`` and ``rng`` (with a ``torch`` generator state) and
    ``history`` (``epochs`` and ``step_elbos`` lists). Raises a one-line
    :class:`~pyrovae.errors.RunFileError` naming the field.
    """
    if not isinstance(resume, dict):
        raise RunFileError(f"{path} holds no training state to resume from (field 'resume' is missing)")
    for key, kind in _RESUME_FIELDS.items():
        value = resume.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            found = type(value).__name__ if key in resume else "nothing"
            expected = " or ".join(k.__name__ for k in kind)
            raise RunFileError(f"{path}: field 'resume.{key}' should be a {expected}, found {found}")
    for key, least in (("epoch", 1), ("batch", 0), ("step", 0)):
        if resume[key] < least:
            raise RunFileError(f"{path}: field 'resume.{key}' should be >= {least}, found {resume[key]}")
    if not math.isfinite(resume["epoch_loss"]):
        raise RunFileError(f"{path}: field 'resume.epoch_loss' should be finite, found {resume['epoch_loss']}")
    optimizer = resume["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(optimizer.get("param_groups"), list):
        raise RunFileError(f"{path}: field 'resume.optimizer' should hold 'state' and 'param_groups'")
    for key in ("epoch_rng", "rng"):
        state = resume[key].get("torch")
        if not (torch.is_tensor(state) and state.dtype == torch.uint8):
            raise RunFileError(f"{path}: field 'resume.{key}.torch' should be a torch generator state (uint8 tensor)")
    history = resume["history"]
    if not isinstance(history.get("epochs"), list) or not isinstance(history.get("step_elbos"), list):
        raise RunFileError(f"{path}: field 'resume.history' should hold 'epochs' and 'step_elbos' lists")
    if len(history["epochs"]) != resume["epoch"] - 1:
        raise RunFileError(
            f"{path}: field 'resume.history.epochs' has {len(history['epochs'])} records, "
            f"expected {resume['epoch'] - 1} before epoch {resume['epoch']}"
        )
    return resume


def load_vae(path: str | Path, map_location: str | torch.device = "cpu") -> VAE:
    """Rebuild the :class:`~pyrovae.VAE` saved in a checkpoint (or a run directory)."""
    return vae_from_checkpoint(load_checkpoint(path, map_location))


def vae_from_checkpoint(payload: dict[str, Any]) -> VAE:
    """Rebuild the :class:`~pyrovae.VAE` of a loaded checkpoint."""
    hparams = dict(payload["vae"])
    dtype = next(iter(payload["model"].values())).dtype
    model = hparams.pop("model", "vae")
    # each branch casts before loading, so loading does not round float64 weights
    if model == "linear-gaussian":
        from ..models.linear_gaussian import LinearGaussianVAE

        cls: type[VAE] = LinearGaussianVAE
    elif model == "vae":
        cls = VAE
    else:
        raise RunFileError(f"the checkpoint holds a model of kind {model!r}; expected 'vae' or 'linear-gaussian'")
    try:
        vae = cls(**hparams).to(dtype)
        vae.load_state_dict(payload["model"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunFileError(f"the checkpoint's model does not match its hyper-parameters ('vae'): {first}") from None
    return vae
