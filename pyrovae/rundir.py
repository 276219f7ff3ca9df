"""Run directories on disk: one writer at a time, atomic writes, one-line I/O errors, checked run files.

Every file pyrovae writes goes through :func:`write_bytes` (or :func:`write_text`,
:func:`write_png`): the bytes go to a temporary file in the same folder, which is flushed,
``fsync``-ed and renamed over the target, and the folder is synced. A crash, a full disk or a
signal at any point leaves either the old file or the new one, never a mixture; the temporary
file is removed when the write fails, and one left by a killed process
(``.NAME.XXXXXXXX.tmp``) is removed by :func:`remove_stale_temp_files` when a command next holds
the directory.

A command that writes to a run directory holds :func:`run_lock` for as long as it runs: an
exclusive ``flock`` on ``.pyrovae.lock`` (by the ``filelock`` library). The operating system
drops it when the process ends, however it ends, so a killed run never blocks a later one; a
second writer is refused at once, with the holder's process id, which the holder writes into the
lock file.

Every :class:`OSError` on these paths becomes a :class:`~pyrovae.errors.RunDirectoryError`: one
line that names the path and the cause (``no space left on device``, ``read-only file system``,
``file name too long``...). Run files that parse but have the wrong structure raise
:class:`~pyrovae.errors.RunFileError`, naming the file and the field.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import RunDirectoryError, RunFileError

__all__ = [
    "LOCK_NAME",
    "run_lock",
    "write_file",
    "write_bytes",
    "write_text",
    "write_png",
    "remove_stale_temp_files",
    "os_errors",
    "os_error_message",
    "describe_os_error",
    "read_json_object",
    "check_fields",
    "read_metrics_file",
]

LOCK_NAME = ".pyrovae.lock"
#: the temporary files of :func:`write_bytes`: ``.NAME.`` + 8 characters of :func:`tempfile.mkstemp` + ``.tmp``
_TEMP_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


# -- errors ---------------------------------------------------------------------------------------
def describe_os_error(error: OSError) -> str:
    """The cause of an :class:`OSError` in a few words, e.g. ``no space left on device (ENOSPC)``."""
    if error.errno is None:
        return str(error) or type(error).__name__
    name = errno.errorcode.get(error.errno, str(error.errno))
    return f"{(error.strerror or os.strerror(error.errno)).lower()} ({name})"


_ADVICE = {
    errno.ENOSPC: "free some space or choose another folder",
    errno.EDQUOT: "free some space or choose another folder",
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "choose a folder you may write to",
    errno.EPERM: "choose a folder you may write to",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.ENOENT: "create the folder first or fix the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def _exists(path: str | os.PathLike) -> bool:
    try:
        return Path(path).exists()
    except OSError:  # e.g. a name too long to look up
        return False


def os_error_message(error: OSError, path: str | os.PathLike, action: str = "write", kept: bool = False) -> str:
    """One line naming ``path``, what was being done to it and the cause of ``error``, with advice."""
    note = f"; {path} is unchanged" if kept and _exists(path) else ""
    advice = _ADVICE.get(error.errno or -1)
    return f"cannot {action} {path}: {describe_os_error(error)}{note}" + (f": {advice}" if advice else "")


@contextmanager
def os_errors(path: str | os.PathLike, action: str = "write", kept: bool = False) -> Iterator[None]:
    """Turn an :class:`OSError` raised inside into a one-line :class:`~pyrovae.errors.RunDirectoryError`
    (:func:`os_error_message`).

    :param action: what was being done to ``path`` (``write``, ``read``, ``create``...).
    :param kept: say that what was at ``path`` before is unchanged (atomic writes).
    """
    try:
        yield
    except OSError as error:
        raise RunDirectoryError(os_error_message(error, path, action, kept)) from None


# -- atomic writes --------------------------------------------------------------------------------
def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Make ``path`` atomically with ``write(temporary_path)``: the temporary file is in the same
    folder; it is fsync-ed and renamed over ``path``, and the folder is synced.

    The new file gets the usual mode (``0o666`` less the umask). On any failure the temporary file
    is removed and ``path`` keeps what it held; an :class:`OSError` becomes a one-line
    :class:`~pyrovae.errors.RunDirectoryError`. (For libraries that write a file by name;
    :func:`write_bytes` for bytes.)
    """
    path = Path(path)
    with os_errors(path, kept=True):
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            try:
                umask = os.umask(0)
                os.umask(umask)
                if hasattr(os, "fchmod"):  # mkstemp creates 0600
                    os.fchmod(fd, 0o666 & ~umask)
            finally:
                os.close(fd)
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _sync_folder(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`write_file`)."""
    return write_file(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    return write_bytes(path, text.encode("utf-8"))


def write_png(path: str | os.PathLike, figure: Any, dpi: int = 80) -> Path:
    """Render a matplotlib ``Figure`` to PNG in memory, then :func:`write_bytes` it to ``path``
    (exactly this path: no suffix is added)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return write_bytes(path, buffer.getvalue())


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files (``.NAME.XXXXXXXX.tmp``) that writers killed mid-write left in
    ``folder``. Call it only while holding :func:`run_lock` on ``folder``: then no live writer
    owns them. Returns the files removed."""
    folder = Path(folder)
    removed = []
    with os_errors(folder, "clean up"):
        for entry in os.scandir(folder):
            if entry.is_file(follow_symlinks=False) and _TEMP_FILE.match(entry.name):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


# -- one writer per run directory -------------------------------------------------------------------
def _holder(lock_path: Path, lock: Any) -> str:
    try:
        text = lock_path.read_text().strip()
    except OSError:
        text = ""
    if text.isdigit():
        return f"process {text}"
    try:  # filelock's fallback for file systems without flock records its own holder
        pid = lock.pid
    except Exception:
        pid = None
    return f"process {pid}" if pid else "another process (its id could not be read)"


@contextmanager
def run_lock(folder: str | os.PathLike, alternative: str = "") -> Iterator[Path]:
    """Hold the exclusive lock of the run directory ``folder`` (which must exist) while inside.

    Refused at once, with a :class:`~pyrovae.errors.RunDirectoryError` naming the holder's process
    id, when another process (or another command in this one) holds it. The lock is the operating
    system's ``flock``, released when the holder exits in any way. Stale temporary files are
    removed on entry.

    :param alternative: what else the user may do, ending the refusal (e.g. ``", or choose another --out"``).
    """
    import filelock

    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    lock = filelock.FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:  # (a TimeoutError, so an OSError: caught first)
        raise RunDirectoryError(
            f"{folder} is in use by {_holder(lock_path, lock)}, which is writing to it: wait until it ends{alternative}"
        ) from None
    except OSError as error:
        raise RunDirectoryError(os_error_message(error, folder, "lock")) from None
    try:
        with os_errors(lock_path), open(lock_path, "r+") as f:
            content = f.read().strip()
            if not content or content.isdigit():  # (leave the record of filelock's soft fallback alone)
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
        remove_stale_temp_files(folder)
        yield folder
    finally:
        lock.release()


# -- reading run files back -------------------------------------------------------------------------
def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; a missing file, an OSError, bad JSON or a non-object is one line."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"no {path.name} in {path.parent}: expected {what}")
    with os_errors(path, "read"):
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise RunFileError(f"{path} is not valid JSON ({error}): expected {what}") from None
    if not isinstance(value, dict):
        raise RunFileError(f"{path} holds a JSON {type(value).__name__}, expected an object: {what}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_fields(path: str | os.PathLike, values: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Check that ``values`` has every key of ``defaults`` with a value of the default's kind.

    Kinds: ``bool``; ``int`` (not ``bool``); ``float`` (an ``int`` or ``float``); ``str``; a tuple
    default is a list of ints (of strings where the default is empty, as ``logger``'s); a ``None``
    default is ``None`` or a ``str``.
    """
    for name, default in defaults.items():
        if name not in values:
            raise RunFileError(f"{path}: field {name!r} is missing")
        value = values[name]
        if default is None:
            ok = value is None or isinstance(value, str)
        elif isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif isinstance(default, tuple):
            item = int if default else str
            ok = isinstance(value, list) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            expected = f"a list of {'ints' if default else 'strings'}" if isinstance(default, tuple) else _kind(default)
            raise RunFileError(f"{path}: field {name!r} should be {expected}, found {_kind(value)} {value!r}")


