"""The training set's reconstruction and KL terms (``train_reconstruction``, ``train_kl``,
``train_kl_sites``): read off each step's own draws, summed on the device, carried by resume."""

import copy

import pyro
import pytest
import torch

from pyrovae import VAE, closed_form_elbo, fit, load_dataset
from pyrovae.errors import CheckpointError
from pyrovae.infer import make_elbo
from pyrovae.infer.objective import Objective
from pyrovae.models.hierarchical import make_vae
from pyrovae.models.kl import kl_diag_gaussian_std_normal
from pyrovae.train import FitOptions
from pyrovae.train.engines import CompiledEngine
from pyrovae.train.state import ResumeState
from pyrovae.train.step_kl import KLRecorder

UNTIMED = {"seconds", "eval_seconds", "images_per_second"}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "dynamic")


def untimed(records):
    return [{k: v for k, v in r.items() if k not in UNTIMED} for r in records]


def grads(vae):
    return [p.grad.clone() for p in vae.parameters()]


def test_the_recorded_kl_is_the_closed_form_and_the_loss_is_unchanged(float64):
    vae = VAE(x_dim=12, z_dim=4, hidden_dims=(9,), activation="tanh")
    x = torch.bernoulli(torch.full((30, 12), 0.4))
    objective = Objective(vae.model, vae.guide, make_elbo("meanfield", 1), num_data=300)
    recorder = KLRecorder(objective, ("z",), 300, 1, True)
    with pyro.validation_enabled(False):
        torch.manual_seed(3)
        plain = objective(x)
        plain.backward()
        plain_grads = grads(vae)
        vae.zero_grad()
        torch.manual_seed(3)
        loss = recorder(x)
        loss.backward()
    assert torch.equal(loss, plain)  # the loss reuses the recorded closed form: bit for bit
    assert all(torch.equal(a, b) for a, b in zip(grads(vae), plain_grads, strict=True))
    torch.manual_seed(3)
    exact = closed_form_elbo(vae, x, eps=torch.randn(30, 4))
    with torch.no_grad():
        kl = kl_diag_gaussian_std_normal(*vae.encoder(x)).mean().item()
    per_point = recorder.last.item() / 300  # a scaled sum (N/B) over the rows
    assert per_point == pytest.approx(kl, abs=1e-12)
    assert -loss.item() / 300 + per_point == pytest.approx(exact.reconstruction.mean().item(), abs=1e-10)


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
@pytest.mark.parametrize("prior", ["gaussian", "mog"])
def test_fit_records_the_training_terms_and_they_add_up_to_the_training_elbo(digits, elbo, prior):
    vae = VAE(digits.x_dim, z_dim=3, hidden_dims=(16,), prior=prior)
    history = fit(vae, digits, FitOptions(elbo=elbo, epochs=2, batch_size=256, seed=2, particles=2))
    for record in history.epochs:
        assert record["train_reconstruction"] - record["train_kl"] == pytest.approx(record["train_elbo"], abs=1e-9)
        assert record["train_kl_sites"] == {"z": record["train_kl"]}
        assert record["train_reconstruction"] < 0
        if prior == "gaussian":  # a closed form: positive, of the size of the test KL
            assert 0 < record["train_kl"] < 5 * record["test_kl"] + 1
    assert history.epochs[1]["train_reconstruction"] > history.epochs[0]["train_reconstruction"]


def test_two_latent_sites_each_get_their_kl(digits):
    vae = make_vae(digits.x_dim, latents=2, z_dim=2, hidden_dims=(16,))
    record = fit(vae, digits, FitOptions(epochs=1, batch_size=256, seed=0)).last
    assert set(record["train_kl_sites"]) == {"z2", "z1"}
    assert record["train_kl"] == pytest.approx(sum(record["train_kl_sites"].values()), abs=1e-12)


def test_a_recorded_graph_replays_the_terms_as_the_eager_step_computes_them(digits):
    def run(engine):
        torch.manual_seed(0)
        vae = VAE(digits.x_dim, z_dim=3, hidden_dims=(16,))
        return fit(vae, digits, FitOptions(epochs=2, batch_size=256, seed=5, engine=engine)).epochs

    eager = run("eager")
    with pytest.warns(RuntimeWarning, match="running the recorded graph uncompiled|graph"):
        recorded = run(CompiledEngine(backend="no-such-backend"))  # the recorded graph, uncompiled
    compiled = run("compiled")  # inductor: the one graph of loss, gradients and norm writes the terms too
    for other in (recorded, compiled):
        for a, b in zip(untimed(eager), untimed(other), strict=True):
            assert b["train_elbo"] == pytest.approx(a["train_elbo"], rel=1e-6)
            assert b["train_kl"] == pytest.approx(a["train_kl"], rel=1e-6)
            assert b["train_reconstruction"] == pytest.approx(a["train_reconstruction"], rel=1e-6)
            assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-6)


class _StopError(Exception):
    pass


@pytest.mark.parametrize("stop_at", [4, 9])  # mid-epoch (6 steps an epoch), and mid-way through the second
def test_a_run_resumed_mid_epoch_records_the_terms_of_an_uninterrupted_one(digits, stop_at):
    def options():  # (a fresh object for each run: options seed the generators once)
        return FitOptions(elbo="trace", epochs=2, batch_size=256, seed=7, particles=2, checkpoint_every=1)

    def new_vae():
        torch.manual_seed(1)
        return VAE(digits.x_dim, z_dim=3, hidden_dims=(16,), prior="mog")

    full = fit(new_vae(), digits, options())
    saved = {}

    def capture(state):
        if state.step == stop_at:
            saved["vae"] = {k: t.clone() for k, t in state.vae.state_dict().items()}
            saved["resume"] = state.resume_state()
            raise _StopError

    with pytest.raises(_StopError):
        fit(new_vae(), digits, options(), callbacks=[capture])
    assert len(saved["resume"]["train_kl"]) == 1 and saved["resume"]["train_kl"][0] > 0
    vae = new_vae()
    vae.load_state_dict(saved["vae"])
    resumed = fit(vae, digits, options(), resume=saved["resume"])
    assert untimed(resumed.epochs) == untimed(full.epochs)


def test_an_objective_that_is_not_the_elbo_takes_the_terms_from_its_end_of_epoch_pass(digits):
    vae = VAE(digits.x_dim, z_dim=3, hidden_dims=(16,))
    record = fit(vae, digits, FitOptions(epochs=1, batch_size=256, beta=0.5, seed=0)).last
    assert record["train_elbo_rows"] == digits.train.shape[0]
    assert record["train_reconstruction"] - record["train_kl"] == pytest.approx(record["train_elbo"], abs=1e-4)
    assert record["train_kl_sites"] == {"z": record["train_kl"]}


def test_a_resume_state_keeps_the_sum_and_refuses_a_damaged_one(digits):
    vae = VAE(digits.x_dim, z_dim=2, hidden_dims=(8,))
    saved = {}

    def capture(state):
        if state.event == "checkpoint":
            saved.setdefault("state", copy.deepcopy(state.resume_state()))

    fit(vae, digits, FitOptions(epochs=1, batch_size=512, seed=0, checkpoint_every=1), callbacks=[capture])
    state = saved["state"]
    assert ResumeState.from_dict(state).train_kl == state["train_kl"]
    older = {k: v for k, v in state.items() if k != "train_kl"}  # a checkpoint from before the field
    assert ResumeState.from_dict(older).train_kl == []
    with pytest.raises(CheckpointError, match="resume.train_kl"):
        ResumeState.from_dict({**state, "train_kl": "lots"})
