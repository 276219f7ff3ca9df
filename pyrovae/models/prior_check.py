"""The contract a prior class of the user's must keep, checked on a small draw before a run is
written (:func:`check_prior`), so that a prior that returns the wrong shapes or is not finite is
refused with one line that names the class, what failed and the rule, instead of a traceback from
deep inside training. The user's own exception stays chained (``PYROVAE_TRACEBACK=1`` shows it)."""

from __future__ import annotations

from typing import NoReturn

import torch
from torch import nn

from ..errors import TRACEBACK_HINT, PriorError
from .class_path import class_path, default_device, raised

__all__ = ["check_prior", "CHECK_BATCH_SHAPE"]

#: the batch shape :func:`check_prior` asks a prior for
CHECK_BATCH_SHAPE = (2,)


def check_prior(prior: nn.Module, z_dim: int, name: str | None = None) -> nn.Module:
    """``prior`` if it keeps the contract of :class:`~pyrovae.models.priors.Prior` on a small draw,
    else a one-line :class:`PriorError` that names the class (``name``, default its class path), what
    failed and the rule, chaining whatever the prior's code raised.

    The contract: ``prior(batch_shape)`` returns a torch (or Pyro) distribution with batch shape
    ``batch_shape`` and event shape ``(z_dim,)``; its sample has shape ``batch_shape + (z_dim,)`` and
    the dtype and device of the prior's own parameters and buffers (those ``vae.to(device, dtype)``
    moves); its ``log_prob`` of that sample has shape ``batch_shape`` and is finite. Checked with
    ``batch_shape`` :data:`CHECK_BATCH_SHAPE`, without gradients and with the random number
    generator restored afterwards, so a checked run draws what an unchecked one would.
    """
    name = name or class_path(type(prior))
    tensors = [t for t in (*prior.parameters(), *prior.buffers()) if t.is_floating_point()]
    dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
    device = tensors[0].device if tensors else default_device()
    batch = torch.Size(CHECK_BATCH_SHAPE)
    shapes = (
        f"prior(batch_shape) must return a distribution over z of that batch shape and of event shape "
        f"(z_dim,) = ({z_dim},)"
    )

    def refuse(found: str, rule: str = shapes, error: BaseException | None = None) -> NoReturn:
        hint = f" ({TRACEBACK_HINT})" if error is not None else ""
        raise PriorError(f"the prior {name} breaks the Prior contract: {found}; {rule}{hint}") from error

    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        try:
            distribution = prior(batch)
        except Exception as error:
            rule = "prior(batch_shape) must build its distribution without raising, from finite, valid parameters"
            refuse(f"prior(batch_shape={tuple(batch)}) raised {raised(error)}", rule, error)
        if not isinstance(distribution, torch.distributions.Distribution):
            refuse(f"prior(batch_shape={tuple(batch)}) returned a {type(distribution).__name__}, not a distribution")
        event, batch_found = tuple(distribution.event_shape), tuple(distribution.batch_shape)
        if event != (z_dim,):
            extra = ": it has no event dimension (end it with .to_event(1))" if not event else ""
            refuse(f"asked for batch shape {tuple(batch)}, it returned a distribution of event shape {event}{extra}")
        if batch_found != tuple(batch):
            refuse(f"asked for batch shape {tuple(batch)}, it returned a distribution of batch shape {batch_found}")
        try:
            z = distribution.sample()
            log_p = distribution.log_prob(z)
        except Exception as error:
            refuse(f"drawing from its distribution or scoring the draw raised {raised(error)}", error=error)
    if tuple(z.shape) != (*batch, z_dim):
        refuse(f"its distribution of batch shape {tuple(batch)} drew a sample of shape {tuple(z.shape)}")
    if z.dtype != dtype or z.device != device:
        refuse(
            f"its sample has dtype {z.dtype} on {z.device}, its parameters and buffers {dtype} on {device}",
            "make every tensor of the distribution from the prior's buffers or parameters (register_buffer, "
            "nn.Parameter), so that it follows the model's device and dtype",
        )
    if tuple(log_p.shape) != tuple(batch):
        refuse(
            f"log_prob of its own sample of shape {tuple(z.shape)} has shape {tuple(log_p.shape)}, not {tuple(batch)}"
        )
    if not bool(torch.isfinite(log_p).all()):
        refuse(
            f"log_prob of its own sample is {log_p.tolist()}",
            "the log-density of a prior must be finite where it draws: are all its parameters finite?",
        )
    return prior
