"""The objectives beyond the ELBO (eq. 23-30) against their hand-written versions, their special
cases, and the same numbers under every engine. Float64 wherever exactness is checked."""

import math

import pyro
import pytest
import torch

from pyrovae import VAE, LinearGaussianVAE, make_elbo
from pyrovae.errors import ConfigError
from pyrovae.infer import ELBOS, Objective, kl_modes
from pyrovae.infer.closed_form_objectives import (
    closed_form_infovae,
    closed_form_iwae,
    closed_form_weighted_elbo,
    coordinate_kl,
    iwae_gradients,
)
from pyrovae.infer.infovae import InfoVAE_ELBO
from pyrovae.infer.iwae import IWAE_ELBO
from pyrovae.infer.lean_elbo import (
    KLWeightedMeanField_ELBO,
    KLWeightedTrace_ELBO,
    LeanTrace_ELBO,
    LeanTraceMeanField_ELBO,
)
from pyrovae.infer.module_elbo import ModuleELBO, describe_objective, optimises_the_elbo
from pyrovae.infer.options import OPTIONS_FOR, ObjectiveOptions
from pyrovae.train.engines import CompiledEngine, JitEngine

NUM_DATA = 24
LIKELIHOODS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-learned-sigma": dict(likelihood="gaussian", sigma=0.6, learn_sigma=True),
}


def small_vae(**kwargs):
    pyro.set_rng_seed(0)
    return VAE(7, z_dim=3, hidden_dims=(5,), activation="tanh", **kwargs)


def data_for(vae, n=6):
    x = torch.rand(n, vae.x_dim)
    return torch.bernoulli(x) if vae.likelihood.name == "bernoulli" else x


def estimator_step(estimator, vae, x, seed):
    """One seeded loss with its gradients for every parameter (the VAE run without param sites)."""
    pyro.set_rng_seed(seed)
    vae.zero_grad(set_to_none=True)
    with pyro.validation_enabled(False), vae.without_param_sites():
        loss = estimator.differentiable_loss(vae.model, vae.guide, x, num_data=NUM_DATA)
    loss.backward()
    return loss.item(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in vae.parameters()]


def same_draws(estimator, vae, x, seed):
    """The traces the estimator draws with ``seed``, and the noise eps behind its codes, shape
    ``(K, B, z_dim)`` (an ELBO estimator's one particle has no particle dimension: one is added)."""
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False), vae.without_param_sites():
        if isinstance(estimator, ModuleELBO):
            traces = estimator.draw(vae.model, vae.guide, x, num_data=NUM_DATA)
            z = traces.latent[0][1]["value"]
        else:
            ((_, guide_trace),) = estimator.particle_traces(vae.model, vae.guide, x, num_data=NUM_DATA)
            traces, z = None, guide_trace.nodes["z"]["value"]
    loc, scale = vae.encoder(x)
    return traces, ((z - loc) / scale).detach().reshape(-1, *loc.shape)


def gradients(objective, vae):
    params = list(vae.parameters())
    grads = torch.autograd.grad(-objective, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def assert_same(loss_a, grads_a, loss_b, grads_b, rtol=1e-10):
    assert loss_a == pytest.approx(loss_b, rel=rtol, abs=1e-10)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-10)


# -- each objective against its hand-written version, on the same draws -----------------------------
@pytest.mark.parametrize("grad", ["standard", "dreg"])
@pytest.mark.parametrize("particles", [1, 4])
@pytest.mark.parametrize("options", LIKELIHOODS.values(), ids=LIKELIHOODS.keys())
def test_iwae_equals_the_hand_written_bound_and_gradients(float64, options, particles, grad):
    vae = small_vae(**options)
    x = data_for(vae)
    estimator = make_elbo("iwae", particles, iwae_grad=grad)
    for seed in (1, 2):
        loss, grads = estimator_step(estimator, vae, x, seed)
        _, eps = same_draws(estimator, vae, x, seed)
        terms = closed_form_iwae(vae, x, eps, NUM_DATA)
        assert_same(loss, grads, -terms.objective.item(), iwae_gradients(vae, x, eps, grad, NUM_DATA))
        assert terms.bound.shape == (x.shape[0],) and terms.log_weights.shape == (particles, x.shape[0])


