"""Pyro's ELBOs against the hand-written closed form of eq. 11-18, in float64."""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyrovae import VAE, closed_form_elbo, estimate_elbo, make_elbo
from pyrovae.models.kl import kl_diag_gaussian_std_normal

LIKELIHOODS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-fixed-sigma": dict(likelihood="gaussian", sigma=0.6),
    "gaussian-learned-sigma": dict(likelihood="gaussian", sigma=0.6, learn_sigma=True),
}


def small_vae(**kwargs):
    vae = VAE(x_dim=12, z_dim=4, hidden_dims=(9, 7), activation="tanh", **kwargs)
    if kwargs.get("learn_sigma"):  # a sigma that is not the same for every pixel
        with torch.no_grad():
            vae.likelihood.sigma_unconstrained.add_(0.3 * torch.randn(12))
    return vae


def data_for(vae, n=6):
    x = torch.rand(n, vae.x_dim)
    return torch.bernoulli(x) if vae.likelihood.name == "bernoulli" else x


def replayed(vae, x, num_data=None):
    """Model and guide replayed on one guide draw, and the noise eps that produced it."""
    guide_trace = poutine.trace(vae.guide).get_trace(x, num_data=num_data)
    z = guide_trace.nodes["z"]["value"]
    loc, scale = vae.encoder(x)
    eps = ((z - loc) / scale).detach()
    return poutine.replay(vae.model, trace=guide_trace), poutine.replay(vae.guide, trace=guide_trace), eps


def grads(vae):
    return torch.cat([p.grad.flatten() for p in vae.parameters()])


@pytest.mark.parametrize("num_data", [None, 50], ids=["unscaled", "minibatch-of-50"])
@pytest.mark.parametrize("options", LIKELIHOODS.values(), ids=LIKELIHOODS.keys())
def test_closed_form_equals_trace_mean_field_elbo_on_the_same_draw(float64, options, num_data):
    vae = small_vae(**options)
    x = data_for(vae)
    model, guide, eps = replayed(vae, x, num_data)
    pyro_loss = make_elbo("meanfield").loss(model, guide, x, num_data=num_data)
    terms = closed_form_elbo(vae, x, eps=eps)
    scale = (num_data or x.shape[0]) / x.shape[0]
    assert terms.elbo.shape == terms.reconstruction.shape == terms.kl.shape == (x.shape[0],)
    assert -pyro_loss == pytest.approx(scale * terms.elbo.sum().item(), rel=1e-6, abs=0)
    # and much tighter than the 1e-6: both are the same float64 arithmetic
    assert -pyro_loss == pytest.approx(scale * terms.elbo.sum().item(), rel=1e-12)


@pytest.mark.parametrize("options", LIKELIHOODS.values(), ids=LIKELIHOODS.keys())
def test_closed_form_gradients_equal_mean_field_surrogate_gradients(float64, options):
    vae = small_vae(**options)
    x = data_for(vae)
    model, guide, eps = replayed(vae, x, num_data=40)
    make_elbo("meanfield").differentiable_loss(model, guide, x, num_data=40).backward()
    pyro_grads = grads(vae)
    vae.zero_grad()
    (-(40 / x.shape[0]) * closed_form_elbo(vae, x, eps=eps).elbo.sum()).backward()
    torch.testing.assert_close(grads(vae), pyro_grads, rtol=1e-10, atol=1e-12)


def hand_written_trace_elbo(vae, x, eps):
    """log p(x|z) + log p(z) - log q(z|x) at z = mu + sigma * eps, all by hand."""
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    log_lik = vae.likelihood.log_prob(x, vae.decoder(z))
    log_prior = (-0.5 * math.log(2 * math.pi) - 0.5 * z**2).sum(-1)
    log_q = (-0.5 * math.log(2 * math.pi) - torch.log(scale) - 0.5 * eps**2).sum(-1)
    return log_lik + log_prior - log_q


