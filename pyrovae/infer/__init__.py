"""Estimation: what is estimated (ELBO estimators and the objectives beyond the ELBO, ``--elbo``),
the training objective as a torch module, and the
hand-written closed forms. How a step runs (``--engine``) is :mod:`pyrovae.train.engines`.

Equation numbers refer to docs/theory.md.
"""

from .closed_form import closed_form_elbo
from .compiled import CompiledGraph, CompiledObjective
from .elbo import (
    DEPRECATED_ELBOS,
    ELBOS,
    estimate_elbo,
    kl_modes,
    make_elbo,
    register_objective,
    split_elbo_name,
)
from .infovae import InfoVAE_ELBO
from .iwae import IWAE_ELBO
from .kl_weighting import KLWeighting
from .lean_elbo import KLWeightedMeanField_ELBO, KLWeightedTrace_ELBO, LeanTrace_ELBO, LeanTraceMeanField_ELBO
from .module_elbo import ModuleELBO, describe_objective, optimises_the_elbo
from .objective import Objective, program_modules
from .options import ObjectiveOptions
from .traced import TracedObjective

__all__ = [
    "closed_form_elbo",
    "ELBOS",
    "DEPRECATED_ELBOS",
    "make_elbo",
    "register_objective",
    "split_elbo_name",
    "estimate_elbo",
    "kl_modes",
    "Objective",
    "program_modules",
    "TracedObjective",
    "CompiledObjective",
    "CompiledGraph",
    "LeanTrace_ELBO",
    "LeanTraceMeanField_ELBO",
    "IWAE_ELBO",
    "InfoVAE_ELBO",
    "KLWeightedMeanField_ELBO",
    "KLWeightedTrace_ELBO",
    "KLWeighting",
    "ModuleELBO",
    "ObjectiveOptions",
    "describe_objective",
    "optimises_the_elbo",
]
