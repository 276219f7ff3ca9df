"""Trained models to hand on: the folder of ``pyrovae export`` (``model.safetensors`` +
``config.json``, :mod:`~pyrovae.pretrained.folder`), loaded without pickle
(:func:`load_pretrained`); the encoder and decoder as ONNX graphs (:mod:`~pyrovae.pretrained.onnx`);
and the folder through ``huggingface_hub`` (:mod:`pyrovae.pretrained.hub`, imported on its own)."""

from .folder import (
    CONFIG_NAME,
    PRETRAINED_FORMAT,
    WEIGHTS_NAME,
    check_out,
    is_pretrained,
    load_pretrained,
    pretrained_config,
    read_pretrained_config,
    read_weights,
    save_pretrained,
    write_pretrained,
)
from .onnx import DECODER_ONNX, ENCODER_ONNX, check_onnx, export_onnx

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PRETRAINED_FORMAT",
    "ENCODER_ONNX",
    "DECODER_ONNX",
    "check_out",
    "is_pretrained",
    "load_pretrained",
    "pretrained_config",
    "read_pretrained_config",
    "read_weights",
    "save_pretrained",
    "write_pretrained",
    "export_onnx",
    "check_onnx",
]
