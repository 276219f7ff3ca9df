import sys
import uuid

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


def unique_name(prefix):
    """A module name no other test uses (so sys.modules never holds a stale one)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


CANARY_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")

from pyrovae.models.priors import StandardNormalPrior


class Evil(StandardNormalPrior):
    pass
"""


@pytest.fixture
def canary(tmp_path, monkeypatch):
    """A module that records being imported (a file and sys.modules), for hostile run directories and
    checkpoints: ``(its name, a function that says whether it was imported)``."""
    name = unique_name("canary")
    folder = tmp_path / "canarypkg"
    folder.mkdir()
    marker = tmp_path / "canary-was-imported"
    (folder / f"{name}.py").write_text(CANARY_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(folder))

    def imported():
        return name in sys.modules or marker.exists()

    yield name, imported
    sys.modules.pop(name, None)
