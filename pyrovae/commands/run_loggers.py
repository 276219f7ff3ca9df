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
from ..train.loggers import TrainingLogger, make_writers

__all__ = ["check_logger_extras", "run_logger"]

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


def run_logger(plan: RunPlan, run_dir: Callable[[], Path], resume: Any = None) -> TrainingLogger | None:
    """The training loop's logger callback for the run whose directory ``run_dir()`` says (``None``
    without ``--logger``); ``resume``: the resume state of a continued run (its loggers append from
    its step)."""
    config = plan.config
    if not config.logger:
        return None
    writers = make_writers(config.logger, run_dir, config.mlflow_uri)
    params: dict[str, Any] = {k: v for k, v in config.to_dict().items() if v not in (None, [], {})}
    return TrainingLogger(
        writers,
        log_every=config.log_every,
        test_x=plan.data.test,
        resume_step=None if resume is None else resume.step,
        params=params,
    )
