"""A trained model as a folder to hand on: ``model.safetensors`` and ``config.json``, loaded with no
pickle and no training state.

The folder follows the layout of Hugging Face's ``PyTorchModelHubMixin`` (``save_pretrained`` /
``from_pretrained``)::

    config.json          the model's constructor arguments (its hparams) at the top level, and an
                         object "pyrovae" with the model kind, dtype, likelihood, prior, data shape,
                         the run's settings and the pyrovae version that wrote it
    model.safetensors    the model's state (safetensors' own format: tensors and a JSON header)
    README.md            a model card (written by pyrovae export)

Loading (:func:`load_pretrained`) reads JSON and safetensors only. A model or prior class of the
user's own is named in ``config.json`` by its class path and follows the rule of
:mod:`pyrovae.models.class_path`: it is imported only when the caller names it again (``model=``,
``prior=``; ``--model``, ``--prior``) or trusts the folder (``trust_model``, ``trust_prior``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import (
    CheckpointError,
    ModelError,
    PriorError,
    RunDirectoryError,
    RunFileError,
    import_optional,
)
from ..models.base import LatentVariableModel
from ..models.model_spec import check_hparams, recorded_model_class
from ..rundir import os_errors, read_json_object

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PRETRAINED_FORMAT",
    "is_pretrained",
    "pretrained_config",
    "write_pretrained",
    "save_pretrained",
    "read_pretrained_config",
    "read_weights",
    "load_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRETRAINED_FORMAT = "pyrovae-pretrained"
PRETRAINED_VERSION = 1
#: the key of ``config.json`` that holds what pyrovae records besides the constructor's arguments
META = "pyrovae"


def safetensors_torch() -> Any:
    """``safetensors.torch``, or a one-line :class:`~pyrovae.errors.DependencyError`."""
    return import_optional("safetensors.torch", "exported models", "export")


def is_pretrained(folder: str | Path) -> bool:
    """Whether ``folder`` is meant as an exported model rather than a run directory: it holds
    ``model.safetensors``, or a ``config.json`` that says so (and no ``checkpoint.pt``)."""
    folder = Path(folder)
    if (folder / WEIGHTS_NAME).exists():
        return True
    if (folder / "checkpoint.pt").exists():
        return False
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get(META), dict)


# -- writing -------------------------------------------------------------------------------------
def pretrained_config(
    kind: str,
    hparams: Mapping[str, Any],
    dtype: torch.dtype,
    run: Mapping[str, Any] | None = None,
    latent_sites: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """What ``config.json`` holds: ``hparams`` (the constructor's arguments) at the top level, and
    under ``"pyrovae"``: the format, the version that wrote it, the model kind, dtype, likelihood,
    prior, data shape and, for a trained run, ``run`` (its ``config.json``: data set, binarization,
    objective and settings), which ``evaluate`` and ``plots`` read the data with."""
    hparams = check_hparams(dict(hparams), "the model's hparams()")
    if META in hparams:
        raise ModelError(f"the model's hparams() has a key {META!r}, which exported models keep for pyrovae's record")
    meta: dict[str, Any] = {
        "format": PRETRAINED_FORMAT,
        "format_version": PRETRAINED_VERSION,
        "version": __version__,
        "model": kind,
        "dtype": str(dtype).replace("torch.", ""),
    }
    run = dict(run) if run is not None else None
    resolved = (run or {}).get("resolved") or {}
    built_in = run is not None and run.get("model") is None  # (a class of yours takes none of the run's options)
    for key in ("x_dim", "z_dim", "likelihood", "prior", "prior_options", "image_shape"):
        if key in hparams:
            meta[key] = hparams[key]
        elif key in resolved:  # the data's shape
            meta[key] = resolved[key]
        elif built_in and key in run:
            meta[key] = run[key]
    if latent_sites is not None:
        meta["latent_sites"] = list(latent_sites)
    if run is not None:
        meta["data"] = {
            "dataset": run.get("dataset"),
            "binarization": (run.get("resolved") or {}).get("binarization"),
        }
        meta["run"] = run
    return {**hparams, META: meta}


def _replace_folder(staged: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``staged`` folder to ``out``; an ``out`` that exists is moved aside first
    (``overwrite``, checked before) and removed once the new folder is in place."""
    aside = None
    with os_errors(out, "write", kept=True):
        if out.exists() and overwrite:
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, aside / out.name)
        try:
            os.rename(staged, out)
        except OSError:
            if aside is not None:  # the old folder goes back where it was
                os.replace(aside / out.name, out)
                aside.rmdir()
            raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _usual_modes(folder: Path) -> None:
    """The modes of a folder made the usual way (``0o777``/``0o666`` less the umask), rather than the
    private ones of a temporary folder."""
    umask = os.umask(0)
    os.umask(umask)
    with os_errors(folder, "write"):
        folder.chmod(0o777 & ~umask)
        for path in folder.iterdir():
            path.chmod(0o666 & ~umask)


