r"""A model's encoder and decoder as ONNX graphs, for serving them without Python, torch or Pyro.

Two files, each with a dynamic batch axis:

- ``encoder.onnx``: input ``x`` of shape ``(batch, x_dim)`` (rows of data, images flattened as in
  training), outputs ``loc`` and ``scale`` of :math:`q_\phi(z|x)`, each ``(batch, z_dim)`` (for a
  two-level model, of the top level :math:`z_2`);
- ``decoder.onnx``: input ``z`` of shape ``(batch, z_dim)`` (for a two-level model, :math:`z_1`),
  output ``params``: what the decoder network computes and the likelihood reads, ``(batch,
  params_per_dim * x_dim)``: the Bernoulli's logits (eq. 13), the Gaussian's mean (eq. 14; a learned
  :math:`\sigma` is in ``model.safetensors``), or the discretized logistic's locations then log-scales.

The graphs are made by ``torch.onnx.export`` with the ``torch.export`` front end, which refuses code
whose path depends on the values of the data (``if z.sum() > 0``) instead of freezing one branch;
such a model is refused in one line naming it and the cause.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, import_optional
from ..models.base import LatentVariableModel

__all__ = ["export_onnx", "check_onnx", "ENCODER_ONNX", "DECODER_ONNX", "onnx_parts"]

ENCODER_ONNX = "encoder.onnx"
DECODER_ONNX = "decoder.onnx"
#: rows of the example inputs the graphs are traced with (not 1, which torch.export would specialise)
_EXAMPLE_ROWS = 3


def check_onnx() -> None:
    """The libraries ``torch.onnx.export`` needs, or a one-line :class:`~pyrovae.errors.DependencyError`."""
    for name in ("onnx", "onnxscript"):
        import_optional(name, "--onnx", "onnx")


class _Part(nn.Module):
    """One network of a model, as a module ``torch.onnx.export`` can take (a tuple out, no Pyro)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> Any:
        return self.network(inputs)


def onnx_parts(model: LatentVariableModel) -> dict[str, tuple[nn.Module, int, list[str], list[str]]]:
    """The networks to export: file name -> (module, input width, input names, output names).

    A model qualifies when it has an ``encoder`` module (``x -> (loc, scale)``) and a ``decoder``
    module (``z -> params``), as :class:`~pyrovae.VAE` and its subclasses do; anything else is
    refused in one line.
    """
    name = model.kind
    missing = [part for part in ("encoder", "decoder") if not isinstance(getattr(model, part, None), nn.Module)]
    if missing:
        raise ModelError(
            f"cannot export the model {name} to ONNX: it has no {' or '.join(missing)} module (ONNX export takes "
            "model.encoder: x -> (loc, scale) and model.decoder: z -> the likelihood's parameters)"
        )
    return {
        ENCODER_ONNX: (_Part(model.encoder), model.x_dim, ["x"], ["loc", "scale"]),
        DECODER_ONNX: (_Part(model.decoder), model.z_dim, ["z"], ["params"]),
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines, warnings and graph dumps kept off the user's terminal."""
    loggers = [logging.getLogger(name) for name in ("torch", "torch.onnx", "torch.export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR + 10)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            with contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _cause(error: BaseException) -> str:
    """The innermost cause of an export failure, with the line of the model's code that raised it."""
    inner = error
    while inner.__cause__ is not None:
        inner = inner.__cause__
    first = next((line.strip() for line in str(inner).splitlines() if line.strip()), "")
    where = re.findall(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)', str(error))
    at = f" at {Path(where[-1][0]).name}:{where[-1][1]} ({where[-1][3].strip()})" if where else ""
    said = f"{type(inner).__name__}: {first}" if first else type(inner).__name__
    return (said if len(said) <= 240 else said[:237] + "...") + at


def _output_names(module: nn.Module, example: torch.Tensor, names: list[str]) -> list[str]:
    """``names`` where the network returns that many tensors, else ``output_0, output_1, ...`` (a
    model of yours whose encoder returns one tensor, say)."""
    with torch.no_grad():
        found = module(example)
    count = len(found) if isinstance(found, (tuple, list)) else 1
    return names if count == len(names) else [f"output_{i}" for i in range(count)]


def export_onnx(model: LatentVariableModel, folder: str | Path) -> list[Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` of ``model`` to ``folder`` (see
    :mod:`pyrovae.pretrained.onnx`); the model is exported on the CPU, in its dtype, in eval mode (and
    left where and as it was).

    :raises ModelError: a model without ``encoder``/``decoder`` modules, or one the exporter cannot
        take (data-dependent control flow, operators ONNX lacks), naming the model and the cause.
    """
    check_onnx()
    parts = onnx_parts(model)
    device, training = model.device, model.training
    model.to("cpu").eval()
    noise = torch.Generator().manual_seed(0)  # (the caller's random state is left alone)
    written = []
    try:
        for file_name, (module, width, inputs, outputs) in parts.items():
            example = torch.randn(_EXAMPLE_ROWS, width, dtype=model.dtype, generator=noise)
            batch = torch.export.Dim("batch")
            path = Path(folder) / file_name
            try:
                outputs = _output_names(module, example, outputs)
                with _quiet(), torch.no_grad():
                    torch.onnx.export(
                        module, (example,), str(path), dynamo=True, input_names=inputs, output_names=outputs,
                        dynamic_shapes=({0: batch},), external_data=False, verbose=False,
                    )  # fmt: skip
            except Exception as error:  # noqa: BLE001 (torch.export's and the ONNX translators' own errors)
                path.unlink(missing_ok=True)
                network = file_name.removesuffix(".onnx")
                raise ModelError(
                    f"cannot export the {network} of the model {model.kind} to ONNX: {_cause(error)}"
                ) from None
            written.append(path)
    finally:
        model.to(device).train(training)
    return written
