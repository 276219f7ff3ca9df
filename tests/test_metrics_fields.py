"""The epoch record's fields beyond the ELBOs: the held-out ELBO's reconstruction and KL terms (on
the same draws as the ELBO), the KL weight, the learning rate and the gradient norm."""

import math

import pyro
import pytest
import torch

from pyrovae import VAE, closed_form_elbo, estimate_elbo, fit, load_dataset
from pyrovae.infer.elbo_terms import estimate_elbo_terms
from pyrovae.models.hierarchical import make_vae
from pyrovae.models.kl import kl_diag_gaussian_std_normal
from pyrovae.train import FitOptions
from pyrovae.train.schedule import learning_rate
from pyrovae.train.step import GuardedStep, gradient_norm

PRIORS = ["normal", "gaussian", "mog", "vamp", "flow"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "dynamic")


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("prior", PRIORS)
def test_the_terms_pass_gives_estimate_elbo_bit_for_bit(prior, particles):
    vae = VAE(x_dim=12, z_dim=4, hidden_dims=(9,), prior=prior)
    x = torch.bernoulli(torch.full((50, 12), 0.4))
    torch.manual_seed(5)
    reference = estimate_elbo(vae, x, particles, batch_size=16)
    torch.manual_seed(5)
    terms = estimate_elbo_terms(vae, x, particles, batch_size=16)
    assert terms.elbo == reference  # the same draws and the same arithmetic as the test ELBO
    assert terms.kl == pytest.approx(sum(terms.kl_sites.values()), rel=1e-12)
    # float32 terms: their difference is the ELBO to float32's rounding of the chunk sums
    assert terms.reconstruction - terms.kl == pytest.approx(terms.elbo, abs=1e-5 * abs(terms.elbo))
    expected = "analytic" if prior in ("normal", "gaussian") else "monte-carlo"
    assert terms.kl_mode == {"z": expected}
    assert terms.kl > 0 or expected == "monte-carlo"


def test_two_level_terms_name_both_sites(float64):
    vae = make_vae(12, latents=2, z_dim=3, hidden_dims=(8,))
    x = torch.bernoulli(torch.full((30, 12), 0.5))
    torch.manual_seed(2)
    reference = estimate_elbo(vae, x, 2)
    torch.manual_seed(2)
    terms = estimate_elbo_terms(vae, x, 2)
    assert terms.elbo == reference
    assert set(terms.kl_sites) == {"z2", "z1"} and terms.kl_mode == {"z2": "analytic", "z1": "analytic"}
    assert terms.reconstruction - terms.kl == pytest.approx(terms.elbo, abs=1e-10)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_the_terms_equal_the_closed_form_on_the_same_draw(float64, likelihood):
    vae = VAE(x_dim=12, z_dim=4, hidden_dims=(9, 7), activation="tanh", likelihood=likelihood, sigma=0.6)
    x = torch.bernoulli(torch.full((40, 12), 0.3)) if likelihood == "bernoulli" else torch.randn(40, 12)
    torch.manual_seed(11)
    terms = estimate_elbo_terms(vae, x)
    torch.manual_seed(11)  # the guide's one draw per point is this noise
    eps = torch.randn(40, 4)
    with torch.no_grad():
        exact = closed_form_elbo(vae, x, eps=eps)
        loc, scale = vae.encoder(x)
        kl = kl_diag_gaussian_std_normal(loc, scale)
    assert terms.reconstruction == pytest.approx(exact.reconstruction.mean().item(), abs=1e-10)
    assert terms.kl == pytest.approx(kl.mean().item(), abs=1e-10)
    assert terms.kl_sites["z"] == terms.kl
    assert terms.elbo == pytest.approx(exact.elbo.mean().item(), abs=1e-10)
    assert terms.elbo == pytest.approx(terms.reconstruction - terms.kl, abs=1e-10)


