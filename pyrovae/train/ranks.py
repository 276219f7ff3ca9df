"""Where this process stands among the ranks ``torchrun`` started, read from its environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the collective timeout), and which rank reports a failure."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = [
    "TIMEOUT_ENV",
    "DEFAULT_TIMEOUT",
    "ANSWER_SECONDS",
    "launched",
    "process_rank",
    "unheard",
    "speaks",
    "int_env",
    "collective_timeout",
    "device_and_backend",
]

#: the environment variable with the collective timeout in seconds
TIMEOUT_ENV = "PYROVAE_COLLECTIVE_TIMEOUT"
#: seconds a collective may wait for the other ranks before it fails (compiling a step for the
#: ``compiled`` engine takes up to ~20 s on a slow CPU; a resumed rank loads its checkpoint)
DEFAULT_TIMEOUT = 300.0
#: seconds a rank whose collective failed waits for the others to leave their word in the store
ANSWER_SECONDS = 5.0
_ENV = ("RANK", "WORLD_SIZE")


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (or given ``RANK`` and ``WORLD_SIZE`` alike)."""
    return all(name in os.environ for name in _ENV)


def process_rank() -> int:
    """This process's ``RANK``: 0 in a single process, and where ``RANK`` is not a valid rank (so
    that the refusal of a bad environment is printed)."""
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return 0
    return rank if 0 <= rank < size else 0


_UNHEARD = "pyrovae_rank_0_cannot_report"


def unheard(error: BaseException) -> BaseException:
    """Mark ``error`` as one that rank 0 cannot report (it is gone); returns it."""
    setattr(error, _UNHEARD, True)
    return error


def speaks(error: BaseException) -> bool:
    """Whether this process should print ``error``. Rank 0 (or a single process) reports for every
    rank: the checks every rank makes alike, a failure while setting up (:func:`together`), a rank
    that failed or died in training (:meth:`World.watch`), the agreed stops. The other ranks stay
    quiet, except where rank 0 itself is gone (:func:`unheard`); tracebacks of bugs print anyway."""
    return process_rank() == 0 or getattr(error, _UNHEARD, False)


def int_env(name: str, default: str | None = None) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(
            f"the environment variable {name} should be an integer (torchrun sets it), found {value!r}"
        ) from None


def collective_timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds > 0 such as 300, found {value!r}")
    return seconds


def device_and_backend(device: str | torch.device, size: int, local_rank: int) -> tuple[torch.device, str]:
    """The device a rank trains on and the backend that device needs."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        if not dist.is_gloo_available():
            raise ConfigError(
                "training on CPUs with several processes needs torch's gloo backend, which this build lacks"
            )
        return torch.device("cpu"), "gloo"
    if not name.startswith("cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto when torchrun starts pyrovae, got {name!r}")
    if name != "cuda" and size > 1:
        raise ConfigError(
            f"--device {name} names one GPU, but torchrun started {size} processes, each of which takes the "
            "GPU of its LOCAL_RANK: pass --device cuda"
        )
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for, but torch sees no CUDA GPU: use --device cpu")
    index = local_rank if name == "cuda" else torch.device(name).index
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"this process has LOCAL_RANK {local_rank}, but its machine has {count} GPU(s): start at most "
            f"{count} processes per machine (torchrun --nproc-per-node {count}), or use --device cpu"
        )
    if not dist.is_nccl_available():
        raise ConfigError(
            "training on GPUs with several processes needs torch's nccl backend, which this torch build lacks: "
            "use --device cpu (gloo)"
        )
    return torch.device("cuda", index), "nccl"
