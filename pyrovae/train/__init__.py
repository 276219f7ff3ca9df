"""Training: the options, the guarded step (and its CUDA-graph replay), the loop, its resume state and checkpoints.

Equation numbers refer to docs/theory.md.
"""

from ..errors import renamed_names
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, load_vae, save_checkpoint, vae_from_checkpoint
from .engines import Engine, register_engine
from .graphed import GraphedStep
from .interrupts import FitInterrupted, stop_on_signals
from .loop import FitState, History, fit
from .options import DEVICES, FitOptions, check_device, resolve_device
from .state import ResumeState
from .step import GuardedStep, NonFiniteLossError, make_adam

__all__ = [
    "fit",
    "Engine",
    "register_engine",
    "History",
    "FitState",
    "FitOptions",
    "ResumeState",
    "GuardedStep",
    "GraphedStep",
    "NonFiniteLossError",
    "FitInterrupted",
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


# the names of pyrovae 0.1 and 0.2.0.dev0
__getattr__ = renamed_names(
    __name__,
    {"TrainOptions": "FitOptions", "TrainState": "ResumeState", "TrainingInterrupted": "FitInterrupted"},
    globals(),
)
