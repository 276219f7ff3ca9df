"""Estimation: what is estimated (ELBO estimators, ``--elbo``), how a step runs (engines,
``--engine``), the training objective as a torch module, and the hand-written closed-form ELBO.

Equation numbers refer to docs/theory.md.
"""

from .closed_form import closed_form_elbo
from .compiled import CompiledGraph, CompiledObjective, CompiledTrace_ELBO, CompiledTraceMeanField_ELBO
from .elbo import DEPRECATED_ELBOS, ELBOS, estimate_elbo, kl_modes, make_elbo, split_elbo_name
from .engines import (
    AUTO_MIN_STEPS,
    ENGINE_NAMES,
    ENGINES,
    CompiledEngine,
    EagerEngine,
    Engine,
    JitEngine,
    TracedObjective,
    make_engine,
)
from .lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from .objective import Objective, program_modules

__all__ = [
    "closed_form_elbo",
    "ELBOS",
    "DEPRECATED_ELBOS",
    "make_elbo",
    "split_elbo_name",
    "estimate_elbo",
    "kl_modes",
    "Objective",
    "program_modules",
    "Engine",
    "EagerEngine",
    "CompiledEngine",
    "JitEngine",
    "TracedObjective",
    "ENGINES",
    "ENGINE_NAMES",
    "AUTO_MIN_STEPS",
    "make_engine",
    "CompiledObjective",
    "CompiledGraph",
    "CompiledTrace_ELBO",
    "CompiledTraceMeanField_ELBO",
    "LeanTrace_ELBO",
    "LeanTraceMeanField_ELBO",
]
