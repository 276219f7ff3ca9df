"""Exported models through ``huggingface_hub`` (the optional extra ``pyrovae[hub]``).

:class:`PretrainedModel` is a :class:`huggingface_hub.ModelHubMixin`: its ``from_pretrained`` takes
a local folder or a Hub repository id, its ``save_pretrained`` writes the folder of ``pyrovae
export`` (and ``push_to_hub`` uploads it)::

    from pyrovae.pretrained.hub import PretrainedModel

    vae = PretrainedModel.from_pretrained("exported").model     # or "user/repo" on the Hub
    PretrainedModel(vae).save_pretrained("again")               # model.safetensors + config.json

The folder is the one ``PyTorchModelHubMixin`` reads too: ``config.json`` holds the model's
constructor arguments at its top level and ``model.safetensors`` its state dict, so a class
``class MyVAE(pyrovae.VAE, PyTorchModelHubMixin)`` loads a one-level VAE's folder as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import import_optional
from ..models.base import LatentVariableModel
from .folder import CONFIG_NAME, WEIGHTS_NAME, load_pretrained, save_pretrained

_hub = import_optional("huggingface_hub", "pyrovae.pretrained.hub", "hub")
ModelHubMixin, snapshot_download = _hub.ModelHubMixin, _hub.snapshot_download

__all__ = ["PretrainedModel"]


class PretrainedModel(ModelHubMixin, library_name="pyrovae", tags=["pyrovae", "vae", "pyro"]):
    """A pyrovae model (:attr:`model`) with Hugging Face's ``save_pretrained``, ``from_pretrained``
    and ``push_to_hub``, over :func:`~pyrovae.pretrained.save_pretrained` and
    :func:`~pyrovae.pretrained.load_pretrained` (the same trust rule: a class of yours that the
    folder names is imported only when you pass ``model=``/``prior=`` or ``trust_model``/``trust_prior``).

    :param model: the model to save.
    """

    def __init__(self, model: LatentVariableModel):
        self.model = model

    def _save_pretrained(self, save_directory: Path) -> None:
        """``model.safetensors`` and ``config.json`` into ``save_directory`` (which the mixin made);
        the mixin adds its model card ``README.md`` where there is none."""
        staged = Path(save_directory) / ".pyrovae-export"
        save_pretrained(self.model, staged, overwrite=True)
        for name in (WEIGHTS_NAME, CONFIG_NAME):
            (staged / name).replace(Path(save_directory) / name)
        staged.rmdir()

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str = "cpu",
        prior: Any = None,
        trust_prior: bool = False,
        model: Any = None,
        trust_model: bool = False,
        **ignored: Any,
    ) -> PretrainedModel:
        """A local folder as it is, or a Hub repository's ``config.json`` and ``model.safetensors``
        downloaded (:func:`huggingface_hub.snapshot_download`), loaded by :func:`load_pretrained`.
        (``ignored``: the keys of ``config.json`` the mixin passes on; they are read again from the file.)"""
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(
                snapshot_download(
                    repo_id=model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                    local_files_only=local_files_only, token=token, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME],
                )
            )  # fmt: skip
        loaded = load_pretrained(
            folder, map_location, prior=prior, trust_prior=trust_prior, model=model, trust_model=trust_model
        )
        return cls(loaded)
