import pyro
import pytest
import torch
from pyro import poutine

from pyrovae import VAE, make_elbo
from pyrovae.models.priors import StandardNormalPrior


def test_sites_shapes_and_plate():
    vae = VAE(x_dim=20, z_dim=3, hidden_dims=(16,))
    x = torch.bernoulli(torch.rand(5, 20))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    z_site, x_site = model_trace.nodes["z"], model_trace.nodes["x"]
    assert z_site["value"].shape == (5, 3) and not z_site["is_observed"]
    assert x_site["is_observed"] and x_site["value"] is x
    assert x_site["fn"].batch_shape == (5,) and x_site["fn"].event_shape == (20,)
    assert z_site["fn"].batch_shape == (5,) and z_site["fn"].event_shape == (3,)
    assert [f.name for f in z_site["cond_indep_stack"]] == ["data"]
    assert guide_trace.nodes["z"]["fn"].has_rsample


@pytest.mark.parametrize("num_data", [None, 5, 60])
def test_minibatch_scale_is_num_data_over_batch(num_data):
    vae = VAE(x_dim=8, z_dim=2, hidden_dims=(4,))
    x = torch.bernoulli(torch.rand(5, 8))
    for program in (vae.model, vae.guide):
        trace = poutine.trace(program).get_trace(x, num_data=num_data)
        assert trace.nodes["z"]["scale"] == pytest.approx((num_data or 5) / 5)


def test_parameters_are_registered_and_the_module_wins_over_a_stale_store():
    vae = VAE(x_dim=8, z_dim=2, hidden_dims=(4,), likelihood="gaussian", learn_sigma=True)
    x = torch.rand(3, 8)
    trace = poutine.trace(vae.guide, param_only=True).get_trace(x)
    trace_model = poutine.trace(vae.model, param_only=True).get_trace(x)
    names = set(trace.nodes) | set(trace_model.nodes)
    assert len(names) == len(list(vae.parameters()))
    assert "vae_likelihood$$$sigma_unconstrained" in names
    # A second VAE under the same name: its own tensors must be the ones Pyro optimises.
    other = VAE(x_dim=8, z_dim=2, hidden_dims=(4,), likelihood="gaussian", learn_sigma=True)
    trace = poutine.trace(other.guide, param_only=True).get_trace(x)
    own = {id(p) for p in other.parameters()}
    assert {id(site["value"]) for site in trace.nodes.values()} <= own


def test_svi_step_changes_the_module_parameters():
    vae = VAE(x_dim=8, z_dim=2, hidden_dims=(4,))
    before = [p.detach().clone() for p in vae.parameters()]
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), make_elbo("meanfield"))
    svi.step(torch.bernoulli(torch.rand(6, 8)))
    assert all(not torch.equal(b, p) for b, p in zip(before, vae.parameters(), strict=True))


def test_vectorized_particles_shapes():
    vae = VAE(x_dim=8, z_dim=2, hidden_dims=(4,))
    x = torch.bernoulli(torch.rand(6, 8))
    loss = make_elbo("trace", num_particles=7).loss(vae.model, vae.guide, x)
    assert isinstance(loss, float)


def test_sample_and_reconstruct_shapes_and_ranges():
    vae = VAE(x_dim=12, z_dim=3, hidden_dims=(8,), image_shape=(3, 4))
    samples = vae.sample(10)
    assert samples.shape == (10, 12) and ((samples >= 0) & (samples <= 1)).all()
    binary = vae.sample(4, mean=False)
    assert ((binary == 0) | (binary == 1)).all()
    assert vae.reconstruct(torch.rand(5, 12)).shape == (5, 12)
    assert vae.posterior(torch.rand(5, 12)).batch_shape == (5,)


def test_device_dtype_follow_the_module(float64):
    vae = VAE(x_dim=8, z_dim=2, hidden_dims=(4,)).to(torch.float64)
    assert vae.dtype == torch.float64 and vae.device == torch.device("cpu")
    assert vae.prior((3,)).sample().dtype == torch.float64


def test_custom_prior_module_plugs_in():
    class LaplacePrior(StandardNormalPrior):
        def forward(self, batch_shape=()):
            shape = tuple(batch_shape) + (self.z_dim,)
            return pyro.distributions.Laplace(self.loc.expand(shape), self.scale.expand(shape)).to_event(1)

    vae = VAE(x_dim=8, z_dim=2, hidden_dims=(4,), prior=LaplacePrior(2))
    loss = make_elbo("meanfield").loss(vae.model, vae.guide, torch.bernoulli(torch.rand(4, 8)))
    assert torch.isfinite(torch.tensor(loss))
    with pytest.raises(ValueError, match="prior has z_dim=3, the VAE has z_dim=2"):
        VAE(x_dim=8, z_dim=2, prior=StandardNormalPrior(3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x_dim=0), "x_dim must be a positive int"),
        (dict(x_dim=8, z_dim=-1), "z_dim must be a positive int"),
        (dict(x_dim=8, hidden_dims=(0,)), "hidden_dims must be positive ints"),
        (dict(x_dim=8, activation="swish"), "activation must be one of"),
        (dict(x_dim=8, prior="cauchy"), "prior must be one of"),
        (dict(x_dim=8, image_shape=(3, 3)), r"image_shape \(3, 3\) has 9 pixels, x_dim is 8"),
    ],
)
def test_vae_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(**kwargs)


def test_model_rejects_wrong_batch_shapes():
    vae = VAE(x_dim=8, z_dim=2, hidden_dims=(4,))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 8\), got \(3, 7\)"):
        vae.model(torch.zeros(3, 7))
    with pytest.raises(ValueError, match="num_data must be >= the batch size 3"):
        vae.guide(torch.zeros(3, 8), num_data=2)


def test_register_params_then_without_param_sites_drops_the_per_call_param_sites():
    vae = VAE(6, z_dim=2, hidden_dims=(4,), prior="gaussian")
    x = torch.bernoulli(torch.rand(3, 6))

    def param_sites(fn):
        return {name for name, site in poutine.trace(fn).get_trace(x).nodes.items() if site["type"] == "param"}

    every_call = param_sites(vae.model) | param_sites(vae.guide)
    assert len(every_call) == len(list(vae.parameters())) == 10  # encoder 4, decoder 4, prior 2
    pyro.clear_param_store()
    vae.register_params()
    with vae.without_param_sites():
        store = pyro.get_param_store()
        assert sorted(store.keys()) == sorted(every_call)  # registered on entry
        assert all(store[name] is p for name, p in store.named_parameters())
        assert param_sites(vae.model) == param_sites(vae.guide) == set()
    assert param_sites(vae.model) | param_sites(vae.guide) == every_call  # per-call again after the block
