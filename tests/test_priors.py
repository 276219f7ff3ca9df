import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyrovae import VAE, closed_form_elbo, fit, load_dataset, make_elbo
from pyrovae.infer.elbo import kl_modes
from pyrovae.models.networks import Encoder
from pyrovae.models.priors import (
    PRIORS,
    FlowPrior,
    LearnedGaussianPrior,
    MixtureOfGaussiansPrior,
    StandardNormalPrior,
    VampPrior,
    make_prior,
)
from pyrovae.train import FitOptions

from .conftest import cuda_devices


def perturbed(prior):
    """The prior with every parameter moved away from its initial value, so tests see a generic one."""
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return prior


def build(name, z_dim):
    if name == "normal":
        return StandardNormalPrior(z_dim)
    if name == "gaussian":
        return perturbed(LearnedGaussianPrior(z_dim))
    if name == "mog":
        return perturbed(MixtureOfGaussiansPrior(z_dim, components=3))
    if name == "vamp":
        return perturbed(VampPrior(z_dim, Encoder(5, z_dim, (8,)), x_dim=5, components=4))
    return perturbed(FlowPrior(z_dim, num_flows=2))


def grid(z_dim, half_width=9.0, points=601):
    axis = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    cell = (axis[1] - axis[0]).item() ** z_dim
    if z_dim == 1:
        return axis.unsqueeze(-1), cell
    return torch.cartesian_prod(axis, axis), cell


@pytest.mark.parametrize("z_dim", [1, 2])
@pytest.mark.parametrize("name", PRIORS)
def test_log_prob_is_normalised(float64, name, z_dim):
    prior = build(name, z_dim)
    z, cell = grid(z_dim, points=2001 if z_dim == 1 else 501)
    with torch.no_grad():
        mass = (prior((z.shape[0],)).log_prob(z).exp().sum() * cell).item()
    assert mass == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", PRIORS)
def test_samples_match_log_prob_moments(float64, name):
    # mean and second moment by quadrature of exp(log_prob) against 100,000 samples (4 standard errors)
    prior = build(name, 2)
    z, cell = grid(2, points=501)
    with torch.no_grad():
        density = prior((z.shape[0],)).log_prob(z).exp() * cell
        samples = prior(()).sample((100_000,))
    for f in (lambda v: v, lambda v: v**2):
        exact = (density.unsqueeze(-1) * f(z)).sum(0)
        values = f(samples)
        stderr = values.std(0) / math.sqrt(len(values))
        assert ((values.mean(0) - exact).abs() < 4 * stderr).all(), (name, values.mean(0), exact, stderr)


@pytest.mark.parametrize("name", PRIORS)
def test_prior_shapes_and_batching(name):
    prior = build(name, 3)
    d = prior((4,))
    assert d.batch_shape == (4,) and d.event_shape == (3,)
    assert d.log_prob(torch.randn(4, 3)).shape == (4,)
    assert prior((2, 5)).log_prob(torch.randn(2, 5, 3)).shape == (2, 5)


EXPECTED_MODES = {
    "normal": "analytic",
    "gaussian": "analytic",
    "mog": "monte-carlo",
    "vamp": "monte-carlo",
    "flow": "monte-carlo",
}


@pytest.mark.parametrize("name", PRIORS)
def test_reported_kl_mode_is_the_one_pyro_uses(float64, name):
    vae = VAE(6, z_dim=2, hidden_dims=(5,), prior=name, prior_components=3)
    perturbed(vae.prior)
    x = torch.bernoulli(torch.rand(4, 6))
    assert kl_modes(vae, "meanfield") == {"z": EXPECTED_MODES[name]}
    assert kl_modes(vae, "jit-meanfield") == {"z": EXPECTED_MODES[name]}
    assert kl_modes(vae, "trace") == kl_modes(vae, "jit-trace") == {"z": "monte-carlo"}
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    z = guide_trace.nodes["z"]["value"]
    loss = make_elbo("meanfield").loss(
        poutine.replay(vae.model, trace=guide_trace), poutine.replay(vae.guide, trace=guide_trace), x
    )
    log_lik = vae.likelihood.log_prob(x, vae.decoder(z))
    monte_carlo = (log_lik + vae.prior((4,)).log_prob(z) - vae.posterior(x).log_prob(z)).sum().item()
    if EXPECTED_MODES[name] == "analytic":
        loc, scale = vae.encoder(x)
        eps = (z - loc) / scale
        assert -loss == pytest.approx(closed_form_elbo(vae, x, eps=eps).elbo.sum().item(), rel=1e-12)
        assert -loss != pytest.approx(monte_carlo, rel=1e-6)
    else:
        assert -loss == pytest.approx(monte_carlo, rel=1e-12)


@pytest.mark.parametrize("num_data", [None, 40])
def test_closed_form_with_learned_gaussian_prior_equals_pyro(float64, num_data):
    # eq. 16 in place of eq. 18
    vae = VAE(8, z_dim=3, hidden_dims=(6,), prior="gaussian")
    perturbed(vae.prior)
    x = torch.bernoulli(torch.rand(5, 8))
    guide_trace = poutine.trace(vae.guide).get_trace(x, num_data=num_data)
    loc, scale = vae.encoder(x)
    eps = ((guide_trace.nodes["z"]["value"] - loc) / scale).detach()
    elbo = make_elbo("meanfield")
    loss = elbo.differentiable_loss(
        poutine.replay(vae.model, trace=guide_trace), poutine.replay(vae.guide, trace=guide_trace), x, num_data=num_data
    )
    closed = (num_data or 5) / 5 * closed_form_elbo(vae, x, eps=eps).elbo.sum()
    assert -loss.item() == pytest.approx(closed.item(), rel=1e-6)
    loss.backward()
    pyro_grads = torch.cat([p.grad.flatten() for p in vae.parameters()])
    vae.zero_grad()
    (-closed).backward()
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in vae.parameters()]), pyro_grads)
    assert vae.prior.loc.grad.abs().sum() > 0  # the prior's parameters get gradients


