"""The two-level VAE (eq. 34): its Pyro program against the hand-written ELBO, per-site KL modes,
the engines, evaluation and checkpoints."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyrovae import closed_form_elbo, evaluate, fit, load_dataset, make_elbo
from pyrovae.errors import ConfigError
from pyrovae.infer import Objective, kl_modes
from pyrovae.models import VAE, HierarchicalVAE, make_vae
from pyrovae.train import FitOptions, load_vae, save_checkpoint
from pyrovae.train.engines import CompiledEngine, make_engine

from .test_elbo import assert_same_loss_and_gradients

ARCHS = {"mlp": dict(arch="mlp"), "conv": dict(arch="conv", channels=(2, 3), image_shape=(3, 4))}
LIKELIHOODS = {
    "bernoulli": dict(likelihood="bernoulli"),
    "gaussian-learned-sigma": dict(likelihood="gaussian", sigma=0.6, learn_sigma=True),
}


def small(prior="normal", **options):
    return HierarchicalVAE(12, z_dim=3, hidden_dims=(9, 7), activation="tanh", prior=prior, **options)


def data_for(vae, n=5):
    x = torch.rand(n, vae.x_dim)
    return torch.bernoulli(x) if vae.likelihood.name == "bernoulli" else x


def replayed(vae, x, num_data=None):
    """Model and guide replayed on one guide draw, and the noise of each site that produced it."""
    trace = poutine.trace(vae.guide).get_trace(x, num_data=num_data)
    z2, z1 = trace.nodes["z2"]["value"], trace.nodes["z1"]["value"]
    h = vae.encoder.features(x)
    loc2, scale2 = vae.encoder.top_params(h)
    loc1, scale1 = vae.encoder.bottom_params(h, z2)
    eps = {"z2": ((z2 - loc2) / scale2).detach(), "z1": ((z1 - loc1) / scale1).detach()}
    return poutine.replay(vae.model, trace=trace), poutine.replay(vae.guide, trace=trace), eps


def grads(vae):
    return torch.cat([p.grad.flatten() for p in vae.parameters()])


def test_the_program_has_two_latent_sites_in_the_same_order():
    vae = small()
    x = data_for(vae)
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)

    def latent(trace):
        return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n != "data"]

    assert latent(model_trace) == latent(guide_trace) == ["z2", "z1"]
    assert model_trace.nodes["z1"]["fn"].batch_shape == (5,) and model_trace.nodes["z1"]["fn"].event_shape == (3,)
    # p(z1|z2) is the conditional network's Gaussian at the drawn z2
    loc, scale = vae.conditional_prior(guide_trace.nodes["z2"]["value"])
    torch.testing.assert_close(model_trace.nodes["z1"]["fn"].base_dist.loc, loc)
    torch.testing.assert_close(model_trace.nodes["z1"]["fn"].base_dist.scale, scale)


@pytest.mark.parametrize("num_data", [None, 40], ids=["unscaled", "minibatch-of-40"])
@pytest.mark.parametrize("prior", ["normal", "gaussian"])
@pytest.mark.parametrize("options", LIKELIHOODS.values(), ids=LIKELIHOODS.keys())
@pytest.mark.parametrize("arch", ARCHS.values(), ids=ARCHS.keys())
def test_closed_form_equals_the_mean_field_loss_and_gradients(float64, arch, options, prior, num_data):
    vae = small(prior, **arch, **options)
    x = data_for(vae)
    model, guide, eps = replayed(vae, x, num_data)
    loss = make_elbo("meanfield").differentiable_loss(model, guide, x, num_data=num_data)
    terms = closed_form_elbo(vae, x, eps=eps)
    scale = (num_data or 5) / 5
    assert terms.elbo.shape == terms.kl.shape == (5,)
    assert -loss.item() == pytest.approx(scale * terms.elbo.sum().item(), rel=1e-10)
    loss.backward()
    pyro_grads = grads(vae)
    vae.zero_grad()
    (-scale * terms.elbo.sum()).backward()
    torch.testing.assert_close(grads(vae), pyro_grads, rtol=1e-10, atol=1e-12)


def test_closed_form_with_draws_averages_over_them(float64):
    vae = small()
    x = data_for(vae)
    eps = {"z2": torch.randn(4, 5, 3), "z1": torch.randn(4, 5, 3)}
    together = closed_form_elbo(vae, x, eps=eps)
    apart = [closed_form_elbo(vae, x, eps={k: v[s] for k, v in eps.items()}) for s in range(4)]
    torch.testing.assert_close(together.elbo, torch.stack([t.elbo for t in apart]).mean(0))
    # and given z, it uses them as they are
    h = vae.encoder.features(x)
    loc2, scale2 = vae.encoder.top_params(h)
    z2 = loc2 + scale2 * eps["z2"][0]
    loc1, scale1 = vae.encoder.bottom_params(h, z2)
    z = {"z2": z2, "z1": loc1 + scale1 * eps["z1"][0]}
    torch.testing.assert_close(closed_form_elbo(vae, x, z=z).elbo, apart[0].elbo)


def test_closed_form_refuses_what_it_cannot_do(float64):
    vae = small()
    x = data_for(vae)
    with pytest.raises(ConfigError, match="must be a dict with the keys 'z2' and 'z1'"):
        closed_form_elbo(vae, x, eps=torch.randn(5, 3))
    with pytest.raises(ConfigError, match="top-level prior with a closed-form KL; VampPrior has none"):
        closed_form_elbo(small("vamp"), x)


def hand_written_log_weight(vae, x, eps):
    """log p(x|z1) + log p(z2) + log p(z1|z2) - log q(z2|x) - log q(z1|x, z2), densities by hand."""

    def log_normal(value, loc, scale):
        return (-0.5 * math.log(2 * math.pi) - torch.log(scale) - 0.5 * ((value - loc) / scale) ** 2).sum(-1)

    h = vae.encoder.features(x)
    loc2, scale2 = vae.encoder.top_params(h)
    z2 = loc2 + scale2 * eps["z2"]
    loc1, scale1 = vae.encoder.bottom_params(h, z2)
    z1 = loc1 + scale1 * eps["z1"]
    prior_loc, prior_scale = vae.conditional_prior(z2)
    log_p = log_normal(z2, 0.0 * z2, 1.0 + 0.0 * z2) + log_normal(z1, prior_loc, prior_scale)
    log_q = log_normal(z2, loc2, scale2) + log_normal(z1, loc1, scale1)
    return vae.likelihood.log_prob(x, vae.decoder(z1)) + log_p - log_q


def test_trace_elbo_on_a_replayed_trace_equals_the_hand_written_log_ratio(float64):
    vae = small()
    x = data_for(vae)
    model, guide, eps = replayed(vae, x, num_data=10)
    loss = make_elbo("trace").differentiable_loss(model, guide, x, num_data=10)
    assert_same_loss_and_gradients(vae, loss, -2 * hand_written_log_weight(vae, x, eps).sum())


@pytest.mark.parametrize(
    "prior, z2", [("normal", "analytic"), ("gaussian", "analytic"), ("mog", "monte-carlo"), ("vamp", "monte-carlo")]
)
def test_kl_modes_are_reported_per_site(prior, z2):
    vae = small(prior)
    assert kl_modes(vae, "meanfield") == {"z2": z2, "z1": "analytic"}
    assert kl_modes(vae, "trace") == {"z2": "monte-carlo", "z1": "monte-carlo"}
    assert kl_modes(VAE(12, z_dim=3, prior=prior), "meanfield") == {"z": z2}


class _OwnNormalPrior(torch.nn.Module):
    """A user's prior that is not a pyrovae Prior: N(0, I) with torch's registered KL against q."""

    def forward(self, batch_shape=()):
        zeros = torch.zeros(3)
        return dist.Normal(zeros, torch.ones_like(zeros)).expand((*batch_shape, 3)).to_event(1)


class _OwnStudentPrior(_OwnNormalPrior):
    """No registered KL against a diagonal Gaussian: Pyro estimates it by Monte Carlo."""

    def forward(self, batch_shape=()):
        zeros = torch.zeros(3)
        return dist.StudentT(3.0, zeros, torch.ones_like(zeros)).expand((*batch_shape, 3)).to_event(1)


@pytest.mark.parametrize("prior, z2", [(_OwnNormalPrior, "analytic"), (_OwnStudentPrior, "monte-carlo")])
def test_a_users_own_top_prior_is_reported_as_pyro_treats_it(prior, z2):
    vae = small(prior())
    assert kl_modes(vae, "meanfield") == {"z2": z2, "z1": "analytic"}
    assert kl_modes(VAE(12, z_dim=3, prior=prior()), "meanfield") == {"z": z2}  # as for one level


def test_the_vamp_prior_is_a_mixture_of_the_top_level_guide():
    vae = small("vamp", prior_components=4)
    mixture = vae.prior((1,))
    loc, scale = vae.encoder.top_params(vae.encoder.features(vae.prior.pseudo_inputs))
    torch.testing.assert_close(mixture.locs, loc)
    torch.testing.assert_close(mixture.scales, scale)


@pytest.mark.parametrize("name", ["meanfield", "trace"])
@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_engines_give_the_eager_numbers_on_the_same_draws(float64, name, prior):
    vae = small(prior)
    x = data_for(vae)
    objective = Objective(vae.model, vae.guide, make_elbo(name), num_data=20)
    results = {}
    with pyro.validation_enabled(False):
        for engine in ("eager", "compiled", "jit"):
            module = (
                CompiledEngine(backend=None).wrap(objective)
                if engine == "compiled"
                else make_engine(engine).wrap(objective)
            )
            steps = []
            for seed in (0, 1, 2):  # the first call of a shape runs eagerly, later ones the recorded graph
                pyro.set_rng_seed(seed)
                loss = module(x)
                loss.backward()
                steps.append((loss.item(), grads(vae)))
                vae.zero_grad()
            results[engine] = steps
    for engine in ("compiled", "jit"):
        for (a, ga), (b, gb) in zip(results[engine], results["eager"], strict=True):
            assert a == pytest.approx(b, rel=1e-10)
            torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_inductor_compiled_fit_trains_as_the_eager_one():
    data = load_dataset("digits", binarization="static")
    runs = {}
    for engine in ("eager", "compiled"):
        pyro.set_rng_seed(3)  # the same initial parameters and pseudo-inputs
        vae = HierarchicalVAE(64, z_dim=2, hidden_dims=(16,), prior="vamp", prior_components=3)
        history = fit(vae, data, FitOptions(epochs=1, batch_size=512, seed=3, engine=engine))
        runs[engine] = (history, torch.cat([p.detach().flatten() for p in vae.parameters()]))
    (eager, p_eager), (compiled, p_compiled) = runs["eager"], runs["compiled"]
    assert eager.kl_mode == compiled.kl_mode == {"z2": "monte-carlo", "z1": "analytic"}
    assert compiled.step_elbos == pytest.approx(eager.step_elbos, rel=1e-4)
    torch.testing.assert_close(p_compiled, p_eager, rtol=1e-3, atol=1e-5)


def test_evaluate_weighs_the_draws_as_the_hand_written_log_ratio(float64):
    # evaluate draws eps2 then eps1 per chunk from its generator: redraw them and weigh by hand
    vae = small()
    x = data_for(vae)
    k = 6
    result = evaluate(vae, x, k=k, chunk_size=k, seed=11, psis=False, keep_draws=5)
    generator = torch.Generator().manual_seed(11)
    eps = {"z2": torch.randn((k, 5, 3), generator=generator), "z1": torch.randn((k, 5, 3), generator=generator)}
    log_w = hand_written_log_weight(vae, x, eps)
    torch.testing.assert_close(result.log_px, torch.logsumexp(log_w, 0) - math.log(k))
    torch.testing.assert_close(result.elbo, log_w.mean(0))
    torch.testing.assert_close(result.draws.log_weight, log_w)
    assert result.draws.z.shape == (k, 5, 6)  # z2 and z1 side by side
    assert result.kl_analytic is None and result.z_dim == 6
    # active units: z2 by the guide's mean, z1 by the mean of its guide mean over the k draws of z2
    h = vae.encoder.features(x)
    loc2, scale2 = vae.encoder.top_params(h)
    loc1, _ = vae.encoder.bottom_params(h, loc2 + scale2 * eps["z2"])
    torch.testing.assert_close(result.active_by_site["z2"].variance, loc2.detach().var(0, unbiased=False))
    torch.testing.assert_close(result.active_by_site["z1"].variance, loc1.mean(0).detach().var(0, unbiased=False))
    summary = result.summary()
    assert summary["active_units_by_site"] == {s: result.active_by_site[s].count for s in ("z2", "z1")}
    assert summary["active_units"] == sum(summary["active_units_by_site"].values())
    assert "z2: " in result.report() and summary["bits_per_dim"] == pytest.approx(-summary["log_px"] / 12 / math.log(2))


def test_evaluate_chunks_give_the_same_estimate_whatever_their_size(float64):
    vae = small("vamp")
    x = data_for(vae, n=7)
    whole = evaluate(vae, x, k=40, chunk_size=40, batch_size=7, seed=0)
    pieces = evaluate(vae, x, k=40, chunk_size=40, batch_size=3, seed=0)
    # batches of 3 draw in another order: the same estimator, other draws; both bound the ELBO
    assert bool((whole.log_px >= whole.elbo).all()) and bool((pieces.log_px >= pieces.elbo).all())
    assert whole.khat is not None and whole.khat.shape == (7,)


def test_sample_reconstruct_and_the_checkpoint(tmp_path, float64):
    vae = small("vamp", **ARCHS["conv"])
    assert vae.sample(4).shape == (4, 12) and vae.reconstruct(data_for(vae)).shape == (5, 12)
    save_checkpoint(tmp_path / "c.pt", vae)
    loaded = load_vae(tmp_path / "c.pt")
    assert type(loaded) is HierarchicalVAE and loaded.hparams() == vae.hparams() and loaded.kind == "hierarchical"
    x = data_for(vae)
    eps = {"z2": torch.randn(5, 3), "z1": torch.randn(5, 3)}
    torch.testing.assert_close(hand_written_log_weight(loaded, x, eps), hand_written_log_weight(vae, x, eps))
    torch.testing.assert_close(loaded.reconstruct(x), vae.reconstruct(x))
    assert isinstance(make_vae(12, latents=1), VAE) and not isinstance(make_vae(12, latents=1), HierarchicalVAE)
    with pytest.raises(ConfigError, match=r"latents \(--latents\) must be one of 1, 2, got 3"):
        make_vae(12, latents=3)


def test_the_top_level_prior_samples_feed_the_conditional():
    vae = small("normal")
    pyro.set_rng_seed(5)
    z2 = vae.prior((3,)).sample()
    z1 = vae.conditional(z2).sample()
    pyro.set_rng_seed(5)
    torch.testing.assert_close(vae.sample(3), torch.sigmoid(vae.decoder(z1)))
    assert isinstance(vae.conditional(z2), dist.Independent)
