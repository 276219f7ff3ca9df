"""pyrovae 0.1's name of :mod:`pyrovae.commands` (the commands of a run directory), kept so that
code written for 0.1 goes on working; new code imports from :mod:`pyrovae.commands`."""

from __future__ import annotations

from .commands import (
    RUN_FILES,
    RunDirectory,
    RunResult,
    checkpoint_note,
    evaluate_run,
    load_run,
    plot_run,
    read_metrics,
    read_run_config,
    resume_run,
    sample_run,
    train_run,
)

__all__ = [
    "train_run",
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
]
