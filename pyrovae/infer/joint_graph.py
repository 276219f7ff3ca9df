r"""A recorded loss and its backward pass as one graph: the loss, the gradients and their norm.

The ``compiled`` engine records an objective's forward pass as a function of its parameters,
buffers and tensor arguments (:class:`~pyrovae.infer.compiled.CompiledObjective`). A training
step needs more than the loss: every parameter's gradient, and the Euclidean norm of all of
them together (the ``grad_norm`` metric, which the non-finite guard reads,
:class:`~pyrovae.train.step.GuardedStep`). :func:`record_with_gradients` runs the recorded forward
graph and :func:`torch.autograd.grad` on it inside
:func:`~torch.fx.experimental.proxy_tensor.make_fx`, so that autograd's backward pass is written
out, operation by operation, into the same graph as the forward pass, followed by the norm

.. math::

    \|g\| = \Big\| \big(\|g_1\|_2, \dots, \|g_P\|_2\big) \Big\|_2

(:func:`gradient_norm_of`, the form in which :func:`torch.nn.utils.clip_grad_norm_` measures it).
The graph's operations are the ones autograd runs, on the same draws, so its gradients are autograd's
to float rounding. Compiled as one graph, the step needs no autograd engine at run time, no
per-parameter gradient accumulation and no separate pass for the norm, and inductor fuses the
backward's element-wise work with the forward's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .._compat import make_fx

__all__ = ["gradient_norm_of", "record_with_gradients"]


def gradient_norm_of(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """The Euclidean norm of ``grads`` all together: the norm of their norms (as
    :func:`torch.nn.utils.clip_grad_norm_` measures it; the form a joint graph records)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, 2.0) for g in grads]), 2.0)


def record_with_gradients(
    forward: Callable[..., torch.Tensor],
    params: list[torch.Tensor],
    buffers: list[torch.Tensor],
    tensors: list[torch.Tensor],
    devices: Sequence[int] = (),
) -> torch.fx.GraphModule:
    """``forward(params, buffers, tensors)`` (a loss) and its backward pass, recorded as one graph of
    the same inputs that returns ``(loss, gradients, norm)``: the loss detached, one gradient per
    parameter (``None`` for a parameter the loss does not depend on), in the parameter's own
    layout as ``backward()`` leaves it, and their norm (:func:`gradient_norm_of`). ``params`` must
    require gradients; the random generators (the CPU's and those of the CUDA ``devices``) are left
    as they were. Raises whatever the recording raises (a backward pass that cannot be recorded)."""

    def loss_and_gradients(
        params: list[torch.Tensor], buffers: list[torch.Tensor], tensors: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor | None], torch.Tensor]:
        loss = forward(params, buffers, tensors)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [
            g if g is None or g.stride() == p.stride() else g.contiguous() for g, p in zip(grads, params, strict=True)
        ]
        return loss.detach(), grads, gradient_norm_of([g for g in grads if g is not None])

    with torch.random.fork_rng(devices=list(devices)):
        return make_fx(loss_and_gradients)(params, buffers, tensors)
