"""Checkpoints: atomic writes, and loading with ``torch.load(..., weights_only=True)`` only.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts, so it loads
without unpickling arbitrary objects:
``{"format", "version", "vae": hparams, "model": state_dict, "config": FitConfig dict,
"history": [epoch records], "resume": {optimizer state, loop position, RNG states, ...}}``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..models.prior_spec import rebuild_prior
from ..models.vae import VAE

__all__ = ["save_checkpoint", "load_checkpoint", "load_vae", "vae_from_checkpoint", "CHECKPOINT_NAME"]

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
    """Write a checkpoint atomically: to a temporary file in the same folder, fsync, then rename,
    so a crash mid-write leaves the previous checkpoint intact.

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint gets normal file modes
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise :class:`ValueError` for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: expected a run directory or a {CHECKPOINT_NAME} file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"refused to load {path}: it is not a plain-tensor checkpoint ({first})") from None
    except Exception as error:  # torch raises RuntimeError, EOFError, KeyError... for non-checkpoints
        raise CheckpointError(
            f"cannot read {path} as a checkpoint (truncated or not a torch file): {type(error).__name__}: {error}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a pyrovae checkpoint (no format={CHECKPOINT_FORMAT!r})")
    return payload


def load_vae(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    prior: str | type | nn.Module | None = None,
    trust_prior: bool = False,
) -> VAE:
    """Rebuild the :class:`~pyrovae.VAE` saved in a checkpoint (or a run directory).

    A checkpoint whose prior is a class of yours names it by its class path, but loading never
    imports what a file names: pass ``prior`` (the class, which is built with ``z_dim`` and the
    recorded options; a prior module already built; or its class path as a string, which is then
    imported), or ``trust_prior=True`` to import the recorded path. See
    :mod:`pyrovae.models.prior_spec`.
    """
    payload = load_checkpoint(path, map_location)
    return vae_from_checkpoint(payload, prior=prior, trust_prior=trust_prior, source=str(path))


def vae_from_checkpoint(
    payload: dict[str, Any],
    prior: str | type | nn.Module | None = None,
    trust_prior: bool = False,
    source: str = "the checkpoint",
) -> VAE:
    """Rebuild the :class:`~pyrovae.VAE` of a loaded checkpoint (``prior``, ``trust_prior``: as in :func:`load_vae`)."""
    hparams = dict(payload["vae"])
    dtype = next(iter(payload["model"].values())).dtype
    model = hparams.pop("model", "vae")
    # each branch casts before loading, so loading does not round float64 weights
    if model == "linear-gaussian":
        from ..models.linear_gaussian import LinearGaussianVAE

        vae: VAE = LinearGaussianVAE(**hparams).to(dtype)
    elif model == "vae":
        options = hparams.get("prior_options") or {}
        hparams["prior"] = rebuild_prior(
            hparams.get("prior", "normal"), hparams["z_dim"], options, named=prior, trust=trust_prior, source=source
        )
        vae = VAE(**hparams).to(dtype)
    else:
        raise CheckpointError(f"the checkpoint holds a model of kind {model!r}; expected 'vae' or 'linear-gaussian'")
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
