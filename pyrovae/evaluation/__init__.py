"""Evaluation: IWAE log p(x), PSIS k-hat, active units.

Equation numbers refer to docs/theory.md.
"""

from .active_units import ActiveUnits, active_units, active_units_from_locs, evaluation_input
from .iwae import Draws, Evaluation, LogMeanExp, evaluate, iwae_log_likelihood
from .psis import KHAT_THRESHOLD, PSIS_MIN_DRAWS, psis_khat

__all__ = [
    "psis_khat",
    "KHAT_THRESHOLD",
    "PSIS_MIN_DRAWS",
    "active_units",
    "ActiveUnits",
    "active_units_from_locs",
    "evaluation_input",
    "evaluate",
    "Evaluation",
    "Draws",
    "iwae_log_likelihood",
    "LogMeanExp",
]
