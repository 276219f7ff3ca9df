"""Where :class:`~pyrovae.train.loggers.TrainingLogger` writes: one writer per ``--logger``.

- :class:`CSVWriter` (``csv``, nothing to install): ``metrics.csv``, one row per epoch with every
  field of the epoch's record (a table such as ``test_kl_sites`` as one column per site,
  ``test_kl_sites/z``), and ``steps.csv``, ``step,loss`` every ``--log-every`` steps;
- :class:`TensorBoardWriter` (``tensorboard``, ``pip install "pyrovae[tensorboard]"``): event
  files in ``tensorboard/``, the same scalars under the same names, and the picture grids;
- :class:`MLflowWriter` (``mlflow``, ``pip install "pyrovae[mlflow]"``): a run of the experiment
  ``pyrovae`` in the local store ``mlruns/`` or at a tracking URI; metrics, the run's options as
  parameters, the picture grids as artifacts. The run's id is kept in ``mlflow_run.json``, so that a
  resumed run continues the same MLflow run.

Every writer is told at :meth:`~Writer.open` the step a resumed run continues from, and answers up
to which step it already holds values: the CSV files keep the rows up to that step (rows a stopped
run wrote after its checkpoint are dropped), TensorBoard purges later events (``purge_step``), and
MLflow answers the last step it holds, so that nothing is logged twice.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError
from ..rundir import write_text

__all__ = ["Writer", "CSVWriter", "TensorBoardWriter", "MLflowWriter", "WRITERS", "LOGGER_NAMES", "LOGGER_FILES"]


def _missing(package: str, extra: str) -> DependencyError:
    return DependencyError(
        f'--logger {extra} needs the {package} package, which is not installed: pip install "pyrovae[{extra}]"'
    )


#: a run directory, or a function that says where it is now (a run that replaces another with
#: ``--overwrite`` trains in a folder beside it, which takes the other's name at its first checkpoint)
RunDir = str | os.PathLike | Callable[[], Path]


class Writer:
    """One place the logs go. ``where`` names it in messages."""

    name = "writer"

    def __init__(self, run_dir: RunDir) -> None:
        fixed = None if callable(run_dir) else Path(run_dir)
        self._run_dir: Callable[[], Path] = run_dir if fixed is None else (lambda: fixed)  # type: ignore[assignment]

    @property
    def run_dir(self) -> Path:
        """The run directory, where it is now."""
        return Path(self._run_dir())

    @property
    def where(self) -> str:
        return str(self.run_dir)

    def open(self, resume_step: int | None, params: dict[str, Any]) -> int:
        """Start (or continue, from ``resume_step``) writing; return the last step already held."""
        return resume_step or 0

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log the numbers ``values`` at ``step``."""

    def epoch(self, record: dict[str, Any], values: dict[str, float]) -> None:
        """Log an epoch's record (``values``: its numbers, flattened) at its step."""
        self.scalars(values, int(record["step"]))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Log a picture (``(H, W, C)`` of ``uint8``) at ``step``; writers without pictures skip it."""

    def close(self) -> None:
        """Flush and close."""


class CSVWriter(Writer):
    """``metrics.csv`` (one row per epoch) and ``steps.csv`` (``step,loss``) in the run directory."""

    name = "csv"

    def __init__(self, run_dir: RunDir) -> None:
        super().__init__(run_dir)
        self.rows: list[dict[str, Any]] = []
        self._steps: Any = None

    @property
    def epochs_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def steps_path(self) -> Path:
        return self.run_dir / "steps.csv"

    @property
    def where(self) -> str:
        return str(self.epochs_path)

    def open(self, resume_step: int | None, params: dict[str, Any]) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.rows = []
            write_text(self.steps_path, "step,loss\n")
        else:  # keep what the run held at its checkpoint
            self.rows = [r for r in _read_csv(self.epochs_path) if float(r.get("step") or 0) <= resume_step]
            steps = [r for r in _read_csv(self.steps_path) if float(r.get("step") or 0) <= resume_step]
            write_text(self.steps_path, "step,loss\n" + "".join(f"{r['step']},{r['loss']}\n" for r in steps))
        self._steps = self.steps_path.open("a", newline="")
        return resume_step or 0

    def scalars(self, values: dict[str, float], step: int) -> None:
        if "loss" in values:
            self._steps.write(f"{step},{values['loss']!r}\n")
            self._steps.flush()

    def epoch(self, record: dict[str, Any], values: dict[str, float]) -> None:
        self.rows.append({**values, **{k: v for k, v in _flat_text(record).items()}})
        columns: list[str] = []
        for row in self.rows:
            columns += [c for c in row if c not in columns]
        out = io.StringIO()
        table = csv.DictWriter(out, columns, lineterminator="\n")
        table.writeheader()
        table.writerows(self.rows)
        write_text(self.epochs_path, out.getvalue())  # (whole, atomically: a column may have been added)

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _flat_text(record: dict[str, Any]) -> dict[str, str]:
    """The record's words (``kl_mode`` per site, ``objective``) as CSV columns."""
    out = {}
    for key, value in record.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in value.items() if isinstance(v, str)})
    return out


