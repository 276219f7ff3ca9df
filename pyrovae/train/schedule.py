r"""Learning-rate schedules (``--lr-schedule``), as a function of the step.

``constant``: :math:`\eta_t = \eta`. ``cosine``: half a cosine from :math:`\eta` at the first step
down to 0 after the last one,

.. math::

    \eta_t = \frac{\eta}{2}\Big(1 + \cos\frac{\pi t}{T}\Big), \qquad t = 0, \dots, T - 1,

with :math:`T` the steps of all ``epochs`` (Loshchilov & Hutter, "SGDR", ICLR 2017, without
restarts). The rate depends on the step number alone, so a resumed run continues the schedule
exactly, and a run stopped early by ``patience`` simply never reaches its end.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..spec.names import LR_SCHEDULES

__all__ = ["learning_rate", "LR_SCHEDULES"]

#: the schedules :func:`learning_rate` knows (``--lr-schedule``)


def learning_rate(schedule: str, lr: float, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (counting from 0) of ``total_steps``."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