@pytest.mark.parametrize("options", LIKELIHOODS.values(), ids=LIKELIHOODS.keys())
def test_trace_elbo_on_a_replayed_trace_equals_the_hand_written_log_ratio(float64, options):
    vae = small_vae(**options)
    x = data_for(vae)
    model, guide, eps = replayed(vae, x, num_data=30)
    loss = make_elbo("trace").differentiable_loss(model, guide, x, num_data=30)
    assert_same_loss_and_gradients(vae, loss, -5 * hand_written_trace_elbo(vae, x, eps).sum())


def assert_same_loss_and_gradients(vae, loss, expected):
    """``loss`` (Pyro's) and ``expected`` (by hand) agree in value (1e-12) and in their gradients (1e-10)."""
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    loss.backward()
    pyro_grads = grads(vae)
    vae.zero_grad()
    expected.backward()
    torch.testing.assert_close(grads(vae), pyro_grads, rtol=1e-10, atol=1e-12)


def reference_elbo(vae, x, draws=100_000):
    """sum_n ELBO(x_n): the reconstruction term from ``draws`` samples per point, the KL by eq. 18.

    Its Monte Carlo error is sqrt(1500 / draws) ~ 0.12 of the tests' standard errors.
    """
    with torch.no_grad():
        eps = torch.randn(draws, x.shape[0], vae.z_dim)
        recon = torch.stack([closed_form_elbo(vae, x, eps=e).reconstruction for e in eps.split(10_000)]).mean(0)
        loc, scale = vae.encoder(x)
        return (recon - kl_diag_gaussian_std_normal(loc, scale)).sum().item()


@pytest.mark.parametrize("engine", ["eager", "jit", "compiled"])
@pytest.mark.parametrize("name", ["meanfield", "trace"])
def test_every_elbo_and_engine_is_unbiased_for_the_same_quantity(float64, name, engine):
    # R = 1500 independent estimates from the objective module as each engine runs it; their mean
    # must be within 4 standard errors of the ELBO
    from pyrovae.infer import Objective
    from pyrovae.train.engines import CompiledEngine, make_engine

    vae = small_vae(likelihood="bernoulli")
    x = data_for(vae, n=5)
    run = CompiledEngine(backend=None) if engine == "compiled" else make_engine(engine)  # (recorded, not compiled)
    module = run.wrap(Objective(vae.model, vae.guide, make_elbo(name)))
    with torch.no_grad(), pyro.validation_enabled(False):
        estimates = torch.tensor([-module(x).item() for _ in range(1500)])
    target = reference_elbo(vae, x)
    stderr = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - target) < 4 * stderr, (estimates.mean().item(), target, stderr)


def test_analytic_kl_has_lower_variance_than_monte_carlo_kl(float64):
    vae = small_vae(likelihood="bernoulli")
    x = data_for(vae, n=5)
    spread = {}
    for name in ("meanfield", "trace"):
        elbo = make_elbo(name)
        with torch.no_grad():
            spread[name] = torch.tensor([elbo.loss(vae.model, vae.guide, x) for _ in range(500)]).std().item()
    assert spread["meanfield"] < spread["trace"]


def test_mean_field_and_trace_gradients_agree_in_expectation(float64):
    # Average of 600 gradient estimates from each estimator; compare within 5 standard errors.
    vae = small_vae(likelihood="gaussian", sigma=0.6)
    x = data_for(vae, n=4)
    means, errors = {}, {}
    for name in ("meanfield", "trace"):
        elbo = make_elbo(name)
        samples = []
        for _ in range(600):
            vae.zero_grad()
            elbo.loss_and_grads(vae.model, vae.guide, x)
            samples.append(grads(vae).clone())
        stacked = torch.stack(samples)
        means[name], errors[name] = stacked.mean(0), stacked.std(0) / math.sqrt(len(samples))
    bound = 5 * torch.sqrt(errors["meanfield"] ** 2 + errors["trace"] ** 2) + 1e-9
    assert ((means["meanfield"] - means["trace"]).abs() <= bound).all()


