"""The run directory of ``pyrovae fit``: what is in it, and the one owner of its life — created,
locked, reused or cleared after a start that stopped early, its files read back and checked.

A run directory holds::

    config.json          the run spec, plus the facts resolved at the start (pyrovae.plan.RunPlan.facts)
    metrics.jsonl        one JSON object per epoch (see pyrovae.train.History)
    checkpoint.pt        model + optimizer state, config and history (atomic, every epoch)
    samples.png          decoded prior samples
    reconstructions.png  test images and their reconstructions

and, later, ``evaluation.json`` with ``log_px_histogram.png`` and ``khat_histogram.png`` (``pyrovae
evaluate``), ``samples.png`` drawn again (``pyrovae sample``; older runs may hold it as
``prior_samples.png``), ``latent.png``, ``traversals.png``, ``interpolations.png`` and
``training_curves.png`` (``pyrovae plots``). Every command that writes into it
holds its lock, every file is written atomically, and every run file read back is checked
(:mod:`pyrovae.rundir`). A directory that holds a finished epoch is never restarted over or
rewritten.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ..config import FitConfig, flat_record
from ..data import BINARIZE
from ..errors import ConfigError, RunDirectoryError, RunFileError
from ..rundir import (
    LOCK_NAME,
    check_fields,
    os_errors,
    read_json_object,
    read_metrics_file,
    run_lock,
    write_text,
)
from ..spec.names import is_array_path
from ..train.checkpoint import CHECKPOINT_NAME, check_resume_state, load_checkpoint
from ..train.log_writers import LOGGER_FILES

__all__ = [
    "RunDirectory",
    "RUN_FILES",
    "new_version",
    "default_stem",
    "read_run_config",
    "read_metrics",
    "checkpoint_note",
    "config_from",
]

RUN_FILES = ("config.json", "metrics.jsonl", CHECKPOINT_NAME, "samples.png", "reconstructions.png")
_BINARIZATIONS = tuple(BINARIZE)


class RunDirectory:
    """The run directory at ``path`` (which need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def __str__(self) -> str:
        return str(self.path)

    # -- what it holds ----------------------------------------------------------------------------------
    def is_dir(self) -> bool:
        with os_errors(self.path, "use"):
            return self.path.is_dir()

    def finished_epochs(self) -> int:
        """How many finished epochs ``metrics.jsonl`` records (0 when it is absent or holds nothing;
        a file that cannot be read counts as holding one, so it is never overwritten)."""
        path = self.path / "metrics.jsonl"
        with os_errors(path, "read"):
            if not path.exists():
                return 0
            if not path.is_file():
                return 1
            return sum(1 for line in path.read_text(errors="replace").splitlines() if line.strip())

    def dead_start(self, option: str) -> bool:
        """Whether it holds a start that stopped before its first checkpoint: ``config.json`` at
        most, and a ``metrics.jsonl`` without a finished epoch; nothing else of :data:`RUN_FILES`.
        A directory that holds a finished epoch, or a ``checkpoint.pt`` that is not a file, is never
        taken for one: it is refused in one line that says what is missing and how to recover, and
        nothing in it is touched. ``False`` when it holds no run file.

        :param option: how the messages name the directory (``--out``, ``--resume``).
        """
        out, checkpoint = self.path, self.checkpoint
        with os_errors(out, "use"):
            present = [name for name in RUN_FILES if (out / name).exists() or (out / name).is_symlink()]
            odd = checkpoint.exists() and not checkpoint.is_file()
        if odd:
            kind = "directory" if checkpoint.is_dir() else "special file"
            raise RunDirectoryError(
                f"{option} {out}: {checkpoint} is not a file (a {kind}): move it away and put the run's checkpoint "
                "there, or choose another --out; nothing was changed"
            )
        if not present:
            return False
        done = self.finished_epochs()
        if set(present) <= {"config.json", "metrics.jsonl"} and done == 0:
            return True
        if CHECKPOINT_NAME in present:
            raise RunDirectoryError(
                f"{option} {out} already holds a run ({', '.join(present)}): choose another directory, continue it "
                f"with: pyrovae fit --resume {out}, or replace it with --overwrite"
            )
        epochs = f"{done} finished epoch{'s' * (done != 1)} in metrics.jsonl" if done else ", ".join(present)
        raise RunDirectoryError(
            f"{option} {out} holds a run ({epochs}) but its {CHECKPOINT_NAME} is missing, so it can be neither "
            "resumed nor restarted without losing them: put the checkpoint back to continue it, or choose another "
            "--out; nothing was changed"
        )

    def check_new(self) -> bool:
        """Whether a new run may be written here: ``False`` when it holds none, ``True`` when it holds a
        start that stopped before its first checkpoint (:meth:`dead_start`: nothing that could be
        resumed, so it is reused). Anything else is refused."""
        with os_errors(self.path, "use"):
            if self.path.exists() and not self.path.is_dir():
                raise RunDirectoryError(f"--out {self.path} exists and is not a directory: choose a directory")
        return self.dead_start("--out")

    # -- its life ------------------------------------------------------------------------------------------
    def create(self) -> bool:
        """Make the folder (and its parents); whether this call created it."""
        created = not self.path.exists()
        with os_errors(self.path, "create the run directory"):
            self.path.mkdir(parents=True, exist_ok=True)
        return created

    def lock(self, alternative: str = "") -> Any:
        """Its lock, held while inside (:func:`pyrovae.rundir.run_lock`)."""
        return run_lock(self.path, alternative)

    def lock_if_holds(self, path: Path) -> Any:
        """Its lock when ``path`` is in it, else nothing to hold."""
        return self.lock() if path.parent.resolve() == self.path.resolve() else nullcontext()

    @contextmanager
    def locked_new(self, alternative: str = "", created: bool = False) -> Iterator[bool]:
        """Create it (where needed) and hold its lock; yields whether this run created it (this call,
        or the caller, as ``created`` says). A lock refused there (another writer, a full disk)
        leaves no folder this run created."""
        created = self.create() or created
        with ExitStack() as held:
            try:
                held.enter_context(self.lock(alternative))
            except RunDirectoryError:
                if created:
                    self.remove_start(created)
                raise
            yield created

    def remove_start(self, created: bool) -> None:
        """Remove what a start wrote before its first checkpoint (best effort: never hides the error
        that stopped it). The lock file, the loggers' files and the folder go too where this run
        created the folder (in a folder it did not create, files of those names may not be the run's)."""
        names = ["config.json", "metrics.jsonl", *((*LOGGER_FILES, LOCK_NAME) if created else ())]
        for name in names:
            path = self.path / name
            try:
                if path.is_dir() and not path.is_symlink():  # (a logger's folder: tensorboard/, mlruns/)
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except OSError:
                return
        if created:
            try:
                self.path.rmdir()
            except OSError:
                pass

    # -- replacing a run (fit --overwrite) ------------------------------------------------------------
    def check_replaceable(self) -> None:
        """Refuse to replace anything but a pyrovae run directory (one with ``config.json`` or
        ``checkpoint.pt``) or an empty folder: ``--overwrite`` never removes a folder of other files."""
        with os_errors(self.path, "use"):
            if self.path.exists() and not self.path.is_dir():
                raise RunDirectoryError(f"--out {self.path} exists and is not a directory: choose a directory")
            if not self.path.is_dir() or not any(self.path.iterdir()):
                return
            if not any((self.path / name).exists() for name in ("config.json", CHECKPOINT_NAME)):
                raise RunDirectoryError(
                    f"--overwrite {self.path}: it holds no pyrovae run (no config.json or {CHECKPOINT_NAME}), so it "
                    "is not removed: choose another --out"
                )

    def staging(self) -> RunDirectory:
        """A new, empty folder beside this one (``.NAME.new-XXXXXXXX``) for the run that replaces it."""
        with os_errors(self.path.parent, "create the run directory"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return RunDirectory(tempfile.mkdtemp(prefix=f".{self.path.name}.new-", dir=self.path.parent))

    def take_place_of(self, old: RunDirectory, carry: tuple[str, ...] = ()) -> None:
        """Become ``old``: ``old`` is moved aside and removed, and this folder renamed to its name (the
        moment a replacing run has written its first checkpoint). Each rename is atomic. The entries
        of ``old`` named in ``carry`` (that this folder lacks) are moved into this folder first."""
        target = old.path
        with os_errors(target, "replace"):
            for name in carry:
                if (target / name).exists() and not (self.path / name).exists():
                    os.replace(target / name, self.path / name)
            aside = None
            if target.exists():
                aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, aside / target.name)
            os.replace(self.path, target)
            self.path = target
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)

    # -- its files -----------------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """``config.json``, checked, as :class:`FitConfig`'s flat fields (a nested run spec converted,
        :func:`~pyrovae.config.flat_record`): every option with a value of the right kind, and a
        ``resolved`` object with the ``binarization`` used. Raises a one-line
        :class:`~pyrovae.errors.RunFileError` naming the field."""
        path = self.path / "config.json"
        values = read_json_object(path, "the config.json that `pyrovae fit` writes")
        try:
            values = flat_record(values)
        except ConfigError as error:
            raise RunFileError(f"{path}: {error}") from None
        config_from(values, str(path))
        resolved = values.get("resolved")
        if not isinstance(resolved, dict):
            raise RunFileError(f"{path}: field 'resolved' should be an object, found {resolved!r}")
        if resolved.get("binarization") not in _BINARIZATIONS:
            raise RunFileError(
                f"{path}: field 'resolved.binarization' should be one of {', '.join(_BINARIZATIONS)}, "
                f"found {resolved.get('binarization')!r}"
            )
        return values

    def write_config(self, values: dict[str, Any]) -> None:
        write_text(self.path / "config.json", json.dumps(values, indent=2) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records of ``metrics.jsonl``, checked line by line
        (:func:`pyrovae.rundir.read_metrics_file`)."""
        return read_metrics_file(self.path / "metrics.jsonl")

    def write_metrics(self, records: list[dict[str, Any]]) -> None:
        write_text(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    def checkpoint_note(self) -> str:
        """Where the last good checkpoint of a stopped run is, said from what is on disk."""
        path = self.checkpoint
        if not path.is_file():
            return f"No checkpoint had been written yet to {self.path}, so the start was not kept"
        try:
            state = check_resume_state(path, load_checkpoint(path).get("resume"))
        except ValueError as error:
            return f"The checkpoint {path} cannot be read back ({error})"
        return (
            f"The last good checkpoint (epoch {state.epoch}, step {state.step}) is {path}; "
            f"continue with: pyrovae fit --resume {self.path}"
        )


def new_version(root: str | Path, stem: str) -> RunDirectory:
    """A new, empty run directory ``root/stem/version_N``, ``N`` one above the highest there (0 for the
    first), created here: two runs started at once each get their own."""
    parent = Path(root) / stem
    with os_errors(parent, "create the run directory"):
        parent.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name[8:]) for p in parent.iterdir() if p.name.startswith("version_") and p.name[8:].isdigit()]
        number = max(numbers, default=-1) + 1
        while True:
            try:
                (parent / f"version_{number}").mkdir()
                return RunDirectory(parent / f"version_{number}")
            except FileExistsError:
                number += 1


