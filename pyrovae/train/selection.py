"""Model selection on a validation split and early stopping (``--validation``, ``--patience``).

After every epoch the loop estimates the ELBO of the validation rows (training rows held out
once, with a fixed seed: never the test set) and hands it to :class:`ModelSelection`, which keeps
a copy of the parameters of the best epoch so far and says when ``patience`` epochs have passed
without an improvement. When training ends, early or not, the model gets the best epoch's
parameters back: the number a run reports on its test set is that of the model a practitioner
would have chosen without looking at the test set. The selection's state (the best epoch and a copy
of its parameters) travels in the resume state, so a resumed run selects as one that never
stopped; a finished run's checkpoint holds the selected parameters, and resuming it with more
epochs continues from them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["ModelSelection"]


class ModelSelection:
    """The best epoch by validation ELBO, its parameters, and the early-stopping rule.

    :param int patience: stop after this many epochs without a new best (0: never).
    """

    def __init__(self, patience: int = 0):
        self.patience = patience
        self.best_epoch: int | None = None
        self.best_elbo = -math.inf
        self.best_model: dict[str, torch.Tensor] | None = None
        self.stopped = False

    def update(self, epoch: int, validation_elbo: float, model: nn.Module) -> bool:
        """Record an epoch; returns whether training should stop now."""
        if validation_elbo > self.best_elbo or self.best_epoch is None:
            self.best_epoch, self.best_elbo = epoch, float(validation_elbo)
            self.best_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.stopped = bool(self.patience) and epoch - self.best_epoch >= self.patience
        return self.stopped

    def restore(self, model: nn.Module) -> bool:
        """Give ``model`` the best epoch's parameters; returns whether there was one."""
        if self.best_model is None:
            return False
        model.load_state_dict(self.best_model)
        return True

    def to_dict(self) -> dict[str, Any]:
        """Plain types for a ``weights_only`` checkpoint (tensors on the CPU)."""
        return {
            "best_epoch": self.best_epoch,
            "best_elbo": self.best_elbo,
            "best_model": None if self.best_model is None else {k: v.cpu() for k, v in self.best_model.items()},
            "stopped": self.stopped,
        }

    def load(self, value: Any, source: str, device: torch.device | None = None) -> None:
        """Read :meth:`to_dict`'s layout back, checked; a one-line :class:`~pyrovae.errors.CheckpointError`
        names the field that is wrong."""
        ok = (
            isinstance(value, dict)
            and (value.get("best_epoch") is None or isinstance(value.get("best_epoch"), int))
            and isinstance(value.get("best_elbo"), float)
            and isinstance(value.get("stopped"), bool)
            and (value.get("best_model") is None or isinstance(value.get("best_model"), dict))
        )
        if not ok:
            raise CheckpointError(
                f"{source}: field 'resume.selection' should hold best_epoch, best_elbo, best_model and stopped, "
                f"found {value!r:.200}"
            )
        self.best_epoch, self.best_elbo, self.stopped = value["best_epoch"], value["best_elbo"], value["stopped"]
        model = value["best_model"]
        self.best_model = None if model is None else {k: v.to(device) for k, v in model.items()}
