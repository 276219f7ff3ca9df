import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal

from pyrovae.models.likelihoods import (
    BernoulliLikelihood,
    GaussianLikelihood,
    bernoulli_log_likelihood,
    discretized_logistic_log_likelihood,
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


# -- the discretized logistic of 8-bit pixels (eq. 33) -------------------------------------------
LEVELS = torch.arange(256, dtype=torch.float64) / 255


@pytest.mark.parametrize("loc, scale", [(0.3, 1e-3), (0.3, 0.01), (-2.0, 0.3), (0.5, 5.0), (1.7, 0.05)])
def test_eq23_is_a_probability_over_the_256_levels(float64, loc, scale):
    log_p = discretized_logistic_log_likelihood(LEVELS, torch.tensor(loc), torch.tensor(scale))
    assert bool(torch.isfinite(log_p).all()) and bool((log_p <= 0).all())
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_eq23_equals_the_difference_of_logistic_cdfs(float64):
    # where the naive formula is accurate (no cancellation): sigma(b) - sigma(a), edges to infinity
    loc, scale = torch.tensor(0.42), torch.tensor(0.2)
    lower = torch.where(LEVELS > 0, torch.sigmoid((LEVELS - 0.5 / 255 - loc) / scale), torch.tensor(0.0))
    upper = torch.where(LEVELS < 1, torch.sigmoid((LEVELS + 0.5 / 255 - loc) / scale), torch.tensor(1.0))
    expected = torch.log(upper - lower)
    torch.testing.assert_close(discretized_logistic_log_likelihood(LEVELS, loc, scale), expected, rtol=1e-10, atol=0)


def test_eq23_stays_finite_far_from_the_location(float64):
    # a level 80 scales away: sigma(b) - sigma(a) is 1 - 1 in the naive form, not here; there
    # log P = -a + log(1 - exp(a - b)) up to terms of order exp(-a)
    log_p = discretized_logistic_log_likelihood(torch.tensor([0.9]), torch.tensor(0.1), torch.tensor(0.01))
    a, width = (0.8 - 1 / 510) / 0.01, (2 / 510) / 0.01
    assert log_p.item() == pytest.approx(-a + math.log(-math.expm1(-width)), abs=1e-9)


def test_the_discretized_logistic_module_and_distribution_agree(float64):
    likelihood = make_likelihood("discretized-logistic", 6)
    assert likelihood.params_per_dim == 2 and likelihood.discrete
    x = torch.randint(0, 256, (4, 6)).double() / 255
    output = torch.randn(4, 12)
    distribution = likelihood.distribution(output)
    assert distribution.event_shape == (6,) and distribution.batch_shape == (4,)
    torch.testing.assert_close(likelihood.log_prob(x, output), distribution.log_prob(x))
    loc, raw = output.chunk(2, -1)
    scale = 1e-3 + torch.nn.functional.softplus(raw)
    torch.testing.assert_close(
        likelihood.log_prob(x, output), discretized_logistic_log_likelihood(x, loc, scale).sum(-1)
    )
    torch.testing.assert_close(likelihood.mean(output), loc.clamp(0, 1))


def test_discretized_logistic_draws_have_its_probabilities(float64):
    # 200,000 draws of one pixel: each level's frequency within 5 standard errors of eq. 33
    from pyrovae.models.likelihoods import DiscretizedLogistic

    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.tensor(0.02), torch.tensor(0.01))
    draws = d.sample((200_000,))
    assert bool(((draws * 255 - (draws * 255).round()).abs() < 1e-9).all())
    levels = (draws * 255).round().long()
    frequency = torch.bincount(levels, minlength=256).double() / 200_000
    p = d.log_prob(LEVELS).exp()
    se = (p * (1 - p) / 200_000).sqrt()
    assert bool(((frequency - p).abs() <= 5 * se + 1e-12).all())
    assert p[0].item() > 0.1  # the lowest bin takes the mass below 0


def test_eight_bit_data_are_checked_for_the_discretized_logistic():
    from pyrovae.data import validate_data
    from pyrovae.errors import DataError

    x = torch.randint(0, 256, (3, 4)).float() / 255
    validate_data(x, 4, "discretized-logistic")
    with pytest.raises(DataError, match=r"off the grid k/255.*needs 8-bit pixels scaled to k/255"):
        validate_data(x + 0.001, 4, "discretized-logistic")
    with pytest.raises(DataError, match=r"values in \[2, 2\]; the discretized-logistic likelihood needs 8-bit pixels"):
        validate_data(x * 0 + 2, 4, "discretized-logistic")
    with pytest.raises(ValueError, match="learn_sigma applies to the 'gaussian' likelihood only"):
        make_likelihood("discretized-logistic", 3, learn_sigma=True)