def default_stem(config: FitConfig) -> str:
    """``DATASET-OBJECTIVE`` of a run, the folder of its versions (the file name for a data file of yours)."""
    dataset = Path(config.dataset).stem if is_array_path(config.dataset) else config.dataset
    if ":" in dataset:  # (folder:PATH -> folder-NAME)
        prefix, _, rest = dataset.partition(":")
        dataset = f"{prefix}-{Path(rest).name or 'root'}"
    return f"{dataset}-{config.elbo}"


def config_from(values: dict[str, Any], where: str) -> FitConfig:
    """A :class:`FitConfig` from saved values; a field of the wrong kind or value is one line naming ``where``."""
    defaults = FitConfig.defaults()
    for name in FitConfig.ADDED_SINCE_0_1:  # a run of pyrovae 0.1 has none of these: they take their defaults
        if isinstance(values, dict) and name not in values:
            del defaults[name]
    defaults.pop("plugins", None)  # (a list of module names: FitConfig checks it)
    defaults.pop("image_size", None)  # (a whole number or null, which FitConfig checks)
    check_fields(where, values, defaults)
    try:
        return FitConfig.from_dict(values)
    except ValueError as error:
        raise RunFileError(f"{where}: {error}") from None


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """:meth:`RunDirectory.read_config` of ``run_dir``."""
    return RunDirectory(run_dir).read_config()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """:meth:`RunDirectory.read_metrics` of ``run_dir``."""
    return RunDirectory(run_dir).read_metrics()


def checkpoint_note(out: str | Path) -> str:
    """:meth:`RunDirectory.checkpoint_note` of ``out``."""
    return RunDirectory(out).checkpoint_note()
