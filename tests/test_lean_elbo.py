"""The lean ELBOs give Pyro's numbers on the same draws, and skip only work Pyro throws away."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyrovae import VAE, closed_form_elbo
from pyrovae.infer.lean_elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO

PAIRS = {"meanfield": (LeanTraceMeanField_ELBO, TraceMeanField_ELBO), "trace": (LeanTrace_ELBO, Trace_ELBO)}
PARTICLES = {"one": (1, False), "three-vectorized": (3, True), "two-in-a-loop": (2, False)}


def grads(params):
    return [p.grad.clone() if p.grad is not None else None for p in params]


def run(cls, method, model, guide, params, *args, particles=(1, False), seed=5, **kwargs):
    """Call ``method`` of a fresh ``cls`` on one seeded draw; returns (value, gradients)."""
    for p in params:
        p.grad = None
    pyro.set_rng_seed(seed)
    elbo = cls(num_particles=particles[0], vectorize_particles=particles[1], max_plate_nesting=1)
    value = getattr(elbo, method)(model, guide, *args, **kwargs)
    if method == "differentiable_loss":
        value.backward()
        value = value.item()
    return value, grads(params)


def assert_same(lean, stock):
    (a, grads_a), (b, grads_b) = lean, stock
    assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        if gb is None:
            assert ga is None or not ga.any()
        else:
            torch.testing.assert_close(ga, gb, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("particles", PARTICLES.values(), ids=PARTICLES.keys())
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("prior", ["normal", "gaussian", "mog", "vamp", "flow"])
@pytest.mark.parametrize("estimator", PAIRS)
def test_lean_equals_pyro_on_the_same_draw(float64, estimator, prior, likelihood, particles):
    vae = VAE(10, z_dim=3, hidden_dims=(7,), prior=prior, likelihood=likelihood, learn_sigma=likelihood == "gaussian")
    x = torch.bernoulli(torch.rand(5, 10))
    params = list(vae.parameters())
    lean, stock = PAIRS[estimator]
    with pyro.validation_enabled(False):
        for method in ("loss_and_grads", "differentiable_loss"):
            assert_same(
                run(lean, method, vae.model, vae.guide, params, x, particles=particles, num_data=20),
                run(stock, method, vae.model, vae.guide, params, x, particles=particles, num_data=20),
            )
        a = run(lean, "loss", vae.model, vae.guide, [], x, particles=particles, num_data=20)[0]
        b = run(stock, "loss", vae.model, vae.guide, [], x, particles=particles, num_data=20)[0]
        assert a == pytest.approx(b, rel=1e-12)


def test_lean_meanfield_equals_the_closed_form_elbo(float64):
    # eq. 11 with eq. 13 and eq. 18, on the guide's own draw, scaled by N/B = 4
    vae = VAE(12, z_dim=4, hidden_dims=(9,))
    x = torch.bernoulli(torch.rand(6, 12))
    guide_trace = poutine.trace(vae.guide).get_trace(x, num_data=24)
    loc, scale = vae.encoder(x)
    eps = ((guide_trace.nodes["z"]["value"] - loc) / scale).detach()
    with pyro.validation_enabled(False):
        loss = LeanTraceMeanField_ELBO().loss(
            poutine.replay(vae.model, trace=guide_trace), poutine.replay(vae.guide, trace=guide_trace), x, num_data=24
        )
    assert -loss == pytest.approx(4 * closed_form_elbo(vae, x, eps=eps).elbo.sum().item(), rel=1e-12)


def test_lean_meanfield_computes_no_latent_log_density_where_the_kl_is_analytic(monkeypatch):
    calls = []
    log_prob = dist.Normal.log_prob
    monkeypatch.setattr(dist.Normal, "log_prob", lambda self, value: calls.append(1) or log_prob(self, value))
    vae = VAE(8, z_dim=2, hidden_dims=(4,))
    x = torch.bernoulli(torch.rand(3, 8))
    with pyro.validation_enabled(False):
        LeanTraceMeanField_ELBO().loss_and_grads(vae.model, vae.guide, x)
        assert calls == []  # Bernoulli x, analytic KL for z: no Normal density is evaluated
        TraceMeanField_ELBO().loss_and_grads(vae.model, vae.guide, x)
        assert len(calls) == 2  # Pyro evaluates log p(z) and log q(z|x), then uses the KL instead


def test_validation_runs_pyros_own_code_and_checks(monkeypatch):
    vae = VAE(8, z_dim=2, hidden_dims=(4,))
    fail = lambda *args: pytest.fail("the lean path ran under validation")  # noqa: E731
    monkeypatch.setattr(LeanTraceMeanField_ELBO, "_lean_traces", fail)
    x = torch.bernoulli(torch.rand(3, 8))
    with pyro.validation_enabled(True):
        assert LeanTraceMeanField_ELBO().loss_and_grads(vae.model, vae.guide, x) > 0
        with pytest.raises(ValueError, match="support"):  # Pyro's support check of the observations
            LeanTraceMeanField_ELBO().loss(vae.model, vae.guide, x + 0.5)


def score_function_program():
    """A model with a discrete latent (score-function gradient) and a masked, scaled Normal latent;
    the guide's parameters are Pyro params (Pyro's classes take no gradient without param sites)."""
    pyro.param("logit", torch.tensor(-0.8))
    pyro.param("loc", torch.tensor([0.2, -0.4, 1.0]))
    mask = torch.tensor([True, False, True])

    def model(x):
        with pyro.plate("data", 3), poutine.scale(scale=2.5):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            with poutine.mask(mask=mask):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + c, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 3), poutine.scale(scale=2.5):
            pyro.sample("c", dist.Bernoulli(logits=pyro.param("logit")))
            with poutine.mask(mask=mask):
                pyro.sample("z", dist.Normal(pyro.param("loc"), 0.7))

    return model, guide, [pyro.param(name).unconstrained() for name in ("logit", "loc")]


@pytest.mark.parametrize("estimator", PAIRS)
def test_a_score_function_site_falls_back_to_pyro_on_the_same_draw(float64, estimator):
    model, guide, params = score_function_program()
    x = torch.tensor([0.5, -1.0, 2.0])
    lean, stock = PAIRS[estimator]
    with pyro.validation_enabled(False):
        for method in ("loss_and_grads", "differentiable_loss"):
            assert_same(run(lean, method, model, guide, params, x), run(stock, method, model, guide, params, x))
        assert run(lean, "loss_and_grads", model, guide, params, x)[1][0] != 0  # the score-function gradient


def test_auxiliary_guide_sites_fall_back_to_pyro(float64):
    loc = pyro.param("loc", torch.tensor(0.3)).unconstrained()

    def model(x):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        u = pyro.sample("u", dist.Normal(pyro.param("loc"), 1.0), infer={"is_auxiliary": True})
        pyro.sample("z", dist.Normal(u, 0.5))

    x = torch.tensor(0.7)
    with pyro.validation_enabled(False):
        assert_same(
            run(LeanTraceMeanField_ELBO, "loss_and_grads", model, guide, [loc], x),
            run(TraceMeanField_ELBO, "loss_and_grads", model, guide, [loc], x),
        )


def test_lean_elbo_trains_inside_stock_pyro_svi_exactly_as_pyros(float64):
    x = torch.bernoulli(torch.rand(8, 6))
    pyro.set_rng_seed(2)
    vae = VAE(6, z_dim=2, hidden_dims=(5,))
    twin = VAE(6, z_dim=2, hidden_dims=(5,), name="twin")
    twin.load_state_dict(vae.state_dict())
    initial = [p.detach().clone() for p in vae.parameters()]
    losses = {}
    with pyro.validation_enabled(False):
        for module, elbo in ((vae, LeanTraceMeanField_ELBO()), (twin, TraceMeanField_ELBO())):
            pyro.set_rng_seed(9)
            svi = SVI(module.model, module.guide, pyro.optim.Adam({"lr": 0.05}), elbo)
            losses[module.name] = [svi.step(x, num_data=40) for _ in range(4)]
    assert losses["vae"] == pytest.approx(losses["twin"], rel=1e-12)
    for a, b in zip(vae.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert all(not torch.equal(a, b) for a, b in zip(initial, vae.parameters(), strict=True))  # it trained


INF = float("inf")
SHAPES = {"ten-given": (10, 1), "ten-guessed": (10, INF), "one-given": (1, 1), "one-guessed": (1, INF)}


@pytest.mark.parametrize("particles, nesting", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("estimator", PAIRS)
def test_vectorized_particles_are_where_pyro_puts_them(estimator, particles, nesting):
    # Pyro's tests/infer/test_valid_models.py::test_vectorized_num_particles: the particle plate is in
    # dimension -max_plate_nesting (which already counts it), and one particle gets none
    seen = {"lean": [], "pyro": []}
    running = ["lean"]  # whose ELBO is calling the model

    def model(x):
        with pyro.plate("data", 3):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        seen[running[0]].append(z.shape)

    def guide(x):
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Normal(pyro.param("loc", torch.zeros(3)), 0.5))

    x = torch.tensor([0.5, -1.0, 2.0])
    for validate in (True, False):
        with pyro.validation_enabled(validate):
            for running[0], cls in zip(seen, PAIRS[estimator], strict=True):
                elbo = cls(num_particles=particles, vectorize_particles=True, max_plate_nesting=nesting)
                for _ in range(2):  # a guessed max_plate_nesting is known from the second call on
                    elbo.loss(model, guide, x)
    expected = torch.Size((10, 3) if particles == 10 else (3,))
    assert seen["pyro"][-1] == expected  # (Pyro's guess of max_plate_nesting runs the model without particles)
    assert seen["lean"] == seen["pyro"]


@pytest.mark.parametrize("mask", [True, False], ids=["kept", "masked-out"])
def test_a_site_masked_out_entirely_gives_pyros_numbers(float64, mask):
    # Pyro's tests/infer/test_valid_models.py::test_mean_field_mask_ok: with .mask(False) Pyro's
    # kl_divergence of the masked distributions is the number 0, not a tensor
    loc = pyro.param("loc", torch.tensor(0.3)).unconstrained()

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).mask(mask))
        pyro.sample("y", dist.Normal(x, 1.0))

    def guide():
        x = pyro.sample("x", dist.Normal(pyro.param("loc"), 1.0).mask(mask))
        pyro.sample("y", dist.Normal(x, 1.0))

    with pyro.validation_enabled(False):
        for method in ("loss_and_grads", "differentiable_loss"):
            assert_same(
                run(LeanTraceMeanField_ELBO, method, model, guide, [loc]),
                run(TraceMeanField_ELBO, method, model, guide, [loc]),
            )