class TensorBoardWriter(Writer):
    """Event files in ``tensorboard/`` of the run directory (torch's ``SummaryWriter``)."""

    name = "tensorboard"

    def __init__(self, run_dir: RunDir) -> None:
        super().__init__(run_dir)
        self.writer: Any = None

    @property
    def where(self) -> str:
        return str(self.run_dir / "tensorboard")

    def open(self, resume_step: int | None, params: dict[str, Any]) -> int:
        try:
            import tensorboard  # noqa: F401 (torch's writer needs it)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard") from None
        # (on a resume, TensorBoard drops the events a stopped run wrote after its checkpoint)
        purge = None if resume_step is None else resume_step + 1
        self.writer, self._opened = SummaryWriter(self.where, purge_step=purge, flush_secs=30), self.where
        if resume_step is None and params:
            self.writer.add_text("options", "\n".join(f"    {k} = {v}" for k, v in params.items()), 0)
            self.writer.flush()
        return resume_step or 0

    def _writer(self) -> Any:
        """The writer, in the run directory where it is now: a run that replaced another goes on in
        a new event file where its folder moved (what it wrote before is flushed, and moved with it)."""
        if self.where != self._opened:
            from torch.utils.tensorboard import SummaryWriter

            old, self.writer, self._opened = self.writer, SummaryWriter(self.where, flush_secs=30), self.where
            try:
                old.close()
            except Exception:  # noqa: BLE001 (its file moved; everything it held was flushed)
                pass
        return self.writer

    def scalars(self, values: dict[str, float], step: int) -> None:
        writer = self._writer()
        for key, value in values.items():
            writer.add_scalar(key, value, step)
        writer.flush()  # (a few bytes; nothing is lost if the run directory moves or the run is killed)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._writer().add_image(tag, image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowWriter(Writer):
    """A run of the MLflow experiment ``pyrovae``: in ``mlruns/`` of the run directory, or at
    ``tracking_uri`` (``--mlflow-uri``, else ``MLFLOW_TRACKING_URI``).

    A run that replaces another (``--overwrite``) trains in a folder beside it, which takes the
    other's name at its first checkpoint: ``home``, that name. A local store (which records absolute
    paths) then lives in ``home/mlruns`` from the start, the store the replaced run used (its MLflow
    runs are kept, the one of the replaced run tagged ``pyrovae.replaced_by`` with the new run's id);
    the folder that takes ``home``'s place carries it over. A replacing run that stops before its
    first checkpoint leaves the replaced run in place: its own MLflow run is then deleted
    (MLflow's ``delete_run``) and a ``home`` it made for the store is removed again.
    """

    name = "mlflow"
    EXPERIMENT = "pyrovae"

    def __init__(self, run_dir: RunDir, tracking_uri: str | None = None, home: Path | None = None) -> None:
        super().__init__(run_dir)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        #: whether the run directory holds the store (MLflow's local file store)
        self.local = uri is None
        self.home = None if home is None else Path(home).resolve()
        self.uri = uri or ((self.home or self.run_dir) / "mlruns").resolve().as_uri()
        self.client: Any = None
        self.run_id: str | None = None
        #: the MLflow run of the run this one replaces, until it is tagged; whether ``home`` was made here
        self._replaced: str | None = None
        self._made_home = False

    @property
    def where(self) -> str:
        return self.uri

    @property
    def id_path(self) -> Path:
        return self.run_dir / "mlflow_run.json"

    def open(self, resume_step: int | None, params: dict[str, Any]) -> int:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow", "mlflow") from None
        # (an unreachable server answers at once rather than after minutes of retries)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        if self.local:  # (MLflow 3 keeps its file store for those who say so: no database to install)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._made_home = self.home is not None and self.local and not self.home.exists()
        self.client = MlflowClient(tracking_uri=self.uri)  # (a local store is made now)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.id_path.is_file():
            self.run_id = json.loads(self.id_path.read_text())["run_id"]
            held = [m.step for key in ("loss", "epoch") for m in self.client.get_metric_history(self.run_id, key)]
            return max([resume_step, *held])
        if self.home is not None:
            self._replaced = _run_id_in(self.home / "mlflow_run.json", self.uri)
        home = self.home or self.run_dir
        experiment = self.client.get_experiment_by_name(self.EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.EXPERIMENT)
        run = self.client.create_run(experiment_id, run_name=home.name, tags={"pyrovae.run_dir": str(home)})
        self.run_id = run.info.run_id
        write_text(self.id_path, json.dumps({"run_id": self.run_id, "tracking_uri": self.uri}) + "\n")
        for key, value in params.items():
            self.client.log_param(self.run_id, key, str(value)[:500])
        return resume_step or 0

    def _in_place(self) -> bool:
        """Whether the run directory is at ``home`` (always, for a run that replaces none); the first
        time it is, the replaced run's MLflow run is tagged."""
        if self.home is None:
            return True
        if self.run_dir.resolve() != self.home:
            return False
        if self._replaced is not None:
            self.client.set_tag(self._replaced, "pyrovae.replaced_by", self.run_id)
            self._replaced = None
        return True

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self._in_place()
        stamp = _millis()
        metrics = [Metric(_mlflow_key(k), float(v), stamp, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, image, key=_mlflow_key(tag), step=step)

    def close(self) -> None:
        if self.client is None or self.run_id is None:
            return
        try:
            if self._in_place():
                self.client.set_terminated(self.run_id)
                return
            self.client.delete_run(self.run_id)  # a replacing run that stopped before its first checkpoint
            if self._made_home:
                shutil.rmtree(self.home, ignore_errors=True)
        finally:
            self.client = None


def _run_id_in(path: Path, uri: str) -> str | None:
    """The MLflow run id that ``mlflow_run.json`` at ``path`` records in the store ``uri``, or ``None``."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("tracking_uri") != uri:
        return None
    return saved.get("run_id") if isinstance(saved.get("run_id"), str) else None


def _millis() -> int:
    import time

    return int(time.time() * 1000)


def _mlflow_key(key: str) -> str:
    """MLflow's names take letters, digits and ``_-. /``: anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)


#: ``--logger`` name -> its writer
WRITERS: dict[str, type[Writer]] = {"csv": CSVWriter, "tensorboard": TensorBoardWriter, "mlflow": MLflowWriter}
LOGGER_NAMES = tuple(WRITERS)
#: what the writers may put in a run directory (a start that stops before its first checkpoint removes them)
LOGGER_FILES = ("metrics.csv", "steps.csv", "tensorboard", "mlruns", "mlflow_run.json")
