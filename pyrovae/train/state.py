"""The resume state of a training run: everything but the model's parameters that :func:`pyrovae.fit`
needs to continue exactly where it stopped, as one typed object.

It travels inside ``checkpoint.pt`` as plain tensors, numbers, strings, lists and dicts
(:meth:`ResumeState.to_dict`), so the checkpoint loads with ``torch.load(..., weights_only=True)``;
:meth:`ResumeState.from_dict` checks that structure when it is read back, naming the field that is
missing or wrong, so a damaged checkpoint is refused in one line rather than failing mid-resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError, renamed_names
from ..rng import GeneratorStates

__all__ = ["ResumeState"]


@dataclass
class ResumeState:
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
    :ivar selection: the model selection's state (best epoch, its parameters; see
        :class:`pyrovae.train.selection.ModelSelection`) where the run holds out validation rows,
        else ``None`` (checkpoints written before it existed have none).
    :ivar grad_norms: the sum of this epoch's gradient norms so far and the steps it counts
        (checkpoints written before it existed have ``(0.0, 0)``: the epoch's mean then counts the
        steps after the resume).
    :ivar train_kl: the sum of this epoch's steps' KL per latent site so far
        (:mod:`pyrovae.train.step_kl`; empty where the objective is not the ELBO, and in older checkpoints).
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
    selection: dict[str, Any] | None = None
    grad_norms: tuple[float, int] = (0.0, 0)
    train_kl: list[float] = field(default_factory=list)

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
            **({} if self.selection is None else {"selection": self.selection}),
            "grad_norms": [float(self.grad_norms[0]), int(self.grad_norms[1])],
            "train_kl": [float(v) for v in self.train_kl],
        }

    @classmethod
    def from_dict(cls, value: Any, source: str = "the checkpoint") -> ResumeState:
        """Check and read :meth:`to_dict`'s layout (as saved under a checkpoint's ``resume``): a
        one-line :class:`~pyrovae.errors.CheckpointError` names ``source`` and the field that is
        missing or wrong."""

        def wrong(field: str, expected: str, found: Any) -> CheckpointError:
            return CheckpointError(f"{source}: field 'resume.{field}' should be {expected}, found {found}")

        if not isinstance(value, dict):
            raise CheckpointError(f"{source} holds no training state to resume from (found {type(value).__name__})")
        kinds = {"optimizer": dict, "epoch": int, "batch": int, "step": int, "epoch_loss": (int, float),
                 "epoch_rng": dict, "rng": dict, "history": dict}  # fmt: skip
        for name, kind in kinds.items():
            item = value.get(name)
            if not isinstance(item, kind) or isinstance(item, bool):
                found = type(item).__name__ if name in value else "nothing"
                expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
                raise wrong(name, f"a {expected}", found)
        for name, least in (("epoch", 1), ("batch", 0), ("step", 0)):
            if value[name] < least:
                raise wrong(name, f">= {least}", value[name])
        if not math.isfinite(value["epoch_loss"]):
            raise wrong("epoch_loss", "finite", value["epoch_loss"])
        optimizer = value["optimizer"]
        if not isinstance(optimizer.get("state"), dict) or not isinstance(optimizer.get("param_groups"), list):
            raise wrong("optimizer", "an optimizer state_dict with 'state' and 'param_groups'", "other keys")
        history = value["history"]
        epochs, step_elbos = history.get("epochs"), history.get("step_elbos")
        if not (isinstance(epochs, list) and all(isinstance(r, dict) for r in epochs) and isinstance(step_elbos, list)):
            raise wrong("history", "a dict of the lists 'epochs' (of records) and 'step_elbos'", "other contents")
        if len(epochs) != value["epoch"] - 1:
            raise wrong("history.epochs", f"{value['epoch'] - 1} records before epoch {value['epoch']}", len(epochs))
        selection = value.get("selection")
        if selection is not None and not isinstance(selection, dict):
            raise wrong("selection", "a dict", type(selection).__name__)
        norms = value.get("grad_norms", [0.0, 0])
        if not (isinstance(norms, list) and len(norms) == 2 and all(isinstance(v, (int, float)) for v in norms)):
            raise wrong("grad_norms", "a list [sum of gradient norms, steps]", repr(norms)[:40])
        train_kl = value.get("train_kl", [])
        if not (isinstance(train_kl, list) and all(isinstance(v, (int, float)) for v in train_kl)):
            raise wrong("train_kl", "a list of numbers (the KL per latent site summed so far)", repr(train_kl)[:40])
        return cls(
            optimizer=optimizer,
            epoch=value["epoch"],
            batch=value["batch"],
            step=value["step"],
            epoch_loss=float(value["epoch_loss"]),
            epoch_rng=GeneratorStates.from_dict(value["epoch_rng"], f"{source}: field 'resume.epoch_rng'"),
            rng=GeneratorStates.from_dict(value["rng"], f"{source}: field 'resume.rng'"),
            epochs=list(epochs),
            step_elbos=list(step_elbos),
            selection=selection,
            grad_norms=(float(norms[0]), int(norms[1])),
            train_kl=[float(v) for v in train_kl],
        )


# pyrovae 0.2.0.dev0's name
__getattr__ = renamed_names(__name__, {"TrainState": "ResumeState"}, globals())