_NUMBER = (int, float)


def read_metrics_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a ``metrics.jsonl``, checked line by line.

    Each line is a JSON object with ``epoch`` (1, 2, 3... in order), ``step`` (an int, not
    decreasing), ``train_elbo`` and ``seconds`` (numbers), and optionally ``test_elbo`` (a number).
    """
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"no metrics.jsonl in {path.parent}: expected a run directory written by `pyrovae fit`")
    with os_errors(path, "read"):
        lines = path.read_text().splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunFileError(f"{where} is not valid JSON ({error}): the file is damaged") from None
        if not isinstance(record, dict):
            raise RunFileError(f"{where} holds a JSON {_kind(record)}, expected an object with epoch, train_elbo...")
        for key, kinds in (("epoch", int), ("step", int), ("train_elbo", _NUMBER), ("seconds", _NUMBER)):
            if not isinstance(record.get(key), kinds) or isinstance(record.get(key), bool):
                raise RunFileError(f"{where}: field {key!r} should be a number, found {record.get(key)!r}")
        if "test_elbo" in record and (
            not isinstance(record["test_elbo"], _NUMBER) or isinstance(record["test_elbo"], bool)
        ):
            raise RunFileError(f"{where}: field 'test_elbo' should be a number, found {record['test_elbo']!r}")
        if record["epoch"] != len(records) + 1:
            raise RunFileError(f"{where}: epoch {record['epoch']} where epoch {len(records) + 1} was expected")
        if records and record["step"] < records[-1]["step"]:
            raise RunFileError(f"{where}: step {record['step']} is below the previous line's {records[-1]['step']}")
        if not math.isfinite(record["seconds"]) or record["seconds"] < 0:
            raise RunFileError(f"{where}: field 'seconds' should be a finite number >= 0, found {record['seconds']!r}")
        records.append(record)
    return records
