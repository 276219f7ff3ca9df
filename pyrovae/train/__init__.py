"""Training: the loop and checkpoints.

Equation numbers refer to docs/theory.md.
"""

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_vae, save_checkpoint, vae_from_checkpoint
from .loop import FitState, History, NonFiniteLossError, TrainingInterrupted, fit, make_adam

__all__ = [
    "fit",
    "make_adam",
    "History",
    "FitState",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "save_checkpoint",
    "load_checkpoint",
    "load_vae",
    "vae_from_checkpoint",
    "CHECKPOINT_NAME",
]