def check_out(out: str | Path, overwrite: bool) -> Path:
    """Refuse, before any work, an ``out`` that exists (unless ``overwrite``, and then only an empty
    folder or one pyrovae exported), or that is not a folder."""
    out = Path(out)
    with os_errors(out, "use"):
        if not out.exists() and not out.is_symlink():
            above = next((p for p in out.parents if p.exists()), None)
            if above is not None and not above.is_dir():
                raise RunDirectoryError(f"--out {out}: {above} is a file, not a folder: choose another --out")
            return out
        if not out.is_dir():
            raise RunDirectoryError(f"--out {out} exists and is not a folder: choose a new folder")
        entries = list(out.iterdir())
    if not entries:
        return out
    if not overwrite:
        raise RunDirectoryError(
            f"--out {out} already exists: choose a new folder, or replace it with --overwrite; nothing was written"
        )
    if not is_pretrained(out):
        raise RunDirectoryError(
            f"--overwrite {out}: it holds no exported model (no {WEIGHTS_NAME}), so it is not removed: choose another "
            "--out"
        )
    return out


def write_pretrained(
    out: str | Path,
    config: Mapping[str, Any],
    state: Mapping[str, torch.Tensor],
    files: Mapping[str, str] | None = None,
    extra: Callable[[Path], Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an exported model's folder all at once: everything goes to a new folder beside ``out``,
    which is renamed to ``out`` when complete, so a failure at any point (a full disk, a model ONNX
    cannot export) leaves no half-written folder, and an ``out`` replaced (``overwrite``) stays
    whole until then.

    :param config: :func:`pretrained_config`. :param state: the state dict (written with
        ``safetensors.torch.save_file``; tensors that share memory are stored once each).
    :param files: more text files, by name (the model card ``README.md``, ``metrics.jsonl``).
    :param extra: called with the staging folder to write more (the ONNX graphs).
    """
    save_file = safetensors_torch().save_file
    out = check_out(out, overwrite)
    with os_errors(out.parent, "create the folder"):
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        tensors = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in state.items()}
        with os_errors(staged / WEIGHTS_NAME):
            save_file(tensors, str(staged / WEIGHTS_NAME), metadata={"format": "pt", "pyrovae": __version__})
            (staged / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
            for name, text in (files or {}).items():
                (staged / name).write_text(text, encoding="utf-8")
        if extra is not None:
            extra(staged)
        _usual_modes(staged)
        check_out(out, overwrite)  # (again: another process may have made it meanwhile)
        _replace_folder(staged, out, overwrite)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
    return out


def save_pretrained(
    model: LatentVariableModel,
    out: str | Path,
    overwrite: bool = False,
    run: Mapping[str, Any] | None = None,
    files: Mapping[str, str] | None = None,
    extra: Callable[[Path], Any] | None = None,
) -> Path:
    """Export a model (a :class:`~pyrovae.VAE` or any :class:`~pyrovae.models.LatentVariableModel`)
    to the folder ``out``: ``model.safetensors`` and ``config.json`` (:func:`write_pretrained`).

    :param run: the run's ``config.json`` (data set, binarization, objective), where there is one.
    """
    config = pretrained_config(model.kind, model.hparams(), model.dtype, run, tuple(model.latent_sites))
    return write_pretrained(out, config, model.state_dict(), files, extra, overwrite)


# -- reading -------------------------------------------------------------------------------------
def read_pretrained_config(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of an exported model, checked: the constructor's arguments and a ``"pyrovae"``
    object with the format marker and the model kind; anything else is one line naming the field."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunFileError(f"{folder} is not a folder: expected a folder that `pyrovae export` wrote")
    path = folder / CONFIG_NAME
    config = read_json_object(path, f"the {CONFIG_NAME} that `pyrovae export` writes")
    meta = config.get(META)
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        raise RunFileError(
            f"{path} is not the config of an exported pyrovae model (no {META}.format={PRETRAINED_FORMAT!r}): "
            "export a run with: pyrovae export RUN --out DIR"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > PRETRAINED_VERSION:
        raise RunFileError(
            f"{path}: {META}.format_version is {version!r}, this pyrovae reads up to {PRETRAINED_VERSION}: "
            "upgrade pyrovae"
        )
    if not isinstance(meta.get("model"), str):
        raise RunFileError(f"{path}: field {META}.model should be the model kind, found {meta.get('model')!r}")
    if "run" in meta and not isinstance(meta["run"], dict):
        raise RunFileError(f"{path}: field {META}.run should be an object, found {type(meta['run']).__name__}")
    return config


def read_weights(folder: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``: a missing, truncated or damaged file, or non-finite
    values, are one line naming the file."""
    path = Path(folder) / WEIGHTS_NAME
    load_file = safetensors_torch().load_file
    if not path.is_file():
        raise CheckpointError(f"no {WEIGHTS_NAME} in {path.parent}: expected a folder that `pyrovae export` wrote")
    try:
        state = load_file(str(path), device=str(map_location))
    except OSError as error:
        from ..rundir import os_error_message

        raise CheckpointError(os_error_message(error, path, "read")) from None
    except Exception as error:  # noqa: BLE001 (safetensors' own error for a damaged file)
        said = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(
            f"cannot read {path} (truncated or not a safetensors file: {said}): export the run again"
        ) from None
    if not state:
        raise CheckpointError(f"{path} holds no tensors: export the run again")
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values: the file was altered")
    return state


def _listed(names: list[str], limit: int = 3) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_fit(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """One line naming the keys and shapes where ``state`` does not fit ``model`` (weights of
    another architecture), before anything is loaded."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{n} {found[n]} in the file, {expected[n]} in the model"
        for n in expected
        if found.get(n, expected[n]) != expected[n]
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if shapes:
        problems.append(f"shapes differ: {_listed(shapes, 2)}")
    if problems:
        raise CheckpointError(
            f"the weights in {source} do not fit the model its {CONFIG_NAME} describes ({'; '.join(problems)}): "
            "the two files come from different models; export the run again"
        )


def load_pretrained(
    folder: str | Path,
    map_location: str | torch.device = "cpu",
    prior: str | type | torch.nn.Module | None = None,
    trust_prior: bool = False,
    model: str | type | None = None,
    trust_model: bool = False,
) -> LatentVariableModel:
    """Rebuild the model a folder of :func:`save_pretrained` (``pyrovae export``) holds, from JSON and
    safetensors only (no pickle, no training state), in the saved dtype.

    ``prior``, ``trust_prior``, ``model`` and ``trust_model`` are as in :func:`pyrovae.load_vae`: a
    class of yours that ``config.json`` names is imported only when you name it again or trust the
    folder.
    """
    folder = Path(folder)
    config = read_pretrained_config(folder)
    state = read_weights(folder, map_location)
    meta = config.pop(META)
    source = str(folder / CONFIG_NAME)
    cls = recorded_model_class(meta["model"], named=model, trust=trust_model, source=source)
    floats = [t.dtype for t in state.values() if t.is_floating_point()]
    dtype = floats[0] if floats else torch.get_default_dtype()
    try:
        built = cls.from_hparams(config, prior=prior, trust_prior=trust_prior, source=source).to(dtype)
    except (PriorError, ModelError):  # about the class named: they say so themselves
        raise
    except (TypeError, ValueError, KeyError) as error:
        said = " ".join(str(error).split()) or type(error).__name__
        raise RunFileError(f"the model in {source} cannot be built from its settings: {said}") from None
    check_fit(built, state, str(folder / WEIGHTS_NAME))
    built.load_state_dict(state)
    return built.to(map_location)