def test_closed_form_refuses_priors_without_a_closed_form():
    vae = VAE(8, z_dim=3, hidden_dims=(6,), prior="mog", prior_components=2)
    with pytest.raises(ValueError, match="needs a prior with a closed-form KL; MixtureOfGaussiansPrior has none"):
        closed_form_elbo(vae, torch.bernoulli(torch.rand(2, 8)))


@pytest.mark.parametrize("name", ["gaussian", "mog", "vamp", "flow"])
def test_training_moves_the_prior_parameters(name):
    data = load_dataset("digits", "dynamic")
    pyro.set_rng_seed(0)
    vae = VAE(data.x_dim, z_dim=4, hidden_dims=(32,), prior=name, prior_components=3)
    if name == "vamp":
        vae.prior.initialize_from_data(data.train)
        assert torch.equal(vae.prior.pseudo_inputs[0], data.train[(data.train == vae.prior.pseudo_inputs[0]).all(1)][0])
    before = {k: v.detach().clone() for k, v in vae.prior.named_parameters()}
    history = fit(vae, data, FitOptions(epochs=1, batch_size=128, lr=1e-2, seed=0))
    assert history.kl_mode == {"z": EXPECTED_MODES[name]}
    assert history.last["kl_mode"] == history.kl_mode
    for key, value in vae.prior.named_parameters():
        assert not torch.equal(before[key], value.detach()), f"{name}: {key} did not move"


def test_vamp_prior_shares_the_encoder_without_owning_it():
    vae = VAE(8, z_dim=3, hidden_dims=(6,), prior="vamp", prior_components=4)
    assert vae.prior.encoder is vae.encoder
    assert [name for name, _ in vae.prior.named_parameters()] == ["pseudo_inputs"]
    assert sum(1 for p in vae.parameters() if p is vae.encoder.net[0].weight) == 1
    with pytest.raises(ValueError, match="need at least 4 rows"):
        vae.prior.initialize_from_data(torch.rand(3, 8))


@pytest.mark.parametrize("device", cuda_devices())
@pytest.mark.parametrize("name", PRIORS)
def test_priors_follow_device_and_dtype(name, device):
    vae = VAE(6, z_dim=2, hidden_dims=(5,), prior=name, prior_components=2).to(device=device, dtype=torch.float64)
    z = vae.prior((3,)).sample()
    assert z.dtype == torch.float64 and z.device.type == device
    assert vae.prior((3,)).log_prob(z).dtype == torch.float64
    x = torch.bernoulli(torch.rand(3, 6, dtype=torch.float64, device=device))
    assert math.isfinite(make_elbo("meanfield").loss(vae.model, vae.guide, x))


def test_make_prior_errors():
    with pytest.raises(ValueError, match="prior must be one of"):
        make_prior("laplace", 2)
    with pytest.raises(ValueError, match="needs the VAE's encoder"):
        make_prior("vamp", 2)
    with pytest.raises(ValueError, match="components must be a positive int"):
        MixtureOfGaussiansPrior(2, components=0)
    with pytest.raises(ValueError, match="num_flows must be a positive int"):
        FlowPrior(2, num_flows=0)


def test_checkpoint_round_trip_for_every_prior(tmp_path):
    from pyrovae import load_vae, save_checkpoint

    for name in PRIORS:
        vae = VAE(6, z_dim=2, hidden_dims=(5,), prior=name, prior_components=3)
        perturbed(vae.prior)
        save_checkpoint(tmp_path / f"{name}.pt", vae)
        loaded = load_vae(tmp_path / f"{name}.pt")
        z = torch.randn(4, 2)
        torch.testing.assert_close(loaded.prior((4,)).log_prob(z), vae.prior((4,)).log_prob(z))


@pytest.mark.parametrize("batch", [(), (3,)], ids=["unbatched", "batch-of-3"])
def test_the_mixture_equals_pyros_mixture_same_family(float64, batch):
    # the quadratic form written as matrix products (float64) against Pyro's elementwise mixture
    from pyrovae.models.priors import DiagonalGaussianMixture

    logits, locs, scales = torch.randn(5), 2 * torch.randn(5, 4), 0.05 + torch.rand(5, 4)
    ours = DiagonalGaussianMixture(logits, locs, scales).expand(batch)
    theirs = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(locs, scales).to_event(1))
    z = torch.cat([locs[:1] + 1e-3 * torch.randn(6, 4), 5 * torch.randn(6, 4)])  # near a component, and far out
    z = z.reshape(12, *([1] * len(batch)), 4).expand(12, *batch, 4)
    torch.testing.assert_close(ours.log_prob(z), theirs.log_prob(z), rtol=1e-12, atol=1e-12)
    assert ours.log_prob(z).shape == (12, *batch) and ours.sample((7,)).shape == (7, *batch, 4)
    # in float32 too, to float32's rounding of the result (the products are taken in float64)
    z32 = z.float()
    ours32 = DiagonalGaussianMixture(logits.float(), locs.float(), scales.float()).expand(batch)
    assert ours32.log_prob(z32).dtype == torch.float32
    torch.testing.assert_close(ours32.log_prob(z32).double(), theirs.log_prob(z32.double()), rtol=1e-6, atol=1e-5)
