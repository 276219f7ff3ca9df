"""Memory that settings ask for: estimated before anything is allocated or written, and allocation
failures turned into one line that names the options and the amount.

The estimates are deliberately simple lower bounds (the tensors a setting cannot do without),
compared with the memory the device has free now. They exist to refuse settings such as
``--z-dim 10000000000`` in a second, with a message, instead of after minutes or with an
allocator's traceback; anything they miss is caught by :func:`allocation_failures`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import NotEnoughMemoryError

__all__ = [
    "available_bytes",
    "format_bytes",
    "check_fits",
    "is_allocation_failure",
    "allocation_failures",
    "parameter_count",
    "meta_module",
    "fit_memory",
    "FitMemory",
    "PICTURE_BYTES",
]

#: memory of one picture in a matplotlib grid (axes, image, renderer), measured: about 300 kB
PICTURE_BYTES = 300 * 1024


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cpu_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo``, lowered to the cgroup's limit less its usage when the
    process runs in a container; ``None`` where neither can be read."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 2**60:
            candidates.append(max(0, cap - used))
    if not candidates and hasattr(os, "sysconf"):
        try:
            candidates.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(candidates) if candidates else None


def available_bytes(device: torch.device | str) -> int | None:
    """Free memory on ``device`` now (CPU: available RAM; CUDA: free plus this process's cached
    blocks), or ``None`` where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):
            return None
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        return _cpu_available()
    return None


def check_fits(parts: Sequence[tuple[str, float]], device: torch.device | str, advice: str) -> None:
    """Refuse, with a :class:`~pyrovae.errors.NotEnoughMemoryError`, when the parts' bytes add up to
    more than :func:`available_bytes` of ``device``.

    :param parts: ``(what needs it, naming the options; bytes)``.
    :param advice: what to do, e.g. ``"lower --z-dim or --hidden"``.
    """
    total = sum(size for _, size in parts)
    free = available_bytes(device)
    if free is None or total <= free:
        return
    largest = sorted(parts, key=lambda part: -part[1])
    named = "; ".join(f"{what}: {format_bytes(size)}" for what, size in largest if size >= 0.1 * total)
    raise NotEnoughMemoryError(
        f"these settings need at least {format_bytes(total)} of memory ({named}), more than the "
        f"{format_bytes(free)} free on {torch.device(device)}: {advice}"
    )


_AMOUNT = re.compile(r"(?:allocate|Tried to allocate)\s+([\d.]+\s*(?:bytes|[KMGTP]i?B))", re.I)


def is_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` is torch's (CPU or CUDA) or NumPy's "out of memory"."""
    if isinstance(error, MemoryError):
        return True
    if isinstance(error, getattr(torch, "OutOfMemoryError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower() or "DefaultCPUAllocator" in text
    )


@contextmanager
def allocation_failures(what: str, options: str) -> Iterator[None]:
    """Turn an allocation failure inside into a one-line :class:`~pyrovae.errors.NotEnoughMemoryError`
    naming ``what`` was being done, the amount asked for (where the allocator said it) and the
    ``options`` to lower."""
    try:
        yield
    except Exception as error:
        if not is_allocation_failure(error):
            raise
        found = _AMOUNT.search(str(error))
        amount = ""
        if found:
            text = found.group(1)
            amount = f" ({format_bytes(int(text.split()[0])) if text.endswith('bytes') else text} at once)"
        raise NotEnoughMemoryError(f"ran out of memory {what}{amount}: lower {options}") from None


def meta_module(build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
    """The module ``build()`` makes, on the ``meta`` device (shapes without storage: no memory is
    allocated, whatever the sizes); ``None`` when the module cannot be built there (its constructor
    reads values, as Pyro's autoregressive networks do)."""
    try:
        with torch.device("meta"):
            return build()
    except (RuntimeError, NotImplementedError, TypeError):
        return None


def parameter_count(build: Callable[[], torch.nn.Module]) -> int | None:
    """The number of parameters of the module ``build()`` makes, counted on the ``meta`` device
    (:func:`meta_module`); ``None`` when the module cannot be built there."""
    module = meta_module(build)
    return None if module is None else sum(math.prod(p.shape) for p in module.parameters())


class FitMemory(NamedTuple):
    """What training a model needs at least, in bytes (:func:`fit_memory`).

    :ivar parameters: the parameters, held 4 times (weights, gradients, Adam's two moments).
    :ivar step: one step's activations and their gradients.
    :ivar test: the test ELBO's pass.
    :ivar parameter_count: the number of parameters.
    :ivar prior_points: the model's :attr:`~pyrovae.models.ActivationSizes.prior_points` (mixture
        components), which a message may name.
    """

    parameters: int
    step: int
    test: int
    parameter_count: int
    prior_points: int


def fit_memory(
    model: torch.nn.Module,
    itemsize: int,
    rows: int,
    particles: int,
    test_rows: int,
    eval_particles: int,
) -> FitMemory:
    r"""A lower bound on the memory that training ``model`` (a :class:`~pyrovae.models.LatentVariableModel`;
    this module sits below :mod:`pyrovae.models` and only calls it) needs, from what the model says of its
    passes (:meth:`~pyrovae.models.LatentVariableModel.activation_sizes`: numbers per data point
    :math:`a_x`, per draw :math:`a_z`, and prior rows :math:`K`):

    .. math::

        \text{step} = 2\,[(B + K)\,a_x + S B\, a_z], \qquad
        \text{test} = B_{test}\,(a_x + S_{test}\, a_z), \qquad \text{parameters} = 4P

    numbers of ``itemsize`` bytes, for ``rows`` :math:`B` per step, ``particles`` :math:`S`,
    ``test_rows`` :math:`B_{test}` per test pass with ``eval_particles`` :math:`S_{test}`, and the
    :math:`P` parameters of ``model`` (which may live on the ``meta`` device: :func:`meta_module`).
    """
    sizes = model.activation_sizes()
    count = sum(math.prod(p.shape) for p in model.parameters())
    step = (rows + sizes.prior_points) * sizes.per_point + particles * rows * sizes.per_draw
    test = test_rows * (sizes.per_point + eval_particles * sizes.per_draw)
    return FitMemory(4 * count * itemsize, 2 * step * itemsize, test * itemsize, count, sizes.prior_points)