def test_dreg_changes_only_the_encoder_gradient(float64):
    vae = small_vae()
    x = data_for(vae)
    (loss_s, grads_s), (loss_d, grads_d) = (
        estimator_step(make_elbo("iwae", 5, iwae_grad=g), vae, x, seed=3) for g in ("standard", "dreg")
    )
    assert loss_s == pytest.approx(loss_d, rel=1e-12)  # the value is the bound either way
    encoder = {id(p) for p in vae.encoder.parameters()}
    for p, s, d in zip(vae.parameters(), grads_s, grads_d, strict=True):
        if id(p) in encoder:
            assert not torch.allclose(s, d)
        else:
            torch.testing.assert_close(s, d, rtol=1e-12, atol=1e-12)


WEIGHTED = {
    "beta-0.5": dict(beta=0.5),
    "beta-2-free-bits-0.3": dict(beta=2.0, free_bits=0.3),
    "warmup-10-at-step-4": dict(kl_warmup=10),
}


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("options", WEIGHTED.values(), ids=WEIGHTED.keys())
@pytest.mark.parametrize("name", ["meanfield", "trace"])
def test_weighted_kl_equals_the_hand_written_objective(float64, name, options, particles):
    vae = small_vae()
    x = data_for(vae)
    estimator = make_elbo(name, particles, **options)
    assert type(estimator) is (LeanTraceMeanField_ELBO if name == "meanfield" else LeanTrace_ELBO)  # whatever beta
    estimator.set_step(4)
    weight = estimator.weight_at(4)
    assert (
        weight
        == {"beta-0.5": 0.5, "beta-2-free-bits-0.3": 2.0, "warmup-10-at-step-4": 0.4}[
            next(k for k, v in WEIGHTED.items() if v == options)
        ]
    )
    loss, grads = estimator_step(estimator, vae, x, seed=5)
    _, eps = same_draws(estimator, vae, x, seed=5)
    free_bits = options.get("free_bits", 0.0)
    objective = closed_form_weighted_elbo(vae, x, eps, weight, free_bits, analytic=name == "meanfield", num_data=24)
    assert_same(loss, grads, -objective.item(), gradients(objective, vae))
    if free_bits:  # the budget binds some coordinates and not others, so both branches are checked
        loc, scale = vae.encoder(x)
        kl = coordinate_kl(loc, scale).mean(0) if name == "meanfield" else None
        if kl is not None:
            assert (kl < free_bits).any() and (kl > free_bits).any(), kl


INFOVAE = {
    "defaults": dict(),
    "mmd-vae-alpha-1-lambda-1": dict(infovae_alpha=1.0, infovae_lambda=1.0),
    "rbf-alpha-0.3-lambda-2": dict(infovae_alpha=0.3, infovae_lambda=2.0, mmd_kernel="rbf"),
    "negative-alpha": dict(infovae_alpha=-0.5, infovae_lambda=3.0),
}


@pytest.mark.parametrize("particles", [1, 2])
@pytest.mark.parametrize("options", INFOVAE.values(), ids=INFOVAE.keys())
def test_infovae_equals_the_hand_written_objective(float64, options, particles):
    vae = small_vae()
    x = data_for(vae)
    estimator = make_elbo("infovae", particles, **options)
    loss, grads = estimator_step(estimator, vae, x, seed=7)
    traces, eps = same_draws(estimator, vae, x, seed=7)
    (prior,) = estimator.prior_samples(traces)  # drawn after the guide's codes, as the loss drew them
    objective = closed_form_infovae(vae, x, eps, prior, estimator.alpha, estimator.lam, estimator.kernel, num_data=24)
    # (the default MMD weight is 999 and the loss about 1e4: relative 1e-10 is an absolute 1e-6)
    assert_same(loss, grads, -objective.item(), gradients(objective, vae), rtol=1e-10)


# -- special cases ----------------------------------------------------------------------------------
def test_iwae_with_one_particle_is_the_trace_elbo_on_the_same_draw(float64):
    vae = small_vae()
    x = data_for(vae)
    trace = estimator_step(make_elbo("trace"), vae, x, seed=11)
    assert_same(*estimator_step(make_elbo("iwae", 1, iwae_grad="standard"), vae, x, seed=11), *trace)
    assert estimator_step(make_elbo("iwae", 1, iwae_grad="dreg"), vae, x, seed=11)[0] == pytest.approx(trace[0])
    assert optimises_the_elbo(make_elbo("iwae", 1)) and not optimises_the_elbo(make_elbo("iwae", 2))


