"""The model protocol (pyrovae.models.base): the built-in models' hand-written log weights, KL modes
and activation sizes against the defaults that read the Pyro program or closed forms; the registry."""

import pyro
import pytest
import torch
from pyro import poutine

from pyrovae import evaluate
from pyrovae.memory import fit_memory
from pyrovae.models import MODELS, VAE, HierarchicalVAE, LatentVariableModel, LinearGaussianVAE
from pyrovae.models.class_path import class_path

from .test_linear_gaussian import random_model, sample_x

#: small models of every built-in kind, prior and architecture
BUILT_IN = {
    "vae-normal": lambda: VAE(12, z_dim=3, hidden_dims=(7,)),
    "vae-gaussian": lambda: VAE(12, z_dim=3, hidden_dims=(7,), prior="gaussian", likelihood="gaussian"),
    "vae-mog-conv": lambda: VAE(
        12, z_dim=2, hidden_dims=(5,), prior="mog", prior_components=3, arch="conv", channels=(2, 3), image_shape=(3, 4)
    ),
    "vae-vamp": lambda: VAE(12, z_dim=3, hidden_dims=(7,), prior="vamp", prior_components=4),
    "vae-flow": lambda: VAE(12, z_dim=3, hidden_dims=(7,), prior="flow"),
    "hierarchical-vamp": lambda: HierarchicalVAE(12, z_dim=2, hidden_dims=(6,), prior="vamp", prior_components=3),
    "hierarchical-normal": lambda: HierarchicalVAE(12, z_dim=2, hidden_dims=(6,)),
    "linear-gaussian": lambda: LinearGaussianVAE(12, 3),
}


def binary_rows(n, x_dim, seed=0):
    return (torch.rand(n, x_dim, generator=torch.Generator().manual_seed(seed)) > 0.5).double()


