"""The equivalent forms of the ELBO (eq. 19-21) and the split of its KL (eq. 32) on the
linear-Gaussian VAE with p_D uniform over N points: each side computed on its own, in float64."""

import math

import pyro
import pytest
import torch

from pyrovae import LinearGaussianVAE
from pyrovae.errors import ConfigError
from pyrovae.evaluation.identities import elbo_forms


def model_and_data(seed, n=8, x_dim=4, z_dim=2, encoder_gain=0.5, log_scale=-0.5):
    """A random model and a linear encoder that is not its posterior (every term is then non-zero)."""
    pyro.set_rng_seed(seed)
    vae = LinearGaussianVAE(x_dim, z_dim, sigma=0.7).double()
    with torch.no_grad():
        vae.decoder.weight.normal_()
        vae.decoder.bias.normal_()
        vae.encoder.loc.weight.normal_(0.0, encoder_gain)
        vae.encoder.log_scale.fill_(log_scale)
    return vae, torch.randn(n, x_dim, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eq_19_and_20_hold_to_rounding(float64, seed):
    vae, x = model_and_data(seed)
    forms = elbo_forms(vae, x, draws=1000, seed=seed)
    assert forms.entropy_data == pytest.approx(math.log(8))
    assert abs(forms.elbo - forms.eq19) < 1e-10, (forms.elbo, forms.eq19)
    assert abs(forms.elbo - forms.eq20) < 1e-10, (forms.elbo, forms.eq20)
    # the pieces are far from trivial: the KLs are large and of both signs of interest
    assert forms.kl_joint > 1 and forms.kl_posterior > 0.1
    assert forms.elbo < -forms.kl_data_model - forms.entropy_data  # ELBO < E log p(x) (eq. 11, averaged)


@pytest.mark.parametrize("seed", [0, 1])
def test_eq_21_holds_within_its_monte_carlo_error(float64, seed):
    vae, x = model_and_data(seed)
    forms = elbo_forms(vae, x, draws=100_000, seed=seed)
    assert forms.eq21_se < 0.1
    assert abs(forms.elbo - forms.eq21) < 4 * forms.eq21_se, (forms.elbo, forms.eq21, forms.eq21_se)
    assert forms.kl_aggregate > 0 and forms.conditional_kl > 1  # both terms of eq. 21 matter here


@pytest.mark.parametrize("seed", [0, 1])
def test_the_kl_splits_into_mutual_information_and_the_aggregate_kl(float64, seed):
    vae, x = model_and_data(seed)
    forms = elbo_forms(vae, x, draws=100_000, seed=seed)
    split = forms.mutual_information + forms.kl_aggregate
    assert abs(forms.kl_prior - split) < 4 * forms.kl_split_se, (forms.kl_prior, split, forms.kl_split_se)
    assert 0 < forms.mutual_information < math.log(8)  # I(x; z) <= H(p_D) = log N


def test_an_encoder_that_ignores_x_carries_no_information(float64):
    vae, x = model_and_data(0, encoder_gain=0.0)
    forms = elbo_forms(vae, x, draws=20_000)
    assert abs(forms.mutual_information) < 1e-12  # q(z|x_n) = q(z) for every n: each draw contributes 0
    assert abs(forms.kl_aggregate - forms.kl_prior) < 4 * forms.kl_split_se


def test_an_encoder_that_separates_the_points_carries_log_n_nats(float64):
    vae, x = model_and_data(0, encoder_gain=5.0, log_scale=-6.0)
    forms = elbo_forms(vae, x, draws=20_000)
    assert forms.mutual_information == pytest.approx(math.log(8), abs=1e-6)


def test_elbo_forms_refuses_what_it_cannot_compute(float64):
    vae, x = model_and_data(0)
    with pytest.raises(ConfigError, match=r"x must have shape \(N >= 2, 4\)"):
        elbo_forms(vae, x[:1])
    mlp = LinearGaussianVAE(4, 2, encoder="mlp").double()
    with pytest.raises(ConfigError, match="needs a LinearGaussianVAE with encoder='linear'"):
        elbo_forms(mlp, x)
