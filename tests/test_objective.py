"""The training objective is a torch module: loss = objective(x); anything that drives a module drives it."""

import pyro
import pytest
import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel

from pyrovae import VAE, closed_form_elbo, make_elbo
from pyrovae.infer import Objective, program_modules
from pyrovae.train import GuardedStep, make_adam


def _vae_and_data(n=24, x_dim=7):
    pyro.set_rng_seed(0)
    vae = VAE(x_dim, z_dim=2, hidden_dims=(5,)).double()
    return vae, torch.bernoulli(torch.rand(n, x_dim, dtype=torch.float64))


def test_its_parameters_are_the_vaes_and_its_loss_is_the_estimators(float64):
    vae, x = _vae_and_data()
    objective = Objective(vae.model, vae.guide, make_elbo("meanfield"), num_data=96)
    assert [id(p) for p in objective.parameters()] == [id(p) for p in vae.parameters()]
    assert program_modules(vae.model, vae.guide) == [vae]
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(3)
        loss = objective(x)
        assert len(pyro.get_param_store().keys()) == 0  # the VAE ran without param sites: the store is untouched
        pyro.set_rng_seed(3)
        z = vae.guide(x).detach()
    loc, scale = vae.encoder(x)
    elbo = 4 * closed_form_elbo(vae, x, eps=(z - loc) / scale).elbo.sum()  # N / B = 96 / 24
    assert loss.item() == pytest.approx(-elbo.item(), rel=1e-12)


def test_it_refuses_what_is_not_a_pyro_elbo():
    vae, _ = _vae_and_data()
    with pytest.raises(TypeError, match="elbo must be a pyro.infer.ELBO"):
        Objective(vae.model, vae.guide, "meanfield")


@pytest.fixture
def gloo_world_of_one(tmp_path):
    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    torch_dist.destroy_process_group()


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
def test_distributed_data_parallel_wraps_the_step_and_trains_it(float64, gloo_world_of_one, elbo):
    # DDP (gloo, one process) wraps the objective as it would any module; with one rank its
    # gradient averaging is the identity, so it trains to the parameters the bare objective reaches
    results = []
    for wrap in (False, True):
        vae, x = _vae_and_data()
        objective = Objective(vae.model, vae.guide, make_elbo(elbo), num_data=x.shape[0])
        module = DistributedDataParallel(objective) if wrap else objective
        step = GuardedStep(module, make_adam(module.parameters(), lr=0.05))
        pyro.set_rng_seed(1)
        with pyro.validation_enabled(False):
            losses = [step(batch).item() for _ in range(3) for batch in x.split(8)]
        assert step.failed() is None
        results.append((losses, [p.detach().clone() for p in vae.parameters()]))
    (losses_a, params_a), (losses_b, params_b) = results
    assert losses_b == pytest.approx(losses_a, rel=1e-12)
    assert losses_b[-1] < losses_b[0]
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_fit_trains_in_a_process_group_the_caller_made(float64, gloo_world_of_one):
    # World.of_group: the caller initialised torch.distributed itself (world size 1 here), and fit
    # trains in it to the parameters a plain fit reaches
    from pyrovae import fit
    from pyrovae.train import FitOptions
    from pyrovae.train.distributed import World

    world = World.of_group("cpu")
    assert (world.rank, world.size, world.backend, world.device.type) == (0, 1, "gloo", "cpu")
    runs = []
    for in_group in (False, True):
        vae, x = _vae_and_data()
        options = FitOptions(epochs=2, batch_size=8, lr=0.05, seed=2)
        history = fit(vae, x, options, world=world if in_group else None)  # on the CPU: the model's device
        runs.append((history.step_elbos, [p.detach().clone() for p in vae.parameters()]))
    (elbos_a, params_a), (elbos_b, params_b) = runs
    assert elbos_b == pytest.approx(elbos_a, rel=1e-10)
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