def test_fit_records_every_field_and_the_elbo_is_reconstruction_minus_kl(float64, digits):
    data = digits.to(dtype=torch.float64)
    vae = VAE(digits.x_dim, z_dim=3, hidden_dims=(16,)).double()
    options = FitOptions(epochs=2, batch_size=256, lr=2e-3, lr_schedule="cosine", validation=200, seed=3)
    history = fit(vae, data, options)
    total = 2 * math.ceil((1438 - 200) / 256)
    for record in history.epochs:
        for held_out in ("test", "validation"):
            elbo, rec, kl = (record[f"{held_out}_{k}"] for k in ("elbo", "reconstruction", "kl"))
            assert elbo == pytest.approx(rec - kl, abs=1e-10)
            assert record[f"{held_out}_kl_sites"] == {"z": pytest.approx(kl, abs=1e-12)}
            assert kl > 0 and rec < 0
        assert record["eval_kl_mode"] == {"z": "analytic"}
        assert record["kl_weight"] == 1.0
        # the learning rate of the epoch's last step (counted from 0: step - 1)
        assert record["lr"] == learning_rate("cosine", 2e-3, record["step"] - 1, total)
        assert math.isfinite(record["grad_norm"]) and record["grad_norm"] > 0
    assert history.epochs[1]["lr"] < history.epochs[0]["lr"]


def test_kl_weight_follows_the_warm_up_and_infovae_alpha(digits):
    vae = VAE(digits.x_dim, z_dim=2, hidden_dims=(16,))
    history = fit(vae, digits, FitOptions(epochs=2, batch_size=512, beta=0.5, kl_warmup=5, seed=0))
    steps = [r["step"] for r in history.epochs]  # 3 steps an epoch: 3 and 6 steps into a warm-up of 5
    assert [r["kl_weight"] for r in history.epochs] == [0.5 * min(1.0, s / 5) for s in steps]
    info = fit(VAE(digits.x_dim, z_dim=2, hidden_dims=(16,)), digits,
               FitOptions(elbo="infovae", infovae_alpha=0.25, epochs=1, batch_size=512, seed=0))  # fmt: skip
    assert info.last["kl_weight"] == 0.75
    iwae = fit(VAE(digits.x_dim, z_dim=2, hidden_dims=(16,)), digits,
               FitOptions(elbo="iwae", particles=2, epochs=1, batch_size=512, seed=0))  # fmt: skip
    assert "kl_weight" not in iwae.last and "test_reconstruction" in iwae.last


@pytest.mark.parametrize("clip", [0.0, 5.0, 100.0])
def test_the_step_sums_the_gradient_norm_before_clipping(clip):
    w = torch.nn.Parameter(torch.ones(4))
    sgd = torch.optim.SGD([w], lr=0.0)
    step = GuardedStep(lambda: 10 * w.sum(), sgd, clip_norm=clip)  # gradient 10 * (1, 1, 1, 1): norm 20
    for _ in range(3):
        step()
    assert step.grad_norms() == (pytest.approx(60.0), 3)
    step.set_grad_norms()
    assert step.grad_norms() == (0.0, 0)


def test_gradient_norm_is_the_norm_of_all_gradients_together():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0, 12.0])
    assert gradient_norm([a, b]).item() == pytest.approx(13.0)
    assert gradient_norm([torch.nn.Parameter(torch.zeros(1))]).item() == 0.0


def test_the_grad_norm_field_is_the_mean_of_the_steps_norms(digits):
    norms = []
    original = GuardedStep.loss_and_guard

    def spy(self, *batch):
        loss = original(self, *batch)
        norms.append(gradient_norm(self.parameters).item())
        return loss

    pyro.set_rng_seed(1)
    vae = VAE(digits.x_dim, z_dim=2, hidden_dims=(16,))
    GuardedStep.loss_and_guard = spy
    try:
        history = fit(vae, digits, FitOptions(epochs=2, batch_size=512, seed=1))
    finally:
        GuardedStep.loss_and_guard = original
    assert len(norms) == 6
    assert [r["grad_norm"] for r in history.epochs] == pytest.approx([sum(norms[:3]) / 3, sum(norms[3:]) / 3])