def pyro_log_weights(model, x, draws):
    """``(log p(x, z) - log q(z|x), log p(x|z))`` per draw and point by Pyro's traces at the given
    draws (per site, shape ``(k, B, dim)``): guide and model each conditioned on them."""
    k = next(iter(draws.values())).shape[0]
    with pyro.plate("particles", k, dim=-2):
        guide = poutine.trace(poutine.condition(model.guide, data=draws)).get_trace(x)
        trace = poutine.trace(poutine.condition(model.model, data=draws)).get_trace(x)
    total = sum(site["fn"].log_prob(site["value"]) for site in trace.nodes.values() if site["type"] == "sample")
    total = total - sum(site["fn"].log_prob(site["value"]) for site in guide.nodes.values() if site["type"] == "sample")
    return total, trace.nodes["x"]["fn"].log_prob(x)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_hand_written_log_weights_are_the_pyro_programs(name, float64):
    """The hand-written weights of each built-in model equal log p(x, z) - log q(z|x) that Pyro's traces
    of its model and guide give at the same draws, to float64 rounding."""
    vae = BUILT_IN[name]()
    x = binary_rows(5, 12) if vae.likelihood.name != "gaussian" else torch.randn(5, 12)
    weights = vae.log_weights(x, 4, torch.Generator().manual_seed(1))
    assert weights.log_weight.shape == weights.log_lik.shape == (4, 5)
    draws = dict(zip(vae.latent_sites, weights.z.split(vae.z_dim, dim=-1), strict=True))
    with vae.without_param_sites():
        expected, log_lik = pyro_log_weights(vae, x, draws)
    torch.testing.assert_close(weights.log_weight, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(weights.log_lik, log_lik.expand(4, 5), rtol=0, atol=1e-10)


def test_the_default_log_weights_are_exact_where_the_guide_is_the_posterior(float64):
    """Probabilistic PCA with the exact posterior as its guide: every weight the default (traced) log
    weights give is p(x), so evaluate's IWAE and ELBO equal the closed-form log p(x) (Tipping and
    Bishop) with no Monte Carlo error; a seed repeats them and leaves the global RNG alone."""

    class Traced(LinearGaussianVAE):
        log_weights = LatentVariableModel.log_weights

    torch.manual_seed(0)
    vae = random_model(8, 3, orthogonal=True)
    traced = Traced(8, 3, sigma=0.7)
    traced.load_state_dict(vae.state_dict())
    traced.set_encoder_to_posterior()
    x = sample_x(traced, 10)
    state = torch.get_rng_state()
    result = evaluate(traced, x, k=50, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.no_grad():
        log_px = traced.exact_log_marginal(x)
    assert (result.log_px - log_px).abs().max() <= 1e-10
    assert (result.elbo - log_px).abs().max() <= 1e-10
    assert torch.equal(evaluate(traced, x, k=50, seed=3).log_px, result.log_px)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_meanfield_kl_modes_are_what_the_pyro_program_says(name):
    """Each model's own KL modes equal the default's, which asks torch's registry at every site of
    the traced guide and model, as Pyro's TraceMeanField_ELBO does."""
    vae = BUILT_IN[name]()
    assert vae.meanfield_kl_modes() == LatentVariableModel.meanfield_kl_modes(vae)


def test_activation_sizes_and_the_memory_they_imply():
    """Per point x + 2h + 2z, per draw 3z + 2h + 3x + 2Kz (h: hidden widths, plus twice the conv maps);
    the step holds (B + K) points and S B draws twice, the test pass B_test points and S_test draws."""
    mlp = VAE(64, z_dim=3, hidden_dims=(16, 8), prior="mog", prior_components=5)
    sizes = mlp.activation_sizes()
    assert sizes == (64 + 2 * 24 + 2 * 3, 9 + 2 * 24 + 3 * 64 + 2 * 5 * 3, 64, 5)
    need = fit_memory(mlp, itemsize=4, rows=10, particles=2, test_rows=7, eval_particles=3)
    count = sum(p.numel() for p in mlp.parameters())
    assert need == (4 * count * 4, 2 * ((10 + 5) * sizes.per_point + 2 * 10 * sizes.per_draw) * 4,
                    7 * (sizes.per_point + 3 * sizes.per_draw) * 4, count, 5)  # fmt: skip
    # 8x8 images, stride-2 maps of 2 x 4 x 4 and 3 x 2 x 2, and the decoder's 2 x 8 x 8 at full size
    conv = HierarchicalVAE(64, z_dim=2, hidden_dims=(8,), arch="conv", channels=(2, 3), image_shape=(8, 8))
    h = 8 + 2 * (32 + 12 + 128)
    assert conv.activation_sizes() == (64 + 2 * h + 2 * 4, 3 * 4 + 2 * h + 3 * 64, 128, 0)


def test_initialize_from_data_moves_the_rows_to_the_model():
    vae = VAE(12, z_dim=2, hidden_dims=(5,), prior="vamp", prior_components=3).double()
    x = binary_rows(20, 12).float()
    vae.initialize_from_data(x)
    rows = {tuple(row.tolist()) for row in x.double()}
    assert vae.prior.pseudo_inputs.dtype == torch.float64
    assert all(tuple(row.tolist()) in rows for row in vae.prior.pseudo_inputs)
    VAE(12, z_dim=2).initialize_from_data(x)  # nothing to set: no error


def test_the_registry_and_the_kinds():
    assert MODELS == {"vae": VAE, "hierarchical": HierarchicalVAE, "linear-gaussian": LinearGaussianVAE}
    assert all(cls.kind == kind for kind, cls in MODELS.items())

    class MyVAE(VAE):  # a subclass of a built-in model is not that model
        pass

    assert MyVAE.kind == class_path(MyVAE) and MyVAE.kind.endswith(":test_the_registry_and_the_kinds.<locals>.MyVAE")


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_hparams_are_plain_and_rebuild_the_model(name):
    vae = BUILT_IN[name]()
    hparams = vae.hparams()
    rebuilt = type(vae).from_hparams(hparams)
    assert rebuilt.hparams() == hparams and "model" not in hparams
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in vae.state_dict().items()}
    hparams["x_dim"] = -1  # a copy: the model's own record is untouched
    assert vae.hparams()["x_dim"] == 12


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_protocols_pictures_from_the_pyro_program_equal_the_vaes_own(likelihood):
    """sample, reconstruct and posterior_mean, computed from the Pyro model and guide alone (the
    defaults a model of yours gets), equal the VAE's hand-written ones on the same draws."""
    vae = VAE(12, z_dim=3, hidden_dims=(8,), likelihood=likelihood)
    x = torch.rand(5, 12)
    assert torch.allclose(LatentVariableModel.reconstruct(vae, x), vae.reconstruct(x))
    assert torch.allclose(LatentVariableModel.posterior_mean(vae, x), vae.posterior_mean(x))
    pyro.set_rng_seed(1)
    generic = LatentVariableModel.sample(vae, 4)
    pyro.set_rng_seed(1)
    assert generic.shape == (4, 12) and torch.allclose(generic, vae.sample(4))
