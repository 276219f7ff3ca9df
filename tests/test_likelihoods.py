import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from pyrovae.models.likelihoods import (
    BernoulliLikelihood,
    GaussianLikelihood,
    bernoulli_log_likelihood,
    gaussian_log_likelihood,
    make_likelihood,
)


@pytest.mark.parametrize("shape", [(1, 4), (6, 64), (3, 2, 5)], ids=str)
def test_eq13_equals_torch_bernoulli(float64, shape):
    logits = torch.randn(shape) * 4
    x = torch.bernoulli(torch.rand(shape))
    expected = Independent(Bernoulli(logits=logits), 1).log_prob(x)
    torch.testing.assert_close(bernoulli_log_likelihood(x, logits), expected, rtol=1e-12, atol=1e-12)


def test_eq13_is_minus_bce_with_sigmoid_means(float64):
    # The form of eq. 13: sum_k x_k log a_k + (1 - x_k) log(1 - a_k) with a = sigmoid(logits).
    logits = torch.randn(5, 8)
    x = torch.bernoulli(torch.rand(5, 8))
    a = torch.sigmoid(logits)
    seed_form = (x * torch.log(a) + (1 - x) * torch.log(1 - a)).sum(-1)
    torch.testing.assert_close(bernoulli_log_likelihood(x, logits), seed_form, rtol=1e-10, atol=1e-10)


def test_eq13_is_finite_for_saturated_logits(float64):
    logits = torch.tensor([[-800.0, 800.0, 0.0]])
    x = torch.tensor([[1.0, 0.0, 1.0]])
    value = bernoulli_log_likelihood(x, logits)
    assert torch.isfinite(value).all()
    torch.testing.assert_close(value, torch.tensor([-800.0 - 800.0 - math.log(2)]))


@pytest.mark.parametrize("per_coordinate", [False, True], ids=["scalar-sigma", "vector-sigma"])
def test_eq14_equals_torch_normal(float64, per_coordinate):
    x, loc = torch.randn(7, 10), torch.randn(7, 10)
    scale = torch.rand(10) + 0.1 if per_coordinate else torch.tensor(0.37)
    expected = Independent(Normal(loc, scale.expand(7, 10)), 1).log_prob(x)
    torch.testing.assert_close(gaussian_log_likelihood(x, loc, scale), expected, rtol=1e-12, atol=1e-12)


def test_eq14_seed_form_with_mse(float64):
    # -d/2 log(2 pi sigma^2) - ||x - mu||^2 / (2 sigma^2)
    x, loc, sigma = torch.randn(3, 6), torch.randn(3, 6), 0.8
    seed_form = -3.0 * math.log(2 * math.pi * sigma**2) - ((x - loc) ** 2).sum(-1) / (2 * sigma**2)
    torch.testing.assert_close(gaussian_log_likelihood(x, loc, torch.tensor(sigma)), seed_form)


def test_likelihood_modules_match_their_distributions(float64):
    x = torch.bernoulli(torch.rand(4, 6))
    out = torch.randn(4, 6)
    for lik in [BernoulliLikelihood(), GaussianLikelihood(6, sigma=0.5), GaussianLikelihood(6, 0.5, learn_sigma=True)]:
        torch.testing.assert_close(lik.log_prob(x, out), lik.distribution(out).log_prob(x))
        assert lik.distribution(out).event_shape == (6,)
        assert lik.distribution(out).batch_shape == (4,)


def test_learned_sigma_starts_at_sigma_and_stays_positive(float64):
    lik = GaussianLikelihood(5, sigma=0.7, learn_sigma=True)
    torch.testing.assert_close(lik.sigma, torch.full((5,), 0.7))
    with torch.no_grad():
        lik.sigma_unconstrained.fill_(-1e4)
    assert (lik.sigma > 0).all()
    assert (lik.sigma >= lik.min_sigma).all()
    assert [name for name, _ in lik.named_parameters()] == ["sigma_unconstrained"]
    assert list(GaussianLikelihood(5, sigma=0.7).parameters()) == []


def test_likelihood_bad_input():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        make_likelihood("poisson", 3)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GaussianLikelihood(3, sigma=0.0)
    with pytest.raises(ValueError, match="gaussian"):
        make_likelihood("bernoulli", 3, learn_sigma=True)


def test_the_base_classes_name_what_a_subclass_must_define():
    from pyrovae.models.likelihoods import Likelihood
    from pyrovae.models.priors import Prior

    # the names, not the interpreter's sentence around them (Python 3.12 reworded and quotes them)
    for make, missing in ((Likelihood, {"distribution", "log_prob", "mean"}), (lambda: Prior(2), {"forward"})):
        with pytest.raises(TypeError) as error:
            make()
        assert all(name in str(error.value) for name in missing), str(error.value)
    assert Likelihood.__abstractmethods__ == {"distribution", "log_prob", "mean"}
    assert Prior.__abstractmethods__ == {"forward"}