SPECIAL = {
    # (infovae options, the meanfield options it equals): derived in pyrovae/infer/infovae.py
    "alpha-0-lambda-1-is-the-elbo": (dict(infovae_alpha=0.0, infovae_lambda=1.0), dict()),
    "alpha-plus-lambda-1-is-beta-vae": (dict(infovae_alpha=0.25, infovae_lambda=0.75), dict(beta=0.75)),
    "alpha-1-lambda-0-is-reconstruction-only": (dict(infovae_alpha=1.0, infovae_lambda=0.0), dict(beta=0.0)),
}


@pytest.mark.parametrize("infovae, meanfield", SPECIAL.values(), ids=SPECIAL.keys())
def test_infovae_special_cases_are_meanfield_objectives_on_the_same_draws(float64, infovae, meanfield):
    vae = small_vae()
    x = data_for(vae)
    expected = estimator_step(make_elbo("meanfield", 2, **meanfield), vae, x, seed=13)
    assert_same(*estimator_step(make_elbo("infovae", 2, **infovae), vae, x, seed=13), *expected, rtol=1e-12)


def test_infovae_with_alpha_1_lambda_1_is_reconstruction_minus_mmd(float64):
    vae = small_vae()
    x = data_for(vae)
    estimator = make_elbo("infovae", 1, infovae_alpha=1.0, infovae_lambda=1.0)
    loss, _ = estimator_step(estimator, vae, x, seed=17)
    traces, eps = same_draws(estimator, vae, x, seed=17)
    reconstruction = closed_form_weighted_elbo(vae, x, eps, weight=0.0, num_data=NUM_DATA)
    assert -loss == pytest.approx((reconstruction - NUM_DATA * estimator.mmd_sum(traces) / x.shape[0]).item())


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("name", ["meanfield", "trace"])
def test_beta_1_is_the_elbo_on_one_code_path(float64, name, particles):
    """make_elbo builds one class whatever the KL options; at beta = 1 (no warm-up, no free bits)
    its loss and gradients are the closed-form ELBO's (eq. 11) to 1e-12 and Pyro's own
    estimator's on the same draws, and a weight that is the tensor 1 (a warm-up that has ended)
    gives them to the last bit, for an analytic KL and a Monte Carlo one (the mixture prior)."""
    vae = small_vae()
    x = data_for(vae)
    plain = make_elbo(name, particles)
    explicit = make_elbo(name, particles, beta=1.0, kl_warmup=0, free_bits=0.0)
    assert type(plain) is type(explicit) is type(make_elbo(name, particles, beta=0.5)) is ELBOS[name]
    assert plain.is_elbo() and optimises_the_elbo(plain) and describe_objective(plain) == "the ELBO (eq. 11)"
    loss, grads = estimator_step(plain, vae, x, seed=19)
    _, eps = same_draws(plain, vae, x, seed=19)
    objective = closed_form_weighted_elbo(vae, x, eps, 1.0, analytic=name == "meanfield", num_data=NUM_DATA)
    assert_same(loss, grads, -objective.item(), gradients(objective, vae), rtol=1e-12)
    stock = (pyro.infer.TraceMeanField_ELBO if name == "meanfield" else pyro.infer.Trace_ELBO)(
        num_particles=particles, max_plate_nesting=1, vectorize_particles=particles > 1
    )
    assert_same(*estimator_step(stock, vae, x, seed=19), loss, grads, rtol=1e-12)
    _bitwise(estimator_step(explicit, vae, x, seed=19), (loss, grads))
    for model in (vae, small_vae(prior="mog", prior_components=2)):
        ended = make_elbo(name, particles, kl_warmup=2)
        ended.set_step(5)
        assert not ended.unit_weight and ended.kl_weight.item() == 1.0 and not ended.is_elbo()
        _bitwise(
            estimator_step(ended, model, x, seed=23), estimator_step(make_elbo(name, particles), model, x, seed=23)
        )


