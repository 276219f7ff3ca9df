import pyro
import pytest
import torch

# The tests' models are tiny: one thread is as fast as two, and it keeps the suite from slowing
# down many times over when another process holds a core (torch's threads then wait on each other).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Every test starts with an empty param store, validation on, and a seeded RNG."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


@pytest.fixture
def float64():
    """Run a test in float64 (used wherever exactness is checked)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def cuda_devices():
    """Parametrize over 'cpu' and, when one is visible, 'cuda'; the cuda case skips cleanly."""
    return [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")),
    ]
