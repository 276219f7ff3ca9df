r"""The training objective as a torch module: ``loss = objective(x)``.

Pyro defines the probabilistic program; torch runs it. :class:`Objective` holds a model, a guide
and an ELBO estimator, and its ``forward`` returns the estimator's differentiable loss,

.. math::

    \ell(x_{1:B}) = -\frac{N}{B} \sum_{b=1}^{B} \hat{\mathcal L}(x_b),

an unbiased estimate of :math:`-\sum_{n=1}^N \mathcal L(x_n)` (eq. 12 times :math:`N`) when the
model and guide scale a minibatch of :math:`B` rows by :math:`N/B` (``num_data=N``, bound at
construction). A training step is then plain torch::

    loss = objective(batch)
    loss.backward()
    optimizer.step()

so anything that drives an ``nn.Module`` drives it: :class:`torch.nn.parallel.DistributedDataParallel`
(which averages the gradients of per-rank losses: with :math:`N` the *global* data size each rank's
loss estimates the same quantity, and the average over ranks of batches of :math:`B/W` rows is the
estimate of one batch of :math:`B`), :mod:`pyrovae.train.engines` (compiled and traced graphs),
``torch.func.functional_call``. It is the pattern of Pyro's own ``ELBOModule`` (``elbo(model,
guide)``), with the programs' modules registered as submodules so that ``objective.parameters()``
are the parameters it trains.

Model and guide stay ordinary Pyro programs: ``vae.model`` / ``vae.guide`` still train under stock
:class:`pyro.infer.SVI`. Inside ``forward`` the modules that offer ``without_param_sites``
(:class:`pyrovae.VAE`) run without ``pyro.module`` calls, so their parameters are plain module
parameters, which is what DDP, ``functional_call`` and graph capture expect, and Pyro's parameter
store is not touched.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from pyro.infer import ELBO
from torch import nn

__all__ = ["Objective", "program_modules"]


def program_modules(*programs: Callable) -> list[nn.Module]:
    """The distinct :class:`torch.nn.Module` objects behind ``programs``: a module itself, or the
    object a bound method belongs to; plain functions contribute none."""
    modules: list[nn.Module] = []
    for program in programs:
        owner = program if isinstance(program, nn.Module) else getattr(program, "__self__", None)
        if isinstance(owner, nn.Module) and all(owner is not m for m in modules):
            modules.append(owner)
    return modules


class Objective(nn.Module):
    """``forward(*args, **kwargs)`` = ``elbo.differentiable_loss(model, guide, *args, **bound, **kwargs)``.

    :param model: the Pyro model, e.g. ``vae.model``.
    :param guide: the Pyro guide, e.g. ``vae.guide``.
    :param elbo: the estimator, a :class:`pyro.infer.ELBO` (see :func:`pyrovae.infer.make_elbo`).
    :param bool param_sites: let the programs' modules call ``pyro.module`` as they do under stock SVI
        (default: off, see the module docstring).
    :param bound: keyword arguments passed on every call, e.g. ``num_data=N``.
    """

    def __init__(self, model: Callable, guide: Callable, elbo: ELBO, param_sites: bool = False, **bound: Any):
        super().__init__()
        if not isinstance(elbo, ELBO):
            raise TypeError(f"elbo must be a pyro.infer.ELBO, got {type(elbo).__name__}")
        self.programs = nn.ModuleList(program_modules(model, guide))
        self.model, self.guide, self.elbo = model, guide, elbo
        self.param_sites = param_sites
        self.bound = bound

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with ExitStack() as stack:
            if not self.param_sites:
                for module in self.programs:
                    if hasattr(module, "without_param_sites"):
                        stack.enter_context(module.without_param_sites())
            return self.elbo.differentiable_loss(self.model, self.guide, *args, **self.bound, **kwargs)

    def extra_repr(self) -> str:
        bound = ", ".join(f"{k}={v!r}" for k, v in self.bound.items())
        return (
            f"elbo={type(self.elbo).__name__}(num_particles={self.elbo.num_particles}){', ' + bound if bound else ''}"
        )