def _bitwise(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == loss_b
    assert all(torch.equal(g, h) for g, h in zip(grads_a, grads_b, strict=True))
    return True


def test_the_deprecated_weighted_class_names_build_the_one_estimator():
    for old, new in ((KLWeightedMeanField_ELBO, LeanTraceMeanField_ELBO), (KLWeightedTrace_ELBO, LeanTrace_ELBO)):
        with pytest.warns(FutureWarning, match=f"{old.__name__} is deprecated .* it is {new.__name__}"):
            estimator = old(3, 0.5, 10, 0.1)
        assert isinstance(estimator, new) and estimator.max_plate_nesting == 2 and estimator.vectorize_particles
        assert (estimator.beta, estimator.kl_warmup, estimator.free_bits) == (0.5, 10, 0.1)


# -- the IWAE bound and DReG on the linear-Gaussian VAE (exact log p(x)) ---------------------------
def linear_gaussian(shift=0.3, narrow=0.4):
    """Probabilistic PCA with W of orthogonal columns, and q the exact posterior moved off its mean
    by ``shift`` and narrowed by ``exp(-narrow)``, so that the bound has a gap to close (2.76 nats
    over the 4 points with the defaults)."""
    pyro.set_rng_seed(0)
    vae = LinearGaussianVAE(5, 2, sigma=0.8).double()
    with torch.no_grad():
        vae.decoder.weight.copy_(torch.linalg.qr(torch.randn(5, 2))[0] * torch.tensor([2.0, 1.0]))
        vae.set_encoder_to_posterior()
        vae.encoder.log_scale.sub_(narrow)
        vae.encoder.loc.bias.add_(shift)
    return vae, torch.randn(4, 5, dtype=torch.float64)


def test_the_iwae_bound_rises_with_k_towards_the_exact_log_likelihood(float64):
    vae, x = linear_gaussian()
    log_px = vae.exact_log_marginal(x).sum().item()
    elbo = vae.exact_elbo(x).elbo.sum().item()
    means, errors = [], []
    for k, repeats in ((1, 2000), (10, 400), (100, 200), (1000, 50)):
        estimator = make_elbo("iwae", k)
        pyro.set_rng_seed(k)
        with torch.no_grad(), pyro.validation_enabled(False):
            values = torch.tensor([-estimator.loss(vae.model, vae.guide, x) for _ in range(repeats)])
        means.append(values.mean().item())
        errors.append(values.std().item() / math.sqrt(repeats))
    assert abs(means[0] - elbo) < 4 * errors[0]  # E[IWAE_1] is the ELBO (eq. 23)
    for i in range(3):
        assert means[i + 1] - means[i] > 4 * math.hypot(errors[i], errors[i + 1]), (means, errors)
    assert all(m < log_px + 4 * e for m, e in zip(means, errors, strict=True))
    assert log_px - means[-1] < 0.05 * (log_px - elbo), (log_px, elbo, means)


def test_dreg_has_the_standard_expected_gradient_and_a_lower_variance(float64):
    """Encoder gradients of the IWAE bound, K = 10, 1,000 draws each on the linear-Gaussian VAE with
    q near the exact posterior (shifted by 0.1, narrowed by exp(-0.1): a gap of 0.27 nats).

    Measured when this test was written (these seeds): the summed variance over the encoder's 12
    parameters was 59.7 (standard) and 0.286 (DReG), a ratio of 209; the two mean gradients agreed
    within 2.2 combined standard errors on every coordinate. DReG's advantage grows as q approaches
    the posterior (there its gradient is exactly 0) and fades when q is far from it: with
    ``linear_gaussian()``'s defaults (a gap of 2.76 nats) the variances were 90.7 and 87.0.
    """
    vae, x = linear_gaussian(shift=0.1, narrow=0.1)
    encoder = list(vae.encoder.parameters())
    samples = {}
    for grad in ("standard", "dreg"):
        estimator = make_elbo("iwae", 10, iwae_grad=grad)
        pyro.set_rng_seed(0)
        draws = []
        with pyro.validation_enabled(False), vae.without_param_sites():
            for _ in range(1000):
                loss = estimator.differentiable_loss(vae.model, vae.guide, x)
                draws.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, encoder)]))
        samples[grad] = torch.stack(draws)
    mean_s, mean_d = samples["standard"].mean(0), samples["dreg"].mean(0)
    se = torch.sqrt((samples["standard"].var(0) + samples["dreg"].var(0)) / 1000)
    assert ((mean_s - mean_d).abs() < 4 * se).all(), (mean_s - mean_d) / se
    variance_s, variance_d = samples["standard"].var(0).sum(), samples["dreg"].var(0).sum()
    assert variance_d < variance_s / 50, (variance_s, variance_d)


