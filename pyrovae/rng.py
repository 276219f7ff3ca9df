"""The states of torch's random generators, captured and set back (imports nothing from pyrovae but errors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import CheckpointError

__all__ = ["GeneratorStates"]


@dataclass
class GeneratorStates:
    """The states of torch's CPU generator and, where CUDA is in use, of every GPU's generator."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None = None

    @classmethod
    def capture(cls) -> GeneratorStates:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu.cpu())
        if self.cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in self.cuda])

    def to_dict(self) -> dict[str, Any]:
        return {"torch": self.cpu} if self.cuda is None else {"torch": self.cpu, "cuda": list(self.cuda)}

    @classmethod
    def from_dict(cls, value: Any, where: str) -> GeneratorStates:
        if (
            not isinstance(value, dict)
            or not torch.is_tensor(value.get("torch"))
            or value["torch"].dtype != torch.uint8
        ):
            raise CheckpointError(
                f"{where} must be a dict with a uint8 tensor 'torch' (a generator state), got {value!r:.80}"
            )
        cuda = value.get("cuda")
        if cuda is not None and not (isinstance(cuda, list) and all(torch.is_tensor(s) for s in cuda)):
            raise CheckpointError(f"{where} should hold its CUDA generator states as a list of tensors")
        return cls(value["torch"], cuda)
