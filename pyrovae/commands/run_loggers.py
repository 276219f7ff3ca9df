"""The loggers of a ``pyrovae fit`` run (``--logger``): checked before anything is written, then
made for its run directory as one callback of the training loop (rank 0 alone: the other ranks
of a ``torchrun`` write nothing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import FitConfig
from ..errors import DependencyError
from ..plan import RunPlan
from ..spec.loggers import check_loggers, split_loggers
from ..train.loggers import TrainingLogger, make_writers

__all__ = ["check_logger_extras", "run_logger", "LOGGING_FIELDS", "resumed_logging", "carried_on_replace"]

#: the options a resumed run may change: how it is logged, not what it computes
LOGGING_FIELDS = ("logger", "log_every", "mlflow_uri")

#: ``--logger`` name -> the module it needs and the extra that installs it
_NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def check_logger_extras(config: FitConfig) -> None:
    """Refuse, before anything is written, a ``--logger`` whose library is not installed (one line
    naming the package and the extra)."""
    import importlib.util

    for name in config.logger:
        module, extra = _NEEDS.get(name, (None, None))
        if module is not None and importlib.util.find_spec(module) is None:
            raise DependencyError(
                f"--logger {name} needs the {module} package, which is not installed: "
                f'pip install "pyrovae[{extra}]" (or leave --logger {name} out)'
            )


def run_logger(
    plan: RunPlan, run_dir: Callable[[], Path], resume: Any = None, home: Path | None = None
) -> TrainingLogger | None:
    """The training loop's logger callback for the run whose directory ``run_dir()`` says (``None``
    without ``--logger``); ``resume``: the resume state of a continued run (its loggers append from
    its step); ``home``: the run directory a run that replaces another (``--overwrite``) takes the
    place of."""
    config = plan.config
    if not config.logger:
        return None
    writers = make_writers(config.logger, run_dir, config.mlflow_uri, home)
    params: dict[str, Any] = {k: v for k, v in config.to_dict().items() if v not in (None, [], {})}
    return TrainingLogger(
        writers,
        log_every=config.log_every,
        test_x=plan.data.test,
        resume_step=None if resume is None else resume.step,
        params=params,
    )


def resumed_logging(config: FitConfig, recorded: FitConfig, given: dict[str, Any] | None, step: int) -> dict[str, int]:
    """Set on ``config`` (the checkpoint's options) the logging of a resumed run: the loggers of its
    ``config.json`` (``recorded``, the newest record) and those ``given`` on the command line
    (``--logger`` adds; a logger is never dropped, its files would stop mid-run); ``--log-every`` and
    ``--mlflow-uri``, where given, replace the recorded ones. Returns ``{name: step}`` for each logger
    this resume adds (its files start after ``step``), to be recorded in ``config.json``."""
    given = given or {}
    loggers = split_loggers([*recorded.logger, *given.get("logger", ())])
    log_every = given.get("log_every", recorded.log_every)
    mlflow_uri = given.get("mlflow_uri", recorded.mlflow_uri)
    config.logger = check_loggers(loggers, log_every, mlflow_uri)
    config.log_every, config.mlflow_uri = log_every, mlflow_uri
    return {name: step for name in config.logger if name not in recorded.logger}


def carried_on_replace(config: FitConfig) -> tuple[str, ...]:
    """What a run that replaces another (``--overwrite``) takes over from it at its first
    checkpoint: the local MLflow store (``mlruns``) its MLflow logger writes to, where it has one."""
    import os

    local = "mlflow" in config.logger and not (config.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    return ("mlruns",) if local else ()
