"""The parts of Pyro and torch that pyrovae uses beyond their documented public API, in one place.

pyrovae is tested against pyro-ppl 1.9.x and torch 2.11 to 2.13 (CI installs torch 2.13 on the
CPU; the GPU check runs torch 2.11). Each name below is imported from where those versions keep it;
a version that moves one breaks this module alone, and the module that uses it says why it does:

- Pyro's inference utilities: whether validation is on (``is_validation_enabled``), a loss as a
  float (``torch_item``), the warning for a NaN loss (``warn_if_nan``), the checks of a trace its
  ELBOs make (``check_model_guide_match``, ``check_site_shape``, ``site_is_subsample``), and the
  scaling and masking it applies to log-densities (``scale_and_mask``): the lean ELBOs
  (:mod:`pyrovae.infer.lean_elbo`) and the trace helpers compute what Pyro's own ELBOs compute.
- ``param_with_module_name``: the names ``pyro.module`` gives a module's parameters.
- ``Messenger``: the base of Pyro's effect handlers (two of pyrovae's handle ``sample`` and
  ``param`` messages through its ``_pyro_sample`` / ``_pyro_param`` protocol).
- ``make_fx``: torch's tracer of a function into an FX graph (the compiled engine records a step
  with it).
- :func:`validate_sample` and :func:`extended_shape`: the value checks and batch shapes a torch
  ``Distribution`` subclass inherits (pyrovae's own distributions use them as torch's do).
- :func:`module_state`: a module's named parameters and buffers (as ``named_parameters()`` and
  ``named_buffers()`` give them) and the train/eval mode of each of its modules, in one walk of the
  module tree reading each module's own registries: the compiled engine looks them up at every step,
  where torch's three generator walks took about 0.1 ms of a 3 ms step (batch 32, one CPU thread).
- :func:`own_code`: a function with a code object of its own, for :func:`torch.compile`, which keeps
  a few compiled variants per code object (8 in torch 2.13) and runs a function uncompiled past them.
- :func:`is_recording`: whether torch is recording the operations being run into a graph
  (``make_fx``'s proxy mode, :func:`torch.jit.trace`, :func:`torch.compile`), which the MMD asks
  before it writes into buffers of its own.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.params.param_store import param_with_module_name
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match, check_site_shape, warn_if_nan
from torch.fx.experimental import proxy_tensor
from torch.fx.experimental.proxy_tensor import make_fx

__all__ = [
    "is_validation_enabled",
    "torch_item",
    "warn_if_nan",
    "check_model_guide_match",
    "check_site_shape",
    "site_is_subsample",
    "scale_and_mask",
    "param_with_module_name",
    "Messenger",
    "make_fx",
    "validate_sample",
    "extended_shape",
    "is_recording",
    "module_state",
    "own_code",
]


def validate_sample(distribution: torch.distributions.Distribution, value: torch.Tensor) -> None:
    """The check torch's ``Distribution.log_prob`` makes of ``value`` (its support and shape)."""
    distribution._validate_sample(value)


def extended_shape(distribution: torch.distributions.Distribution, sample_shape: torch.Size) -> torch.Size:
    """``sample_shape + batch_shape + event_shape`` of ``distribution``, as torch's samplers size a draw."""
    return distribution._extended_shape(sample_shape)


def is_recording() -> bool:
    """Whether the operations being run are recorded into a graph that may later be differentiated
    (``make_fx``'s proxy mode, a :func:`torch.jit.trace`, :func:`torch.compile`'s tracing)."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return (
        torch.jit.is_tracing()
        or (compiling is not None and compiling())
        or proxy_tensor.get_innermost_proxy_mode() is not None
    )


def module_state(
    module: torch.nn.Module,
) -> tuple[list[tuple[str, torch.nn.Parameter]], list[tuple[str, torch.Tensor]], tuple[bool, ...]]:
    """``(list(module.named_parameters()), list(module.named_buffers()), tuple(m.training for m in
    module.modules()))``: the same names, tensors and order, from one walk of the module tree."""
    params: list[tuple[str, torch.nn.Parameter]] = []
    buffers: list[tuple[str, torch.Tensor]] = []
    modes = []
    seen_modules: set[int] = set()
    seen_params: set[int] = set()
    seen_buffers: set[int] = set()
    stack = [("", module)]  # (depth first, children in order: the order of named_modules())
    while stack:
        dot, child = stack.pop()
        if id(child) in seen_modules:
            continue
        seen_modules.add(id(child))
        modes.append(child.training)
        for registry, seen, out in ((child._parameters, seen_params, params), (child._buffers, seen_buffers, buffers)):
            for name, tensor in registry.items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    out.append((dot + name, tensor))
        stack.extend((f"{dot}{name}.", sub) for name, sub in reversed(child._modules.items()) if sub is not None)
    return params, buffers, tuple(modes)


def own_code(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``function`` with a code object of its own, named ``name`` (its globals, defaults and closure
    unchanged). :func:`torch.compile` keeps the variants it compiled per code object and, past a
    few (8 in torch 2.13), runs a function uncompiled with a warning: functions made from one
    ``def`` (closures over different models, kernels for different dtypes) would share that allowance."""
    names = {"co_name": name, **({"co_qualname": name} if hasattr(function.__code__, "co_qualname") else {})}
    code = function.__code__.replace(**names)  # (co_qualname: Python 3.11 on)
    return types.FunctionType(code, function.__globals__, name, function.__defaults__, function.__closure__)
