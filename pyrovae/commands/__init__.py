"""The commands of a run directory, as library functions: ``pyrovae fit`` (:func:`fit_run`,
:func:`resume_run`), ``evaluate`` (:func:`evaluate_run`), ``sample`` (:func:`sample_run`),
``plots`` (:func:`plot_run`) and ``export`` (:func:`export_run`), over the one owner of a run directory's
life, :class:`RunDirectory`."""

from __future__ import annotations

from ..errors import renamed_names
from .evaluate import evaluate_run
from .export import export_run
from .fit import RunResult, fit_run, resume_run
from .loading import load_run
from .plots import plot_run
from .run_directory import RUN_FILES, RunDirectory, checkpoint_note, read_metrics, read_run_config
from .sample import sample_run

__all__ = [
    "fit_run",
    "resume_run",
    "RunResult",
    "RunDirectory",
    "RUN_FILES",
    "read_run_config",
    "read_metrics",
    "checkpoint_note",
    "load_run",
    "evaluate_run",
    "sample_run",
    "plot_run",
    "export_run",
]


# pyrovae 0.2.0.dev0's name
__getattr__ = renamed_names(__name__, {"train_run": "fit_run"}, globals())
