"""The identities of docs/theory.md, checked exactly on the linear-Gaussian VAE (probabilistic PCA), float64.

1. ELBO <= log p(x) (eq. 11), per data point;
2. log p(x) - ELBO = KL(q(z|x) || p(z|x)) (eq. 20) for arbitrary Gaussian q, to 1e-10;
3. ELBO = log p(x) when q is the exact posterior;
4. the IWAE estimate is >= the ELBO on average and approaches log p(x) as k grows;
5. PSIS k-hat < 0.5 when q is the exact posterior, and large for a badly mismatched q.
"""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from pyrovae import LinearGaussianVAE, closed_form_elbo, estimate_elbo, evaluate, fit, load_vae, save_checkpoint
from pyrovae.models.linear_gaussian import LinearEncoder
from pyrovae.train import FitOptions

SHAPES = {"x5-z2": (5, 2), "x12-z4": (12, 4), "x3-z3": (3, 3)}


def random_model(x_dim, z_dim, sigma=0.7, orthogonal=False, encoder="linear"):
    """A linear-Gaussian VAE with a random W (orthogonal columns if asked) and b."""
    vae = LinearGaussianVAE(x_dim, z_dim, sigma=sigma, encoder=encoder)
    with torch.no_grad():
        w = torch.randn(x_dim, z_dim)
        if orthogonal:
            q, _ = torch.linalg.qr(w)
            w = q * torch.linspace(2.0, 0.5, z_dim)  # distinct column norms: a non-isotropic posterior
        vae.decoder.weight.copy_(w)
        vae.decoder.bias.copy_(torch.randn(x_dim))
    return vae


def sample_x(vae, n):
    """Data from the model itself: x = Wz + b + sigma * noise."""
    with torch.no_grad():
        z = torch.randn(n, vae.z_dim)
        return vae.decoder(z) + vae.sigma * torch.randn(n, vae.x_dim)


def random_gaussian_q(n, z_dim, scale=1.0):
    """Arbitrary Gaussians: random means, random full covariances (one per data point)."""
    a = torch.randn(n, z_dim, z_dim) * scale
    return torch.randn(n, z_dim) * 2, a @ a.mT + 0.05 * torch.eye(z_dim)