def test_particles_average_the_reconstruction_term(float64):
    vae = small_vae(likelihood="bernoulli")
    x = data_for(vae)
    eps = torch.randn(3, x.shape[0], vae.z_dim)
    terms = closed_form_elbo(vae, x, eps=eps)
    singles = torch.stack([closed_form_elbo(vae, x, eps=e).reconstruction for e in eps])
    torch.testing.assert_close(terms.reconstruction, singles.mean(0))
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)


def test_closed_form_with_z_equals_closed_form_with_eps(float64):
    vae = small_vae(likelihood="bernoulli")
    x = data_for(vae)
    eps = torch.randn(x.shape[0], vae.z_dim)
    loc, scale = vae.encoder(x)
    torch.testing.assert_close(
        closed_form_elbo(vae, x, z=loc + scale * eps).elbo, closed_form_elbo(vae, x, eps=eps).elbo
    )


def test_closed_form_bad_input():
    vae = small_vae()
    x = data_for(vae)
    with pytest.raises(ValueError, match="at most one of eps and z"):
        closed_form_elbo(vae, x, eps=torch.zeros(6, 4), z=torch.zeros(6, 4))
    with pytest.raises(ValueError, match=r"eps must end in shape \(6, 4\)"):
        closed_form_elbo(vae, x, eps=torch.zeros(6, 3))
    with pytest.raises(ValueError, match="elbo must be one of"):
        make_elbo("tracegraph")
    with pytest.raises(ValueError, match="num_particles must be a positive int"):
        make_elbo("trace", num_particles=0)


def test_vectorized_particles_give_the_same_expectation(float64):
    vae = small_vae(likelihood="bernoulli")
    x = data_for(vae, n=5)
    elbo = make_elbo("meanfield", num_particles=64)
    with torch.no_grad():
        estimates = torch.tensor([-elbo.loss(vae.model, vae.guide, x) for _ in range(200)])
    stderr = estimates.std().item() / math.sqrt(len(estimates))
    assert abs(estimates.mean().item() - reference_elbo(vae, x)) < 4 * stderr


def test_estimate_elbo_is_per_data_point_and_chunking_does_not_change_it(float64):
    vae = small_vae(likelihood="bernoulli")
    x = data_for(vae, n=40)
    pyro.set_rng_seed(3)
    whole = estimate_elbo(vae, x, num_particles=2000, batch_size=40)
    pyro.set_rng_seed(4)
    chunked = estimate_elbo(vae, x, num_particles=2000, batch_size=7)
    assert whole == pytest.approx(reference_elbo(vae, x) / 40, abs=0.05)
    assert chunked == pytest.approx(whole, abs=0.05)
    with pytest.raises(ValueError, match="empty"):
        estimate_elbo(vae, x[:0])


@pytest.mark.parametrize("name", ["meanfield", "trace"])
def test_the_jit_engine_traces_once_and_gives_the_eager_gradients(float64, name, monkeypatch):
    from pyrovae.infer import Objective
    from pyrovae.train.engines import JitEngine

    vae = small_vae(likelihood="bernoulli")
    x = data_for(vae, n=5)
    traces = []
    trace = torch.jit.trace
    monkeypatch.setattr(torch.jit, "trace", lambda *args, **kwargs: traces.append(1) or trace(*args, **kwargs))
    objective = Objective(vae.model, vae.guide, make_elbo(name), num_data=20)
    traced = JitEngine().wrap(objective)

    def loss_and_grads(module, seed):
        pyro.set_rng_seed(seed)
        vae.zero_grad(set_to_none=True)
        loss = module(x)
        loss.backward()
        return loss.item(), grads(vae).clone()

    with pyro.validation_enabled(False):
        loss_and_grads(traced, 0)  # runs eagerly and traces
        for seed in (1, 2, 3):
            (jit_loss, jit_grads), (eager_loss, eager_grads) = (
                loss_and_grads(traced, seed),
                loss_and_grads(objective, seed),
            )
            assert jit_loss == pytest.approx(eager_loss, rel=1e-12)
            torch.testing.assert_close(jit_grads, eager_grads, rtol=1e-10, atol=1e-12)
    assert len(traces) == 1
