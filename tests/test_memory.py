"""pyrovae.memory: settings that cannot fit are refused up front; allocation failures are one line."""

import pytest
import torch

from pyrovae import VAE
from pyrovae.errors import NotEnoughMemoryError
from pyrovae.memory import allocation_failures, available_bytes, check_fits, format_bytes, parameter_count


def test_free_cpu_memory_is_known_and_plausible():
    free = available_bytes("cpu")
    assert free is not None and 0 < free < 2**50


def test_parameter_count_on_the_meta_device_needs_no_memory():
    small = VAE(64, z_dim=3, hidden_dims=(16,))
    assert parameter_count(lambda: VAE(64, z_dim=3, hidden_dims=(16,))) == sum(p.numel() for p in small.parameters())
    huge = parameter_count(lambda: VAE(64, z_dim=10**10, hidden_dims=(400,)))  # 12 trillion, counted not made
    assert huge == (64 * 400 + 400) + (400 * 2 * 10**10 + 2 * 10**10) + (10**10 * 400 + 400) + (400 * 64 + 64)


def test_check_fits_names_the_largest_parts_and_the_free_memory():
    check_fits([("small", 1024)], "cpu", "lower it")
    with pytest.raises(NotEnoughMemoryError) as error:
        check_fits([("--z-dim 10", 2.0**60), ("tiny", 10)], "cpu", "lower --z-dim")
    message = str(error.value)
    assert message.startswith("these settings need at least 1024.0 PiB of memory (--z-dim 10: 1024.0 PiB)")
    assert "tiny" not in message and message.endswith("free on cpu: lower --z-dim") and "\n" not in message


def test_an_allocation_failure_names_the_options_and_the_amount():
    message = r"^ran out of memory while testing \(256.0 PiB at once\): lower -n$"
    with pytest.raises(NotEnoughMemoryError, match=message):
        with allocation_failures("while testing", "-n"):
            torch.empty(2**55, dtype=torch.float64)  # 256 PiB: torch's CPU allocator refuses it
    with pytest.raises(ValueError, match="unrelated"), allocation_failures("while testing", "-n"):
        raise ValueError("unrelated")


def test_format_bytes():
    assert [format_bytes(n) for n in (5, 1536, 3 * 2**30)] == ["5 B", "1.5 KiB", "3.0 GiB"]
