"""Training: the options, the guarded step (and its CUDA-graph replay), the loop, its resume state and checkpoints.

Equation numbers refer to docs/theory.md.
"""

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_vae, save_checkpoint, vae_from_checkpoint
from .engines import Engine, register_engine
from .graphed import GraphedStep
from .interrupts import TrainingInterrupted, stop_on_signals
from .loop import FitState, History, fit
from .options import DEVICES, TrainOptions, check_device, resolve_device
from .state import TrainState
from .step import GuardedStep, NonFiniteLossError, make_adam

__all__ = [
    "fit",
    "Engine",
    "register_engine",
    "History",
    "FitState",
    "TrainOptions",
    "TrainState",
    "GuardedStep",
    "GraphedStep",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "make_adam",
    "stop_on_signals",
    "resolve_device",
    "check_device",
    "DEVICES",
    "save_checkpoint",
    "load_checkpoint",
    "load_vae",
    "vae_from_checkpoint",
    "CHECKPOINT_NAME",
]
