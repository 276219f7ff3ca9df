"""pyrovae 0.1's name of :mod:`pyrovae.commands` (the commands of a run directory), kept so that
code written for 0.1 goes on working; new code imports from :mod:`pyrovae.commands`."""

from __future__ import annotations

from .commands import *  # noqa: F403
from .commands import __all__  # noqa: F401
from .errors import renamed_names

# pyrovae 0.1's name
__getattr__ = renamed_names(__name__, {"train_run": "fit_run"}, globals())