# -- the same numbers under every engine ------------------------------------------------------------
ENGINE_CASES = {
    "iwae-dreg": ("iwae", 3, dict(iwae_grad="dreg")),
    "iwae-standard": ("iwae", 3, dict(iwae_grad="standard")),
    "meanfield-warmup-free-bits": ("meanfield", 2, dict(kl_warmup=5, free_bits=0.2)),
    "trace-beta": ("trace", 1, dict(beta=0.3, kl_warmup=3)),
    "infovae": ("infovae", 2, dict()),
}


def engine_steps(module, estimator, vae, x, steps=4):
    out = []
    for step in range(steps):
        if hasattr(estimator, "set_step"):
            estimator.set_step(step)
        pyro.set_rng_seed(step)
        vae.zero_grad(set_to_none=True)
        loss = module(x)
        loss.backward()
        out.append((loss.item(), [p.grad.clone() for p in vae.parameters()]))
    return out


@pytest.mark.parametrize("engine", ["compiled", "jit"])
@pytest.mark.parametrize("case", ENGINE_CASES.values(), ids=ENGINE_CASES.keys())
def test_every_engine_gives_the_eager_losses_and_gradients(float64, case, engine):
    # a warm-up changes the KL weight at every step: the recorded graphs read it as an input
    name, particles, options = case
    vae = small_vae()
    x = data_for(vae)
    estimator = make_elbo(name, particles, **options)
    objective = Objective(vae.model, vae.guide, estimator, num_data=NUM_DATA)
    wrapped = (CompiledEngine(backend=None) if engine == "compiled" else JitEngine()).wrap(objective)
    with pyro.validation_enabled(False):
        eager = engine_steps(objective, estimator, vae, x)
        other = engine_steps(wrapped, estimator, vae, x)
    for (loss_a, grads_a), (loss_b, grads_b) in zip(other, eager, strict=True):
        assert_same(loss_a, grads_a, loss_b, grads_b)
    if engine == "compiled":
        assert wrapped.graph_for(x) is not None  # it ran the recorded graph, not the eager objective
    if "kl_warmup" in options:
        assert [n for n, _ in objective.named_buffers()][-1] == "elbo.kl_weight"


def test_inductor_compiled_steps_follow_the_warmup_weight(float64):
    # the graph is compiled once; the KL weight it reads changes at every step (a buffer, an input)
    name, particles, options = ENGINE_CASES["meanfield-warmup-free-bits"]
    vae = small_vae()
    x = data_for(vae)
    estimator = make_elbo(name, particles, **options)
    objective = Objective(vae.model, vae.guide, estimator, num_data=NUM_DATA)
    module = CompiledEngine().wrap(objective)
    with pyro.validation_enabled(False):
        eager = engine_steps(objective, estimator, vae, x, steps=6)
        compiled = engine_steps(module, estimator, vae, x, steps=6)
    for (loss_a, grads_a), (loss_b, grads_b) in zip(compiled, eager, strict=True):
        assert_same(loss_a, grads_a, loss_b, grads_b)
    assert len(module.graphs) == 1 and module.graph_for(x).compiled
    assert len({round(loss, 6) for loss, _ in compiled}) == 6


# -- options, refusals, reports ---------------------------------------------------------------------
def test_every_objective_option_names_what_it_applies_to():
    assert set(OPTIONS_FOR) == set(ObjectiveOptions.field_names())
    for name, elbos in OPTIONS_FOR.items():
        changed = {"beta": 2.0, "kl_warmup": 5, "free_bits": 0.5, "iwae_grad": "standard", "infovae_alpha": 0.5,
                   "infovae_lambda": 5.0, "mmd_kernel": "rbf"}[name]  # fmt: skip
        for elbo in ("meanfield", "trace", "iwae", "infovae"):
            if elbo in elbos:
                make_elbo(elbo, **{name: changed})
            else:
                flag = "--" + name.replace("_", "-")
                with pytest.raises(ConfigError, match=f"{flag} is for --elbo .*, not --elbo {elbo}"):
                    make_elbo(elbo, **{name: changed})


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(infovae_alpha=0.0, infovae_lambda=0.5), r"alpha \+ lambda >= 1 .* raise --infovae-lambda to at least 1"),
        (dict(infovae_alpha=1.5, infovae_lambda=1.0), r"infovae_alpha \(--infovae-alpha\) must be <= 1"),
        (dict(infovae_lambda=float("nan")), r"must be a finite number"),
        (dict(beta=-1.0), r"beta \(--beta\) must be >= 0"),
        (dict(kl_warmup=2.5), r"kl_warmup \(--kl-warmup\) must be an int >= 0"),
        (dict(iwae_grad="reinforce"), r"iwae_grad \(--iwae-grad\) must be one of standard, dreg"),
        (dict(mmd_kernel="laplace"), r"must be one of imq, rbf"),
    ],
)
def test_bad_objective_options_are_refused_with_what_to_do(options, message):
    with pytest.raises(ConfigError, match=message):
        ObjectiveOptions(**options)


