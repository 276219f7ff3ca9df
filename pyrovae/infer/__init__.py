"""Estimation: the ELBO estimators, the hand-written closed-form ELBO, compiled steps.

Equation numbers refer to docs/theory.md.
"""

from .closed_form import closed_form_elbo
from .compiled import CompiledStep, CompiledTrace_ELBO, CompiledTraceMeanField_ELBO
from .elbo import ELBOS, JitTraceMeanFieldELBO, estimate_elbo, kl_modes, make_elbo
from .lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO

__all__ = [
    "closed_form_elbo",
    "LeanTrace_ELBO",
    "LeanTraceMeanField_ELBO",
    "CompiledTrace_ELBO",
    "CompiledTraceMeanField_ELBO",
    "CompiledStep",
    "ELBOS",
    "make_elbo",
    "estimate_elbo",
    "kl_modes",
    "JitTraceMeanFieldELBO",
]
