r"""Training on several processes (ranks): one process per device, started by ``torchrun``.

``torchrun --nproc-per-node W -m pyrovae fit ...`` starts ``W`` processes and tells each its place
in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``);
:func:`launch` reads it, takes the device (``--device cuda``: ``cuda:LOCAL_RANK``; ``cpu``: the CPU),
picks the backend that device needs (``nccl`` for CUDA, ``gloo`` for the CPU) and joins the
process group, with a bounded timeout for every collective. Without that environment it does
nothing, and :func:`pyrovae.fit` trains in one process as it always has.

What the ranks compute together
-------------------------------
``--batch-size`` :math:`B` is the *global* batch: each step takes the next :math:`B` rows of the
epoch's permutation, which every rank draws alike from the run's seed, and rank :math:`r` of
:math:`W` takes the :math:`r`-th of :math:`W` contiguous slices of them (:meth:`World.span`). With
:math:`N` the *global* number of training rows, a rank's loss on its :math:`b_r` rows is scaled by
:math:`N/b_r` (eq. 12), and :class:`~torch.nn.parallel.DistributedDataParallel` averages the ranks'
gradients; :class:`ShardedObjective` weights each rank's loss by :math:`w_r = W b_r / B`, so that

.. math::

    \frac1W \sum_{r=1}^{W} w_r \frac{N}{b_r} \sum_{n \in \text{rank } r} \hat{\mathcal L}(x_n)
        = \frac{N}{B} \sum_{n=1}^{B} \hat{\mathcal L}(x_n),

the loss of the whole batch in one process (:math:`w_r = 1` while :math:`B` divides by :math:`W`; an
epoch's last, smaller batch may not, and a rank left without rows then runs one row with weight 0).
The step's loss, the epoch's training ELBO and the test ELBO (the test set split the same way,
each point counted once) are sums over ranks, all-reduced.

The same noise as one process
-----------------------------
The ranks' generators are seeded alike and kept in step with those of a single process running
the same command: every rank draws each epoch's binarization and permutation whole, and
:class:`GlobalBatchNoise` makes every latent draw inside the data plate draw the standard normal
noise of the *whole* global batch, :math:`\epsilon \in \mathbb R^{\ldots \times B \times \ldots}`,
as one process's ``rsample`` does, and keep the rank's rows, :math:`z = \mu + \sigma\,\epsilon_{[r]}`.
So the ranks see exactly the draws one process sees, and ``W`` processes train to the parameters
and metrics of one process (to float rounding; ``tests/test_distributed.py`` checks 1e-6 in float64);
a checkpoint written by ``W`` processes resumes with any other number of them.

Agreeing, and failing together
------------------------------
A non-finite loss on any rank makes the all-reduced loss non-finite on every rank, so every rank's
step guard skips the update and stops at the same step. A stop signal is agreed by a collective at
the step guard's check points, so every rank stops after the same step. A rank that dies or hangs
makes the others' next collective fail (at once, or after :data:`TIMEOUT_ENV` seconds); they then
name it (:class:`~pyrovae.errors.DistributedError`) from the rendezvous store, where every rank that
fails leaves a word.
"""

from __future__ import annotations

import datetime
import gc
import inspect
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError, DistributedError, positive_int
from ..infer.elbo import estimate_elbo
from ..rng import GeneratorStates
from .engines import Engine
from .options import resolve_device
from .ranks import (
    ANSWER_SECONDS,
    DEFAULT_TIMEOUT,
    TIMEOUT_ENV,
    collective_timeout,
    device_and_backend,
    int_env,
    launched,
    process_rank,
    speaks,
    unheard,
)
from .sharding import GlobalBatchNoise, ShardedObjective
from .single import SingleProcess

__all__ = [
    "World", "SingleProcess", "Processes", "launch", "launched", "together", "GlobalBatchNoise", "ShardedObjective",
    "process_rank", "speaks", "unheard", "TIMEOUT_ENV", "DEFAULT_TIMEOUT", "ANSWER_SECONDS",
]  # fmt: skip