# -- the closed forms themselves ------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_exact_log_marginal_and_posterior_against_dense_gaussian_algebra(float64, shape):
    vae = random_model(*shape)
    x = sample_x(vae, 6)
    with torch.no_grad():
        dense = MultivariateNormal(vae.bias, vae.marginal_covariance()).log_prob(x)
        torch.testing.assert_close(vae.exact_log_marginal(x), dense, rtol=1e-12, atol=1e-12)
        # conditioning the joint Gaussian of (z, x): mean W^T C^-1 (x - b), cov I - W^T C^-1 W
        w, c = vae.weight, vae.marginal_covariance()
        mean, cov = vae.exact_posterior(x)
        torch.testing.assert_close(mean, torch.linalg.solve(c, (x - vae.bias).mT).mT @ w, rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(cov, torch.eye(shape[1]) - w.mT @ torch.linalg.solve(c, w), rtol=1e-11, atol=1e-12)


# -- identities 1-3, exact -------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_identity_1_elbo_is_below_log_px_for_every_point(float64, shape):
    vae = random_model(*shape)
    x = sample_x(vae, 50)
    with torch.no_grad():
        log_px = vae.exact_log_marginal(x)
        for scale in (0.1, 1.0, 3.0):
            loc, cov = random_gaussian_q(50, shape[1], scale)
            assert (vae.exact_elbo(x, loc, cov).elbo <= log_px).all()
        assert (vae.exact_elbo(x).elbo <= log_px).all()  # the encoder's mean-field q


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_identity_2_gap_equals_kl_to_the_exact_posterior(float64, shape):
    vae = random_model(*shape)
    x = sample_x(vae, 20)
    with torch.no_grad():
        log_px = vae.exact_log_marginal(x)
        loc, cov = random_gaussian_q(20, shape[1])
        for q in ((loc, cov), (loc, cov[0]), (None, None)):  # per-point, shared, the encoder's diagonal q
            gap = log_px - vae.exact_elbo(x, *q).elbo
            kl = vae.kl_to_posterior(x, *q)
            assert (gap - kl).abs().max() <= 1e-10
            assert (kl > 0).all()
        # the KL of eq. 16 is torch's, too
        mean, post_cov = vae.exact_posterior(x)
        expected = kl_divergence(MultivariateNormal(loc, cov), MultivariateNormal(mean, post_cov))
        torch.testing.assert_close(vae.kl_to_posterior(x, loc, cov), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_identity_3_elbo_equals_log_px_at_the_exact_posterior(float64, shape):
    vae = random_model(*shape)
    x = sample_x(vae, 20)
    with torch.no_grad():
        mean, cov = vae.exact_posterior(x)
        assert (vae.exact_elbo(x, mean, cov).elbo - vae.exact_log_marginal(x)).abs().max() <= 1e-10
        assert vae.kl_to_posterior(x, mean, cov).abs().max() <= 1e-10


def test_exact_elbo_of_the_mean_field_q_is_what_closed_form_elbo_estimates(float64):
    """closed_form_elbo (Monte Carlo reconstruction, eq. 14; KL by eq. 18) is unbiased for exact_elbo:
    KL equal to 1e-12, reconstruction within 4 standard errors over 20,000 draws."""
    vae = random_model(6, 3, encoder="mlp")
    x = sample_x(vae, 4)
    with torch.no_grad():
        exact = vae.exact_elbo(x)
        eps = torch.randn(20000, 4, 3)
        estimate = closed_form_elbo(vae, x, eps=eps)
        torch.testing.assert_close(estimate.kl, exact.kl, rtol=1e-12, atol=1e-12)
        loc, scale = vae.encoder(x)
        per_draw = vae.likelihood.log_prob(x, vae.decoder(loc + scale * eps))
        se = per_draw.std(0) / math.sqrt(20000)
        assert ((estimate.reconstruction - exact.reconstruction).abs() < 4 * se).all()


# -- identity 3 again, and 5, through evaluate() and the mean-field guide ---------------------------
def test_identity_3_and_5_with_the_exact_posterior_as_the_encoder(float64):
    """With orthogonal columns of W the exact posterior is diagonal, so the guide can equal it:
    every importance weight is p(x), the ELBO and IWAE estimates equal log p(x) with no Monte Carlo
    error, and the weights have k-hat < 0.5."""
    vae = random_model(8, 3, orthogonal=True)
    vae.set_encoder_to_posterior()
    x = sample_x(vae, 10)
    result = evaluate(vae, x, k=200, seed=0)
    with torch.no_grad():
        log_px = vae.exact_log_marginal(x)
        assert vae.kl_to_posterior(x).abs().max() <= 1e-12
    assert (result.log_px - log_px).abs().max() <= 1e-10
    assert (result.elbo - log_px).abs().max() <= 1e-10
    assert (result.khat < 0.5).all()


def test_identity_5_khat_is_small_for_a_wider_q_and_large_for_a_narrow_shifted_q(float64):
    """q = N(mu_post + shift, (r sigma_post)^2): for r > 1 the weights are bounded (k-hat < 0.5);
    for r = 0.3 and a one-sd shift the weights' tail has Pareto shape >= 1 - r^2 = 0.91."""
    vae = random_model(8, 3, orthogonal=True)
    vae.set_encoder_to_posterior()
    x = sample_x(vae, 20)
    posterior_log_scale = vae.encoder.log_scale.detach().clone()
    with torch.no_grad():
        vae.encoder.log_scale.copy_(posterior_log_scale + math.log(1.5))
    wide = evaluate(vae, x, k=2000, seed=0)
    assert (wide.khat < 0.5).all()
    with torch.no_grad():
        vae.encoder.log_scale.copy_(posterior_log_scale + math.log(0.3))
        vae.encoder.loc.bias.add_(posterior_log_scale.exp())
    narrow = evaluate(vae, x, k=2000, seed=0)
    summary = narrow.summary()
    assert summary["khat_median"] > 0.7 and summary["khat_fraction_above_threshold"] >= 0.75


# -- identity 4 -----------------------------------------------------------------------------------
def test_identity_4_iwae_rises_from_the_elbo_towards_log_px(float64):
    """A mean-field q that is not the posterior but wider than it in every direction (bounded
    weights). Expectations over R independent repeats, tolerances from their standard errors:
    E[IWAE_1] = ELBO (exact, eq. 11), E[IWAE_k] increases with k, stays <= log p(x), and
    IWAE_5000 is within 5 Monte Carlo standard errors of log p(x)."""
    vae = random_model(6, 3)
    x = sample_x(vae, 4)
    with torch.no_grad():
        _, post_cov = vae.exact_posterior(x)
        gain = post_cov @ vae.weight.mT / vae.sigma**2  # the posterior mean is gain @ (x - b) ...
        vae.encoder.loc.weight.copy_(gain)
        vae.encoder.loc.bias.copy_(-gain @ vae.bias + 0.3)  # ... q's is shifted by 0.3
        vae.encoder.log_scale.fill_(0.5 * math.log(1.5 * torch.linalg.eigvalsh(post_cov).max()))
        log_px = vae.exact_log_marginal(x)
        elbo = vae.exact_elbo(x).elbo
    assert (elbo < log_px - 0.05).all(), "q must differ from the posterior for this test to mean anything"

    repeats = {1: 4000, 10: 400, 100: 100}
    means, ses = {}, {}
    for k, r in repeats.items():
        estimates = evaluate(vae, x.repeat(r, 1), k=k, seed=k, psis=False).log_px.reshape(r, 4)
        means[k], ses[k] = estimates.mean(0), estimates.std(0) / math.sqrt(r)
    assert ((means[1] - elbo).abs() < 4 * ses[1]).all()
    assert ((means[10] - means[1]) > 4 * torch.sqrt(ses[1] ** 2 + ses[10] ** 2)).all()
    assert ((means[100] - means[10]) > -4 * torch.sqrt(ses[10] ** 2 + ses[100] ** 2)).all()
    assert (means[100] < log_px + 4 * ses[100]).all()
    big = evaluate(vae, x, k=5000, seed=0)
    assert (big.khat < 0.5).all()
    assert ((big.log_px - log_px).abs() < 5 * big.log_px_se).all()
    assert ((log_px - big.log_px).abs() < 0.1 * (log_px - elbo)).all()


# -- the model plugs into the rest of the library -----------------------------------------------------
def test_set_encoder_to_posterior_needs_a_diagonal_posterior(float64):
    vae = random_model(6, 3)
    with pytest.raises(ValueError, match="off-diagonal entries up to .* give W orthogonal columns"):
        vae.set_encoder_to_posterior()
    with pytest.raises(ValueError, match="needs encoder='linear'"):
        random_model(6, 3, orthogonal=True, encoder="mlp").set_encoder_to_posterior()
    with pytest.raises(ValueError, match="encoder must be one of"):
        LinearGaussianVAE(6, 3, encoder="conv")
    with pytest.raises(ValueError, match=r"cov must have shape \(3, 3\)"):
        vae.exact_elbo(torch.zeros(2, 6), torch.zeros(2, 3), torch.eye(2))


def test_checkpoint_round_trip(float64, tmp_path):
    vae = random_model(6, 2, sigma=0.4)
    save_checkpoint(tmp_path / "checkpoint.pt", vae)
    loaded = load_vae(tmp_path)
    assert type(loaded) is LinearGaussianVAE and isinstance(loaded.encoder, LinearEncoder)
    assert loaded.dtype == torch.float64 and float(loaded.sigma) == 0.4
    x = sample_x(vae, 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded.exact_log_marginal(x), vae.exact_log_marginal(x), rtol=0, atol=0)


def test_fit_trains_it_and_the_pyro_test_elbo_is_the_exact_elbo(float64):
    """fit() (Pyro SVI, TraceMeanField_ELBO) trains the linear-Gaussian VAE; Pyro's ELBO estimate
    on test data (one draw per point) equals the exact ELBO of the trained model within 4 standard
    errors."""
    truth = random_model(6, 2, sigma=0.5)
    train, test = sample_x(truth, 512), sample_x(truth, 256)
    vae = LinearGaussianVAE(6, 2, sigma=0.5)
    history = fit(vae, train, FitOptions(epochs=40, batch_size=64, lr=0.02, seed=0))
    with torch.no_grad():
        before = LinearGaussianVAE(6, 2, sigma=0.5)
        exact_before = before.exact_elbo(test).elbo.mean()
        kl_before = (before.exact_log_marginal(test) - before.exact_elbo(test).elbo).mean()
        exact = vae.exact_elbo(test).elbo
        log_px = vae.exact_log_marginal(test)
        loc, scale = vae.encoder(test)
        draws = vae.likelihood.log_prob(test, vae.decoder(loc + scale * torch.randn(200, *loc.shape)))
    estimate = estimate_elbo(vae, test)
    se = draws.std(0).pow(2).mean().sqrt() / math.sqrt(len(test))
    assert abs(estimate - exact.mean()) < 4 * se
    assert exact.mean() > exact_before + 1.0 and history.last["train_elbo"] > history.epochs[0]["train_elbo"]
    # training pulls q towards the exact posterior: the mean KL(q || p(z|x)) of eq. 20 shrinks (it can
    # reach 0: a linear VAE's optimum has a diagonal posterior, Lucas et al. 2019)
    assert (log_px - exact).mean() < min(0.5, 0.1 * kl_before)
