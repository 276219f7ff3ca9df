"""Writing ArviZ data to a netCDF file (``evaluate --inference-data``) so that a full disk or a failing
HDF5 library costs one line and leaves nothing behind.

The size of the file is estimated first and compared with the free space of its folder
(:func:`check_netcdf_space`), so a disk that is too full is said before the evaluation's work. The
file is then written to a temporary path in the same folder and renamed into place
(:func:`pyrovae.rundir.write_file`). On Linux, the HDF5 library writes it in a forked child
process: HDF5 keeps the handles of a file it failed to write open, tries to flush them again when
they are collected (printing "Exception ignored" tracebacks) and can crash the process doing so. A
child that fails is simply gone; this process never held the handles, and reports what went wrong
in one line.
"""

from __future__ import annotations

import faulthandler
import os
import re
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import RunDirectoryError
from ..rundir import os_error_message, write_file

__all__ = ["netcdf_bytes", "check_netcdf_space", "write_netcdf"]

#: bytes of a netCDF file beyond its numbers (HDF5 superblock, groups, attributes), an upper bound
NETCDF_OVERHEAD = 256 * 1024
#: whether the HDF5 library writes in a forked child (Linux: forking a process that imported torch is
#: safe there; elsewhere the file is written in this process)
FORKED = sys.platform.startswith("linux") and hasattr(os, "fork")
_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)")


def netcdf_bytes(k: int, points: int, z_dim: int, x_dim: int) -> int:
    """An upper bound on the size of :meth:`~pyrovae.evaluation.Evaluation.to_inference_data`'s file:
    ``z`` (``k x points x z_dim``), ``log_weight`` (``k x points``) and ``x`` (``points x x_dim``) in
    float64, their coordinates, and :data:`NETCDF_OVERHEAD`."""
    numbers = k * points * z_dim + k * points + points * x_dim + k + points + z_dim + x_dim
    return 8 * numbers + NETCDF_OVERHEAD


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def check_netcdf_space(path: Path, needed: int, free: Callable[[Path], int] | None = None) -> None:
    """Refuse, in one line, a netCDF file of about ``needed`` bytes where the folder of ``path`` has less
    free space. ``free``: how the free bytes of a folder are read (default :func:`shutil.disk_usage`)."""
    try:
        available = (free or (lambda folder: shutil.disk_usage(folder).free))(path.parent)
    except OSError as error:
        raise RunDirectoryError(os_error_message(error, path.parent, "read the free space of")) from None
    if available < needed:
        raise RunDirectoryError(
            f"--inference-data {path} needs about {_mib(needed)}, its folder has {_mib(available)} free: free some "
            "space, choose another folder, or lower --inference-points or --k"
        )


def _one_line(error: BaseException) -> OSError | RunDirectoryError:
    """An :class:`OSError` with a plain errno (HDF5 puts the one of the system call in its text), else a
    one-line :class:`RunDirectoryError` of the netCDF libraries' own error."""
    number = getattr(error, "errno", None)
    if number is None and (found := _ERRNO_IN_TEXT.search(str(error))):
        number = int(found.group(1))
    if number:
        return OSError(number, os.strerror(number))
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return RunDirectoryError(f"{type(error).__name__}: {first}")


def _in_child(write: Callable[[], None]) -> None:
    """Run ``write`` in a forked child whose output goes nowhere; raise what it raised (one line), or
    say how it died."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():  # (Python >= 3.12 warns of forking a threaded process: the child runs no threads)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: write, tell the parent what failed, and leave without running finalizers
        code = 1
        try:
            os.close(read_end)
            faulthandler.disable()  # (a crash of the writer is reported by this process, in one line)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            try:
                write()
                code = 0
            except BaseException as error:  # noqa: BLE001 (whatever it is, the parent says it)
                failure = _one_line(error)
                word = f"{failure.errno}" if isinstance(failure, OSError) else f"0 {failure}"
                os.write(write_end, word.encode(errors="replace")[:4000])
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        word = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return
    if word:
        number, _, text = word.partition(" ")
        if number != "0":
            raise OSError(int(number), os.strerror(int(number)))
        raise RunDirectoryError(text)
    died = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.WEXITSTATUS(status)}"
    raise RunDirectoryError(f"the netCDF writer died ({died})")


def write_netcdf(idata: Any, path: Path, needed: int, free: Callable[[Path], int] | None = None) -> Path:
    """Write ``idata`` (``.to_netcdf(filename)``) to ``path`` atomically, after checking that its folder
    has ``needed`` bytes free (:func:`check_netcdf_space`).

    Any failure is one :class:`~pyrovae.errors.RunDirectoryError` line naming ``path`` and the cause;
    ``path`` keeps what it held and no temporary file is left.
    """
    check_netcdf_space(path, needed, free)

    def write(tmp: Path) -> None:
        def run() -> None:
            idata.to_netcdf(str(tmp))

        try:
            _in_child(run) if FORKED else run()
        except RunDirectoryError as error:
            raise RunDirectoryError(f"cannot write {path}: {error}; nothing was written there") from None
        except OSError as error:
            raise _one_line(error) from None
        except Exception as error:  # (in one process: the netCDF libraries' own errors)
            raise RunDirectoryError(f"cannot write {path}: {_one_line(error)}; nothing was written there") from None

    return write_file(path, write)
