"""The ``jit`` engine's objective: :class:`TracedObjective`, an objective traced by
:func:`torch.jit.trace` once per input shape (the engines themselves: :mod:`pyrovae.train.engines`)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from .._compat import is_validation_enabled
from ..errors import ConfigError

__all__ = ["TracedObjective"]


class TracedObjective(nn.Module):
    """``objective`` traced by :func:`torch.jit.trace` once per input shape.

    The traced module shares the objective's parameters, so gradients reach them; its noise comes
    from torch's global generator, as the eager objective's does, and tracing leaves the
    generators as it found them (the first call of a shape runs the objective as it is).
    """

    def __init__(self, objective: nn.Module):
        super().__init__()
        self.objective = objective
        self.traced: dict[Any, Any] = {}
        self.warned = False

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if is_validation_enabled():
            if not self.warned:
                self.warned = True
                warnings.warn(
                    "the jit engine runs this objective eagerly: Pyro's validation is on", RuntimeWarning, stacklevel=2
                )
            return self.objective(*args)
        if not all(torch.is_tensor(a) for a in args):
            raise ConfigError("the jit engine traces tensor arguments only; pass keyword options at construction")
        key = (tuple((a.shape, a.dtype, a.device) for a in args), torch.is_grad_enabled(), self.objective.training)
        traced = self.traced.get(key)
        if traced is not None:
            return traced(*args)
        loss = self.objective(*args)
        devices = sorted({a.device.index or 0 for a in args if a.device.type == "cuda"})
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # TracerWarnings for the draws (they are meant to differ) and the deprecation
            self.traced[key] = torch.jit.trace(self.objective, args, check_trace=False)
        return loss
