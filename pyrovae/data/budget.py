"""How much memory the training rows may take (:func:`memory_budget`), and what follows from it:
``--data-loader auto`` keeps rows within it in memory (:mod:`pyrovae.data.loading`), and rows of
a file within it are read through the file's memory map (:func:`reads_through_mapping`)."""

from __future__ import annotations

from ..memory import available_bytes

__all__ = ["RESIDENT_SHARE", "memory_budget", "reads_through_mapping"]

#: the share of the memory available that the training rows may take (``auto`` keeps them in memory within it)
RESIDENT_SHARE = 0.25


def memory_budget() -> int | None:
    """Bytes the training rows may take in memory: :data:`RESIDENT_SHARE` of the memory available
    now (``None`` where that cannot be told: then sets read from disk are streamed, with ``os.preadv``)."""
    available = available_bytes("cpu")
    return None if available is None else int(available * RESIDENT_SHARE)


def reads_through_mapping(file_bytes: int) -> bool:
    """Whether rows of a memory-mapped file of ``file_bytes`` bytes are read through the mapping
    (NumPy indexing: several times faster a batch) rather than with ``os.preadv``.

    Reading through the mapping maps the file's pages into the process, so its resident memory grows
    with the part of the file read. Within :func:`memory_budget` that is cheap: the pages are clean
    and file-backed (the kernel drops them under pressure without writing anything) and at most the
    share of memory the rows may take anyway. Above it, a set larger than memory would grow the
    process with it, so those rows are read with ``os.preadv`` through the page cache, which the
    process does not hold. Where the budget cannot be told, ``os.preadv``.
    """
    budget = memory_budget()
    return budget is not None and file_bytes <= budget