@dataclass
class World:
    """This process's place among the ranks that train together, and what they do together.

    :ivar rank: this process's rank, from 0 to ``size - 1`` (rank 0 writes the run's files).
    :ivar size: the number of ranks :math:`W`.
    :ivar local_rank: its rank on its machine (its GPU's index).
    :ivar device: the device it trains on.
    :ivar backend: ``gloo`` or ``nccl``.
    :ivar timeout: seconds a collective waits before it fails.
    :ivar store: the rendezvous key-value store (where failing ranks leave their word), if known.
    :ivar batch_size_checked: a batch size :func:`launch` checked already (not checked again).
    """

    rank: int
    size: int
    local_rank: int
    device: torch.device
    backend: str
    timeout: float = DEFAULT_TIMEOUT
    store: Any = None
    batch_size_checked: int | None = None

    #: whether torchrun started this process (:class:`SingleProcess` is the world of one that it did not)
    launched = True

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes files, logs and shows progress."""
        return self.rank == 0

    @property
    def reduce(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """How a step's loss is combined over the ranks (:meth:`mean`)."""
        return self.mean

    @classmethod
    def of_group(cls, device: str | torch.device) -> World:
        """The world of a default process group initialized by the caller (its backend as it is;
        a rank that dies is reported without a name: no rendezvous store is known)."""
        if not dist.is_initialized():
            raise ConfigError("no torch.distributed process group is initialized: use launch() under torchrun")
        timeout = collective_timeout()
        return cls(dist.get_rank(), dist.get_world_size(), int_env("LOCAL_RANK", str(dist.get_rank())),
                   torch.device(device), str(dist.get_backend()), timeout)  # fmt: skip

    # -- splitting the work ---------------------------------------------------------------------
    def span(self, rows: int, rank: int | None = None) -> tuple[int, int]:
        """``(start, stop)``: the rows of a global batch of ``rows`` rows that ``rank`` (default:
        this one) takes, the ``rank``-th of ``size`` contiguous slices, which differ in length by
        at most one row (as :func:`torch.tensor_split`)."""
        rank = self.rank if rank is None else rank
        share, extra = divmod(rows, self.size)
        start = rank * share + min(rank, extra)
        return start, start + share + (rank < extra)

    def check_batch_size(self, batch_size: int) -> None:
        """``--batch-size`` is the global batch: refuse one that does not divide by the world size (once)."""
        if batch_size == self.batch_size_checked and not isinstance(batch_size, bool):
            return
        positive_int("batch_size", batch_size)
        if batch_size % self.size:
            lower = max(self.size, batch_size - batch_size % self.size)
            raise ConfigError(
                f"--batch-size {batch_size} is the global batch, split evenly over the {self.size} processes "
                f"torchrun started, so it must divide by {self.size}: use --batch-size {lower} or "
                f"{lower + self.size}"
            )

    def check_objective(self, elbo: Any) -> None:
        """Refuse an objective that several processes cannot share: ``infovae``, whose MMD term
        compares the whole minibatch's codes with prior draws."""
        if self.size > 1 and elbo == "infovae":
            raise ConfigError(
                "--elbo infovae is not supported on several processes yet: its MMD term compares the whole "
                "minibatch's codes with prior draws, and each process would see only its share of the batch; "
                "train it in one process"
            )

    def shard(self, batch: torch.Tensor) -> tuple[Any, ...]:
        """The arguments of :class:`ShardedObjective` for this rank's part of the global ``batch``:
        ``(rows,)`` where every rank takes ``len(batch) / size`` rows, else ``(rows, layout)``."""
        total = batch.shape[0]
        start, stop = self.span(total)
        if total % self.size == 0:
            return (batch[start:stop],)
        if stop == start:  # no row for this rank: one placeholder row, weighted 0
            return (batch[:1], (0, total, 0))
        return (batch[start:stop], (start, total, stop - start))

    def wrap(self, engine: Engine, objective: nn.Module) -> nn.Module:
        """The module a rank's step calls: ``DistributedDataParallel`` around the engine's module
        around :class:`ShardedObjective` (so a recorded graph records the noise of the whole batch)."""
        module = engine.wrap(ShardedObjective(objective, self))
        # (the buffers are constants built alike on every rank: synced once, not before every step)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        parameters = inspect.signature(DistributedDataParallel).parameters
        sync = "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"
        return DistributedDataParallel(module, device_ids=device_ids, **{sync: False})

    # -- collectives ----------------------------------------------------------------------------
    def mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a scalar ``loss`` (a sum all-reduced; no host synchronisation)."""
        total = loss.detach().clone()
        dist.all_reduce(total)
        return total / self.size

    def largest(self, value: int) -> int:
        """The largest of the ranks' ``value`` (every rank gets the same answer)."""
        largest = torch.tensor(value, dtype=torch.int64, device=self.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return int(largest)

    def sum(self, value: float) -> float:
        """The sum over ranks of a number, in float64."""
        total = torch.tensor(value, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total)

    @torch.no_grad()
    def test_elbo(self, vae: nn.Module, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1024) -> float:
        """The mean ELBO per data point of ``x`` as :func:`pyrovae.infer.estimate_elbo` computes it
        in one process, each chunk of ``batch_size`` rows split over the ranks (its noise drawn
        whole, :class:`GlobalBatchNoise`) and the sums all-reduced."""
        if x.shape[0] == 0:
            raise ConfigError("x is empty: expected at least one data point")
        total = 0.0
        for chunk in x.split(batch_size):
            rows, *layout = self.shard(chunk)
            start, chunk_rows, owned = layout[0] if layout else (self.span(len(chunk))[0], len(chunk), len(rows))
            with GlobalBatchNoise(start, start + rows.shape[0], chunk_rows):
                total += estimate_elbo(vae, rows, num_particles, batch_size=rows.shape[0]) * owned
        return self.sum(total) / x.shape[0]

    # -- failures -------------------------------------------------------------------------------
    def _leave_word(self, word: str) -> None:
        if self.store is None:
            return
        try:
            self.store.set(f"failed/{self.rank}", word)
        except Exception:  # noqa: BLE001 (the store may be gone with the rank that held it)
            pass

    def _answers(self) -> dict[int, str | None]:
        """What the other ranks left in the store within :data:`ANSWER_SECONDS` (``None``: nothing)."""
        others = [r for r in range(self.size) if r != self.rank]
        answers: dict[int, str | None] = dict.fromkeys(others)
        deadline = time.monotonic() + min(ANSWER_SECONDS, self.timeout)
        while True:
            for r in others:
                if answers[r] is None and self.store.check([f"failed/{r}"]):
                    answers[r] = self.store.get(f"failed/{r}").decode()
            if all(a is not None for a in answers.values()) or time.monotonic() > deadline:
                return answers
            time.sleep(0.05)

    @contextmanager
    def watch(self, where: Callable[[], str]) -> Iterator[None]:
        """While inside, an exception on this rank leaves its word in the store; a failed collective
        (another rank died, hung past the timeout, or failed) becomes a one-line
        :class:`~pyrovae.errors.DistributedError` naming that rank and ``where()`` it happened."""
        try:
            yield
        except (KeyboardInterrupt, FloatingPointError, DistributedError):
            raise  # stops every rank agreed on (a signal, a non-finite loss), and reports already made
        except (RuntimeError, dist.DistError) as error:
            if isinstance(error, torch.OutOfMemoryError):  # this rank's own failure
                self._leave_word(f"error: {type(error).__name__}: {_first_line(error)}")
                raise
            self._leave_word(f"lost: {_first_line(error)}")
            raise self._lost(error, where()) from error
        except Exception as error:
            self._leave_word(f"error: {type(error).__name__}: {_first_line(error)}")
            raise

    def _lost(self, error: BaseException, where: str) -> DistributedError:
        cause = f"{type(error).__name__}: {_first_line(error)}"
        if self.store is None:
            return DistributedError(f"a collective failed at {where} ({cause}): another rank died or stopped answering")
        try:
            answers = self._answers()
        except Exception:  # noqa: BLE001 (the store went with rank 0 or the launcher)
            report = DistributedError(
                f"rank {self.rank} lost the other ranks at {where}, and the rendezvous store with them (rank 0 or "
                f"torchrun stopped?): {cause}"
            )
            return unheard(report)
        failed = {r: a[len("error: ") :] for r, a in answers.items() if a is not None and a.startswith("error: ")}
        silent = sorted(r for r, a in answers.items() if a is None)
        parts = [f"rank {r} failed at {where}: {message}" for r, message in sorted(failed.items())]
        if silent:
            names = ", ".join(map(str, silent))
            parts.append(
                f"rank{'s' if len(silent) > 1 else ''} {names} of {self.size} stopped answering at {where} (died, or "
                f"stuck for more than the {self.timeout:g} s timeout, {TIMEOUT_ENV})"
            )
        if not parts:
            return DistributedError(f"a collective failed on every rank at {where}: {cause}")
        report = DistributedError(f"{'; '.join(parts)}; rank {self.rank} stopped too ({cause})")
        return unheard(report) if 0 in failed or 0 in silent else report

    # -- generators -----------------------------------------------------------------------------
    def own_generators(self, states: GeneratorStates) -> GeneratorStates:
        """``states`` (saved by rank 0, or by one process on ``--device cuda``, which both draw from
        ``cuda:0``) for this rank, which draws from its own GPU's generator: that one continues
        from the saved state of ``cuda:0``. CPU ranks draw from the CPU generator, kept as it is."""
        if self.device.type != "cuda" or not states.cuda or self.device.index == 0:
            return states
        cuda = list(states.cuda)
        while len(cuda) <= self.device.index:
            cuda.append(states.cuda[0])
        cuda[self.device.index] = states.cuda[0]
        return GeneratorStates(states.cpu, cuda)


#: the processes a run trains in: one (:class:`SingleProcess`) or many (:class:`World`)
Processes = World | SingleProcess


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def launch(device: str | torch.device = "auto", batch_size: int | None = None) -> Iterator[Processes]:
    """Join the ranks that ``torchrun`` started, for the duration of the block.

    Yields a :class:`SingleProcess` on ``device`` (resolved: ``auto`` is a GPU where there is one)
    when the process was not started by ``torchrun`` (no ``RANK`` and ``WORLD_SIZE`` in the
    environment). Otherwise reads ``RANK``, ``WORLD_SIZE`` and
    ``LOCAL_RANK`` (default: ``RANK``), takes the device (``cuda``: ``cuda:LOCAL_RANK``) and its
    backend (``nccl`` for CUDA, ``gloo`` for the CPU), meets the others through ``MASTER_ADDR`` and
    ``MASTER_PORT`` (torchrun's rendezvous store), joins the process group with a timeout of
    :data:`TIMEOUT_ENV` seconds (default :data:`DEFAULT_TIMEOUT`) for every collective, and leaves it
    at the end. A combination that cannot work is refused, in one line, before anything starts,
    among them a global ``batch_size`` that does not divide by ``WORLD_SIZE``.
    """
    if not launched():
        yield SingleProcess(resolve_device(device))
        return
    if dist.is_initialized():
        raise ConfigError(
            "a torch.distributed process group is already initialized: train in it with "
            "fit(..., world=World.of_group(device)) instead of launch()"
        )
    rank, size = int_env("RANK"), int_env("WORLD_SIZE")
    local_rank = int_env("LOCAL_RANK", str(rank))
    if not (size >= 1 and 0 <= rank < size and local_rank >= 0):
        raise ConfigError(
            f"RANK must be in [0, WORLD_SIZE) and LOCAL_RANK >= 0, found RANK={rank}, WORLD_SIZE={size}, "
            f"LOCAL_RANK={local_rank}"
        )
    timeout = collective_timeout()
    place, backend = device_and_backend(device, size, local_rank)
    if batch_size is not None:  # (before the rendezvous: a batch that cannot be split stops every rank at once)
        World(rank, size, local_rank, place, backend).check_batch_size(batch_size)
    if place.type == "cuda":
        torch.cuda.set_device(place)
    delta = datetime.timedelta(seconds=timeout)
    store, _, _ = next(dist.rendezvous("env://", rank, size, timeout=delta))
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=delta)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = dist.PrefixStore(f"pyrovae/{attempt}", store)
    world = World(rank, size, local_rank, place, backend, timeout, prefixed, batch_size)
    try:
        yield world
    finally:
        # what still holds the group (a DistributedDataParallel module in a reference cycle) goes
        # first: a gloo group freed only as the interpreter exits can abort it
        gc.collect()
        dist.destroy_process_group()


@contextmanager
def together(world: Processes | None, what: str) -> Iterator[None]:
    """Run a block that every rank runs (setting a run up), then agree whether it went well.

    An exception on any rank stops every rank at the end of the block: the rank that raised it
    raises it, the others a :class:`~pyrovae.errors.DistributedError` quoting it, so rank 0 reports
    every rank's failure (and the others stay quiet where rank 0 speaks). In one process
    (:class:`SingleProcess`) the block runs as it is.
    """
    if world is None or not world.launched:
        yield
        return
    failure: BaseException | None = None
    try:
        yield
    except BaseException as error:  # noqa: BLE001 (re-raised below, once the ranks agree)
        failure = error
    words: list[str | None] = [None] * world.size
    mine = None if failure is None else f"{type(failure).__name__}: {_first_line(failure)}"
    with world.watch(lambda: what):
        dist.all_gather_object(words, mine)
    if failure is not None:
        raise failure  # (rank 0 reports it: its own, or the others' quoted)
    failed = [f"rank {r}: {word}" for r, word in enumerate(words) if word is not None]
    if failed:
        raise DistributedError(f"stopped while {what}, because {'; '.join(failed)}")
