"""The resume state of a training run: everything but the model's parameters that :func:`pyrovae.fit`
needs to continue exactly where it stopped, as one typed object.

It travels inside ``checkpoint.pt`` as plain tensors, numbers, strings, lists and dicts
(:meth:`TrainState.to_dict`), so the checkpoint loads with ``torch.load(..., weights_only=True)``;
:meth:`TrainState.from_dict` checks that structure when it is read back, naming the field that is
missing or wrong, so a damaged checkpoint is refused in one line rather than failing mid-resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError
from ..rng import GeneratorStates

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """Where a run stands, between two steps.

    :ivar optimizer: the optimizer's ``state_dict()``.
    :ivar epoch: the epoch in progress, counting from 1.
    :ivar batch: batches of that epoch already done.
    :ivar step: optimisation steps done in all.
    :ivar epoch_loss: the sum of this epoch's step losses so far.
    :ivar epoch_rng: the generators' states when the epoch began (its binarization and order are
        drawn again from them on resume).
    :ivar rng: the generators' states now (the draws continue from them).
    :ivar epochs: the records of the epochs done.
    :ivar step_elbos: the per-data-point ELBO estimate of every step done.
    """

    optimizer: dict[str, Any]
    epoch: int
    batch: int
    step: int
    epoch_loss: float
    epoch_rng: GeneratorStates
    rng: GeneratorStates
    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_elbos: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain types for a ``weights_only`` checkpoint (the layout :meth:`from_dict` reads)."""
        return {
            "optimizer": self.optimizer,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "epoch_loss": self.epoch_loss,
            "epoch_rng": self.epoch_rng.to_dict(),
            "rng": self.rng.to_dict(),
            "history": {"epochs": self.epochs, "step_elbos": self.step_elbos},
        }

    @classmethod
    def from_dict(cls, value: Any, source: str = "the resume state") -> TrainState:
        """Check and read :meth:`to_dict`'s layout; :class:`CheckpointError` names what is wrong."""
        if not isinstance(value, dict):
            raise CheckpointError(f"{source} must be a dict, got {type(value).__name__}")
        missing = [k for k in ("optimizer", "epoch", "batch", "step", "epoch_loss", "epoch_rng", "rng", "history")
                   if k not in value]  # fmt: skip
        if missing:
            raise CheckpointError(
                f"{source} lacks {', '.join(missing)}: it was not written by pyrovae fit, or is damaged"
            )
        optimizer = value["optimizer"]
        if not isinstance(optimizer, dict) or not {"state", "param_groups"} <= set(optimizer):
            raise CheckpointError(f"{source}['optimizer'] must be an optimizer state_dict (state, param_groups)")
        for name in ("epoch", "batch", "step"):
            if isinstance(value[name], bool) or not isinstance(value[name], int) or value[name] < (name == "epoch"):
                raise CheckpointError(f"{source}['{name}'] must be a non-negative int, got {value[name]!r}")
        if isinstance(value["epoch_loss"], bool) or not isinstance(value["epoch_loss"], (int, float)):
            raise CheckpointError(f"{source}['epoch_loss'] must be a number, got {value['epoch_loss']!r}")
        history = value["history"]
        if (
            not isinstance(history, dict)
            or not isinstance(history.get("epochs"), list)
            or not all(isinstance(r, dict) for r in history["epochs"])
            or not isinstance(history.get("step_elbos"), list)
        ):
            raise CheckpointError(f"{source}['history'] must hold the lists 'epochs' (of records) and 'step_elbos'")
        return cls(
            optimizer=optimizer,
            epoch=value["epoch"],
            batch=value["batch"],
            step=value["step"],
            epoch_loss=float(value["epoch_loss"]),
            epoch_rng=GeneratorStates.from_dict(value["epoch_rng"], f"{source}['epoch_rng']"),
            rng=GeneratorStates.from_dict(value["rng"], f"{source}['rng']"),
            epochs=list(history["epochs"]),
            step_elbos=list(history["step_elbos"]),
        )
