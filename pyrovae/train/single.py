"""The world of a process that trains alone (:class:`SingleProcess`), so that training has one code
path for one process and for the many of :class:`pyrovae.train.distributed.World`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import positive_int
from ..infer.elbo import estimate_elbo
from ..rng import GeneratorStates
from .engines import Engine

__all__ = ["SingleProcess"]


class SingleProcess:
    """The world of a process that trains alone (not started by ``torchrun``): the one rank, whose
    collectives are the values themselves, so that training has one code path for one process and
    for many (:class:`World`)."""

    rank, size, local_rank = 0, 1, 0
    backend = None
    launched = False
    is_main = True
    #: no combining of a step's loss: it is this process's own
    reduce = None

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)

    def check_batch_size(self, batch_size: int) -> None:
        positive_int("batch_size", batch_size)

    def check_objective(self, elbo: Any) -> None:
        """Every objective trains in one process."""

    def shard(self, batch: torch.Tensor) -> tuple[Any, ...]:
        """The arguments of a step: the whole batch."""
        return (batch,)

    def wrap(self, engine: Engine, objective: nn.Module) -> nn.Module:
        """The module a step calls: the engine's."""
        return engine.wrap(objective)

    def largest(self, value: int) -> int:
        return value

    def sum(self, value: float) -> float:
        return value

    def test_elbo(self, vae: nn.Module, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1024) -> float:
        """:func:`pyrovae.infer.estimate_elbo`."""
        return estimate_elbo(vae, x, num_particles=num_particles, batch_size=batch_size)

    @contextmanager
    def watch(self, where: Callable[[], str]) -> Iterator[None]:
        """No other rank to lose."""
        yield

    def own_generators(self, states: GeneratorStates) -> GeneratorStates:
        return states
