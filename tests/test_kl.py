import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from pyrovae.models.kl import kl_diag_gaussian_std_normal, kl_diag_gaussians, kl_gaussians

SHAPES = [(1,), (7,), (5, 3), (2, 4, 6)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_eq18_equals_torch_kl(float64, shape):
    loc = torch.randn(shape)
    scale = torch.rand(shape) * 2 + 0.05
    ours = kl_diag_gaussian_std_normal(loc, scale)
    q = Independent(Normal(loc, scale), 1)
    p = Independent(Normal(torch.zeros(shape), torch.ones(shape)), 1)
    assert ours.shape == shape[:-1]
    torch.testing.assert_close(ours, kl_divergence(q, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_eq16_equals_torch_kl(float64, shape):
    loc_q, loc_p = torch.randn(shape), torch.randn(shape)
    scale_q, scale_p = torch.rand(shape) + 0.1, torch.rand(shape) + 0.1
    ours = kl_diag_gaussians(loc_q, scale_q, loc_p, scale_p)
    expected = kl_divergence(Independent(Normal(loc_q, scale_q), 1), Independent(Normal(loc_p, scale_p), 1))
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_eq16_reduces_to_eq18_and_is_zero_for_equal_gaussians(float64):
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.2
    torch.testing.assert_close(
        kl_diag_gaussians(loc, scale, torch.zeros(3), torch.ones(3)), kl_diag_gaussian_std_normal(loc, scale)
    )
    torch.testing.assert_close(kl_diag_gaussians(loc, scale, loc, scale), torch.zeros(4), atol=1e-14, rtol=0)


def test_eq18_agrees_with_monte_carlo_within_4_standard_errors(float64):
    # KL(q||p) = E_q[log q(z) - log p(z)]; 200,000 draws per distribution.
    torch.manual_seed(1)
    loc = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    scale = torch.tensor([[0.3, 1.5, 0.8], [1.0, 0.1, 2.0]])
    q = Independent(Normal(loc, scale), 1)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    z = q.sample((200_000,))
    log_ratio = q.log_prob(z) - p.log_prob(z)
    estimate = log_ratio.mean(0)
    stderr = log_ratio.std(0) / log_ratio.shape[0] ** 0.5
    exact = kl_diag_gaussian_std_normal(loc, scale)
    assert ((estimate - exact).abs() < 4 * stderr).all(), (estimate, exact, stderr)


BATCHES = {"one": ((), ()), "batch-q": ((4,), ()), "batch-both": ((2, 3), (3,))}


@pytest.mark.parametrize("batches", BATCHES.values(), ids=BATCHES.keys())
def test_full_covariance_eq_16_against_torch(float64, batches):
    batch_q, batch_p = batches
    d = 3

    def random_cov(batch):
        a = torch.randn(*batch, d, d)
        return a @ a.mT + 0.1 * torch.eye(d)

    loc_q, cov_q = torch.randn(*batch_q, d), random_cov(batch_q)
    loc_p, cov_p = torch.randn(*batch_p, d), random_cov(batch_p)
    expected = kl_divergence(MultivariateNormal(loc_q, cov_q), MultivariateNormal(loc_p, cov_p))
    torch.testing.assert_close(kl_gaussians(loc_q, cov_q, loc_p, cov_p), expected, rtol=1e-11, atol=1e-12)


def test_full_covariance_eq_16_reduces_to_the_diagonal_form(float64):
    loc_q, loc_p = torch.randn(5, 4), torch.randn(5, 4)
    scale_q, scale_p = torch.rand(5, 4) + 0.1, torch.rand(5, 4) + 0.1
    full = kl_gaussians(loc_q, torch.diag_embed(scale_q**2), loc_p, torch.diag_embed(scale_p**2))
    torch.testing.assert_close(full, kl_diag_gaussians(loc_q, scale_q, loc_p, scale_p), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"cov_q must end in shape \(4, 4\)"):
        kl_gaussians(loc_q, torch.eye(3), loc_p, torch.eye(4))