def test_free_bits_needs_a_prior_that_factorises_and_dreg_one_latent_site(float64):
    vae = VAE(7, z_dim=3, hidden_dims=(5,), prior="mog", prior_components=2)
    x = data_for(vae)
    with pytest.raises(ConfigError, match="--free-bits needs guide and prior to be products over the coordinates"):
        estimator_step(make_elbo("meanfield", free_bits=0.1), vae, x, seed=0)
    estimator_step(make_elbo("meanfield", beta=0.5), vae, x, seed=0)  # a weighted Monte Carlo KL works

    def two_site_model(x, num_data=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            a = pyro.sample("a", pyro.distributions.Normal(0.0, 1.0))
            b = pyro.sample("b", pyro.distributions.Normal(a, 1.0))
            pyro.sample("x", pyro.distributions.Normal(a + b, 1.0), obs=x)

    def two_site_guide(x, num_data=None):
        with pyro.plate("data", x.shape[0], dim=-1):
            a = pyro.sample("a", pyro.distributions.Normal(x, 1.0))
            pyro.sample("b", pyro.distributions.Normal(a, 1.0))

    y = torch.randn(4)
    with pyro.validation_enabled(False):
        standard = make_elbo("iwae", 3, iwae_grad="standard").loss(two_site_model, two_site_guide, y)
        assert math.isfinite(standard)
        with pytest.raises(ConfigError, match="--iwae-grad dreg needs a guide with one latent site, found 2"):
            make_elbo("iwae", 3, iwae_grad="dreg").differentiable_loss(two_site_model, two_site_guide, y)


def test_a_global_latent_is_refused_by_the_per_point_objectives():
    def model(x, num_data=None):
        mu = pyro.sample("mu", pyro.distributions.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("x", pyro.distributions.Normal(mu, 1.0), obs=x)

    def guide(x, num_data=None):
        pyro.sample("mu", pyro.distributions.Normal(x.mean(), 1.0))

    for name in ("iwae", "infovae"):
        with pytest.raises(ConfigError, match=f"--elbo {name} is a bound per data point: .* site 'mu' is not"):
            make_elbo(name, 2).loss(model, guide, torch.randn(5))


def test_kl_modes_and_descriptions_say_what_each_objective_does():
    vae = small_vae()
    assert kl_modes(vae, "infovae") == {"z": "analytic"} and kl_modes(vae, "iwae") == {"z": "monte-carlo"}
    assert kl_modes(vae, make_elbo("trace", beta=2.0)) == {"z": "monte-carlo"}
    assert kl_modes(vae, make_elbo("meanfield", beta=2.0)) == {"z": "analytic"}
    assert describe_objective(make_elbo("meanfield")) == "the ELBO (eq. 11)"
    assert "K=5 (eq. 23), dreg gradients (not the ELBO" in describe_objective(make_elbo("iwae", 5))
    text = describe_objective(make_elbo("trace", beta=0.5, kl_warmup=100, free_bits=0.25))
    assert "0.5 * KL" in text and "over 100 steps" in text and "free bits 0.25 nats" in text
    assert "alpha=0, lambda=1000 (KL weight 1, MMD weight 999), imq kernel" in describe_objective(make_elbo("infovae"))


def test_the_warmup_weight_rises_linearly_and_is_set_in_place():
    estimator = make_elbo("meanfield", beta=2.0, kl_warmup=4)
    weight = estimator.kl_weight
    assert [estimator.weight_at(t) for t in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    estimator.set_step(3)
    assert estimator.kl_weight is weight and weight.item() == 1.5
    version = weight._version  # counts in-place writes
    estimator.set_step(3)  # the same weight again: nothing written
    assert weight._version == version
    estimator.set_step(9)  # after the warm-up: beta, written once and then left alone
    estimator.set_step(10)
    assert weight.item() == 2.0 and weight._version == version + 1
    constant = make_elbo("trace", beta=0.5)
    assert constant.kl_weight.item() == 0.5  # no warm-up: beta from the start...
    before = constant.kl_weight._version
    constant.set_step(100)
    assert constant.kl_weight._version == before  # ...and no write per step


def test_iwae_trains_in_stock_pyro_svi(float64):
    vae = small_vae()
    x = data_for(vae, n=12)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.05}), make_elbo("iwae", 4))
    losses = [svi.step(x) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])
    assert set(pyro.get_param_store().keys()) >= {"vae_encoder$$$net.0.weight", "vae_decoder$$$net.0.weight"}


