"""The KL term of one latent site: the closed form (eq. 18) where it exists, log q - log p at the draw otherwise."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from pyrovae import VAE
from pyrovae.infer.kl_term import coordinate_kl, site_kl
from pyrovae.models.kl import kl_diag_gaussian_std_normal


def sites(vae, x, mask=None):
    """(guide site, model site) of ``z`` on one draw, under ``poutine.mask(mask)`` where given."""
    guide, model = vae.guide, vae.model
    if mask is not None:
        guide, model = poutine.mask(guide, mask=mask), poutine.mask(model, mask=mask)
    guide_trace = poutine.trace(guide).get_trace(x, num_data=20)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, num_data=20)
    return guide_trace.nodes["z"], model_trace.nodes["z"]


def test_the_analytic_kl_is_eq_18_and_the_sampled_one_log_q_minus_log_p(float64):
    vae = VAE(6, z_dim=3, hidden_dims=(5,))
    x = torch.bernoulli(torch.rand(4, 6))
    guide_site, model_site = sites(vae, x)
    loc, scale = vae.encoder(x)
    analytic = site_kl(guide_site, model_site)
    torch.testing.assert_close(analytic.values(), kl_diag_gaussian_std_normal(loc, scale), rtol=1e-12, atol=1e-12)
    z = guide_site["value"]
    sampled = site_kl(guide_site, model_site, analytic=False)
    expected = dist.Normal(loc, scale).log_prob(z).sum(-1) - dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(sampled.values(), expected, rtol=1e-12, atol=1e-12)
    # scaled by N/B = 5 and subtracted from an ELBO
    assert analytic.subtract_from(0.0).item() == pytest.approx(-5 * analytic.values().sum().item(), rel=1e-12)
    assert sampled.subtract_from(0.0).item() == pytest.approx(-5 * expected.sum().item(), rel=1e-12)
    # per coordinate, the same totals
    torch.testing.assert_close(
        coordinate_kl("z", guide_site, model_site).sum(-1), analytic.values(), rtol=1e-12, atol=0
    )
    torch.testing.assert_close(
        coordinate_kl("z", guide_site, model_site, analytic=False).sum(-1), expected, rtol=1e-12, atol=1e-12
    )


def test_a_prior_without_a_closed_form_gets_the_sampled_kl(float64):
    vae = VAE(6, z_dim=2, hidden_dims=(5,), prior="mog")
    guide_site, model_site = sites(vae, torch.bernoulli(torch.rand(3, 6)))
    kl = site_kl(guide_site, model_site)
    assert kl.analytic is None
    torch.testing.assert_close(kl.values(), site_kl(guide_site, model_site, analytic=False).values(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="--free-bits needs guide and prior to be products over the coordinates"):
        coordinate_kl("z", guide_site, model_site)


def test_masked_rows_have_no_kl(float64):
    vae = VAE(6, z_dim=2, hidden_dims=(5,))
    mask = torch.tensor([True, False, True])
    pyro.set_rng_seed(1)
    guide_site, model_site = sites(vae, torch.bernoulli(torch.rand(3, 6)), mask)
    for analytic in (True, False):
        assert site_kl(guide_site, model_site, analytic).values()[1] == 0
        assert not coordinate_kl("z", guide_site, model_site, analytic)[1].any()