def test_the_estimators_are_the_registered_classes():
    assert isinstance(make_elbo("iwae", 2), IWAE_ELBO) and isinstance(make_elbo("infovae"), InfoVAE_ELBO)


@pytest.mark.parametrize("free_bits", [0.0, 1e-9])  # the per-site KL, and the per-coordinate one
def test_a_weighted_kl_leaves_out_the_rows_a_mask_leaves_out(float64, free_bits):
    """Under ``poutine.mask``, only the kept rows' KL is weighted: on the same draws, the losses at
    two KL weights differ by the weights' difference times the analytic KL of the kept rows."""
    import pyro.distributions as dist
    from pyro import poutine

    mask = torch.tensor([True, False, True])
    loc, scale = (
        torch.tensor([[0.2, -0.4], [1.0, 0.3], [-0.7, 0.5]]),
        torch.tensor([[0.7, 1.1], [0.5, 0.9], [1.3, 0.8]]),
    )

    def model(x):
        with pyro.plate("data", 3), poutine.mask(mask=mask):
            z = pyro.sample("z", dist.Normal(torch.zeros(3, 2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 3), poutine.mask(mask=mask):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    x = torch.tensor([0.5, -1.0, 2.0])
    losses = []
    for beta in (0.5, 2.0):
        pyro.set_rng_seed(3)
        with pyro.validation_enabled(False):
            losses.append(make_elbo("meanfield", beta=beta, free_bits=free_bits).differentiable_loss(model, guide, x))
    kept_kl = (0.5 * (loc**2 + scale**2 - torch.log(scale**2) - 1.0)).sum(-1)[mask].sum()  # eq. 18
    assert (losses[1] - losses[0]).item() == pytest.approx(1.5 * kept_kl.item(), rel=1e-9)


@pytest.mark.parametrize("name", ["meanfield", "trace"])
def test_a_weighted_kl_refuses_what_only_pyros_code_computes_and_runs_pyros_checks(name):
    """A weighted KL has no Pyro estimator to fall back to: a guide site that is not reparameterised
    is refused in one line (the plain ELBO gives Pyro's number there), and under validation Pyro's
    checks of the traces run before the weighted sums (the plain ELBO runs Pyro's own code)."""
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", 3):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 3):
            pyro.sample("z", dist.Bernoulli(torch.sigmoid(x)))

    x = torch.tensor([0.5, -1.0, 2.0])
    stock = pyro.infer.TraceMeanField_ELBO if name == "meanfield" else pyro.infer.Trace_ELBO
    with pyro.validation_enabled(False):
        pyro.set_rng_seed(1)
        expected = stock(max_plate_nesting=1).loss(model, guide, x)
        pyro.set_rng_seed(1)
        assert make_elbo(name).loss(model, guide, x) == expected
        with pytest.raises(ConfigError, match=r"with a weighted KL \(beta=0.5, .* reparameterised sample"):
            make_elbo(name, beta=0.5).loss(model, guide, x)

    def unplated_model(x):  # a batch dimension no plate declares: Pyro's check_site_shape refuses it
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def unplated_guide(x):
        pyro.sample("z", dist.Normal(x, 1.0))

    with pyro.validation_enabled(False):
        assert math.isfinite(make_elbo(name, beta=0.5).loss(unplated_model, unplated_guide, x))
    for options in (dict(beta=0.5), dict()):
        with pyro.validation_enabled(True), pytest.raises(ValueError, match="invalid log_prob shape"):
            make_elbo(name, **options).loss(unplated_model, unplated_guide, x)
