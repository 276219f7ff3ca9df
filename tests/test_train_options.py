"""The training options of the quality protocol: learning-rate schedule, gradient clipping, model
selection on a validation split and early stopping."""

import copy
import dataclasses
import math

import pytest
import torch

import pyrovae.train.epoch_fields as epoch_fields
from pyrovae import VAE, fit, load_dataset
from pyrovae.data import split_validation
from pyrovae.errors import CheckpointError, ConfigError, DataError
from pyrovae.infer.elbo_terms import ELBOTerms
from pyrovae.train import FitOptions, GuardedStep, ResumeState, make_adam
from pyrovae.train.schedule import learning_rate
from pyrovae.train.selection import ModelSelection


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", binarization="dynamic")


def test_cosine_schedule_goes_from_lr_to_zero():
    assert learning_rate("constant", 0.1, 57, 100) == 0.1
    assert learning_rate("cosine", 0.1, 0, 100) == 0.1
    assert learning_rate("cosine", 0.1, 50, 100) == pytest.approx(0.05)
    assert learning_rate("cosine", 0.1, 25, 100) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert learning_rate("cosine", 0.1, 100, 100) == pytest.approx(0.0, abs=1e-15)


def test_fit_steps_with_the_scheduled_rates(digits, monkeypatch):
    seen = []
    real_step = GuardedStep.__call__

    def recording(self, *batch):
        seen.append(self.optimizer.param_groups[0]["lr"])
        return real_step(self, *batch)

    monkeypatch.setattr(GuardedStep, "__call__", recording)
    vae = VAE(64, z_dim=2, hidden_dims=(8,))
    fit(vae, digits, FitOptions(epochs=2, batch_size=512, lr=0.01, lr_schedule="cosine", engine="eager", seed=0))
    total = 2 * math.ceil(digits.train.shape[0] / 512)  # 3 steps per epoch
    assert seen == pytest.approx([learning_rate("cosine", 0.01, t, total) for t in range(total)])


def test_clipping_rescales_the_gradient_to_the_norm():
    # one step of plain SGD (lr 1) on loss = 10 * sum(w): the gradient is 10 per coordinate
    w = torch.nn.Parameter(torch.zeros(4))
    for clip, expected_norm in ((0.0, 20.0), (5.0, 5.0), (100.0, 20.0)):
        with torch.no_grad():
            w.zero_()
        sgd = torch.optim.SGD([w], lr=1.0)
        step = GuardedStep(lambda: 10 * w.sum(), sgd, clip_norm=clip)
        step()
        assert w.detach().norm().item() == pytest.approx(expected_norm)
        assert step.failed() is None


def test_clipping_still_lets_the_guard_see_a_non_finite_gradient():
    w = torch.nn.Parameter(torch.ones(3))
    adam = make_adam([w], lr=0.1)
    step = GuardedStep(lambda: (w * torch.tensor([1.0, math.inf, 1.0])).sum(), adam, clip_norm=1.0)
    step()
    assert step.failed() is not None and torch.equal(w.detach(), torch.ones(3))


def test_the_validation_rows_are_training_rows_fixed_by_a_seed(digits):
    kept, validation = split_validation(digits, 100)
    again, same = split_validation(digits, 100)
    assert kept.train.shape[0] == digits.train.shape[0] - 100 and validation.shape == (100, 64)
    torch.testing.assert_close(same, validation)
    assert torch.equal(kept.test, digits.test)  # the test set is not touched
    # every validation row is a training row, binarized once (dynamic binarization), none is kept
    assert bool(((validation == 0) | (validation == 1)).all())
    rows = {tuple(r.tolist()) for r in digits.train}
    grey = torch.cat([kept.train, validation]).shape[0]
    assert grey == digits.train.shape[0] and all(tuple(r.tolist()) in rows for r in kept.train)
    assert kept.train_labels.shape[0] == kept.train.shape[0]
    with pytest.raises(DataError, match="validation must hold out between 1 and 1437 of the 1438 training rows"):
        split_validation(digits, 1438)


def test_model_selection_keeps_the_best_epoch_and_stops_after_patience():
    model = torch.nn.Linear(2, 1)
    selection = ModelSelection(patience=2)
    stops = []
    for epoch, elbo in enumerate([-10.0, -5.0, -7.0, -6.0, -1.0], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        stops.append(selection.update(epoch, elbo, model))
        if stops[-1]:
            break
    assert stops == [False, False, False, True] and selection.best_epoch == 2 and selection.best_elbo == -5.0
    assert selection.restore(model) and bool((model.weight == 2).all())
    again = ModelSelection(patience=2)
    again.load(selection.to_dict(), "here")
    assert again.best_epoch == 2 and again.stopped and torch.equal(again.best_model["weight"], model.weight)
    with pytest.raises(CheckpointError, match="here: field 'resume.selection' should hold best_epoch"):
        again.load({"best_epoch": "two"}, "here")


def test_fit_ends_with_the_best_validation_epoch_and_stops_early(digits, monkeypatch):
    # the validation ELBOs are scripted (the loop's own estimate runs for the test set): epoch 2 is
    # best, patience 2 stops after epoch 4 of 10, and the model ends with epoch 2's parameters
    scripted = iter([-60.0, -50.0, -55.0, -52.0, -40.0])
    real = epoch_fields.estimate_elbo_terms  # (what the held-out fields of a record are estimated with)

    def estimate(vae, x, *args, **kwargs):
        return ELBOTerms(next(scripted), None, None, None, {}) if x.shape[0] == 200 else real(vae, x, *args, **kwargs)

    monkeypatch.setattr(epoch_fields, "estimate_elbo_terms", estimate)
    snapshots, events, lines = {}, [], []

    def remember(state):
        events.append(state.event)
        if state.event == "epoch":
            snapshots[state.record["epoch"]] = {k: v.clone() for k, v in state.vae.state_dict().items()}
        if state.event == "selected":  # what a run directory's checkpoint holds at the end
            snapshots["final"] = copy.deepcopy(state.resume_state())

    vae = VAE(64, z_dim=2, hidden_dims=(8,))
    options = FitOptions(epochs=10, batch_size=256, seed=0, engine="eager", validation=200, patience=2)
    history = fit(vae, digits, options, callbacks=[remember], log=lines.append)
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3, 4]
    assert [r["validation_elbo"] for r in history.epochs] == [-60.0, -50.0, -55.0, -52.0]
    assert history.best_epoch == 2 and history.stopped_early and events == ["epoch"] * 4 + ["selected"]
    for name, value in vae.state_dict().items():
        assert torch.equal(value, snapshots[2][name]), name
    assert not torch.equal(snapshots[4]["encoder.net.0.weight"], snapshots[2]["encoder.net.0.weight"])
    assert any("selected epoch 2 (validation_elbo=-50.000 on 200 held-out" in line for line in lines)
    # every step trained on the other 1238 rows: 5 steps of 256 per epoch
    assert history.epochs[0]["step"] == math.ceil(1238 / 256)
    # resuming the stopped run trains no further epoch: it stays stopped, with the same selection
    final = ResumeState.from_dict(snapshots["final"])
    assert final.epoch == 5 and final.selection["stopped"] and final.selection["best_epoch"] == 2
    written = []
    keep = [lambda state: written.append(copy.deepcopy(state.resume_state()))]
    again = fit(vae, digits, dataclasses.replace(options, seed=None), resume=final, callbacks=keep)
    assert len(again.epochs) == 4 and again.best_epoch == 2 and again.stopped_early
    assert [ResumeState.from_dict(w).epoch for w in written] == [5]  # the checkpoint it rewrites reads back


def test_a_resumed_run_keeps_its_selection(digits):
    states = []
    vae = VAE(64, z_dim=2, hidden_dims=(8,))

    def keep(state):
        if state.event == "epoch":
            states.append(copy.deepcopy(state.resume_state()))  # (as a checkpoint would: a copy, now)

    fit(vae, digits, FitOptions(epochs=2, batch_size=512, seed=1, engine="eager", validation=100), callbacks=[keep])
    first = ResumeState.from_dict(states[0])
    assert first.selection["best_epoch"] == 1 and set(first.selection["best_model"]) == set(vae.state_dict())
    # the whole run again from the end of epoch 1: same selection, same final parameters
    other = VAE(64, z_dim=2, hidden_dims=(8,))
    other.load_state_dict(states[0]["selection"]["best_model"])  # epoch 1's parameters (the best so far)
    history = fit(other, digits, FitOptions(epochs=2, batch_size=512, engine="eager", validation=100), resume=first)
    assert history.best_epoch == states[1]["selection"]["best_epoch"]
    for name, value in other.state_dict().items():
        torch.testing.assert_close(value, vae.state_dict()[name])
    with pytest.raises(CheckpointError, match="field 'resume.selection' should be a dict"):
        ResumeState.from_dict({**states[0], "selection": 3})


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(lr_schedule="step"), r"lr_schedule \(--lr-schedule\) must be one of constant, cosine"),
        (dict(clip_norm=-1.0), r"clip_norm \(--clip-norm\) must be a finite number >= 0"),
        (dict(clip_norm=math.inf), r"clip_norm \(--clip-norm\) must be a finite number >= 0"),
        (dict(validation=-1), "validation must be an int >= 0"),
        (dict(patience=3), r"patience \(--patience 3\) stops on the validation ELBO.*pass --validation N"),
    ],
)
def test_bad_training_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        FitOptions(**options)


def test_pyrovae_0_1_keywords_of_fit_still_train_the_same_run_with_a_warning(digits):
    def run(*args, **kwargs):
        torch.manual_seed(0)  # the same initial weights
        vae = VAE(digits.x_dim, z_dim=2, hidden_dims=(8,))
        history = fit(vae, digits, *args, **kwargs)
        return history.step_elbos, [p.detach().clone() for p in vae.parameters()]

    options = FitOptions(epochs=1, batch_size=512, seed=4, engine="eager", elbo="trace", particles=2)
    new = run(options)
    with pytest.warns(FutureWarning, match=r"pass the options as fit\(vae, data, FitOptions\(epochs=\.\.\., "):
        old = run(epochs=1, batch_size=512, seed=4, engine="eager", elbo="trace", num_particles=2)
    assert old[0] == new[0] and all(torch.equal(a, b) for a, b in zip(old[1], new[1], strict=True))
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        fit(VAE(digits.x_dim, z_dim=2, hidden_dims=(8,)), digits, epoch=1)
    with pytest.raises(ConfigError, match="must be a pyrovae.train.FitOptions, got dict"):
        fit(VAE(digits.x_dim, z_dim=2, hidden_dims=(8,)), digits, {"epochs": 1})


@pytest.mark.parametrize(
    "module, old, new",
    [
        ("pyrovae", "TrainOptions", "FitOptions"),
        ("pyrovae", "train_run", "fit_run"),
        ("pyrovae.train", "TrainOptions", "FitOptions"),
        ("pyrovae.train", "TrainState", "ResumeState"),
        ("pyrovae.train", "TrainingInterrupted", "FitInterrupted"),
        ("pyrovae.train.options", "TrainOptions", "FitOptions"),
        ("pyrovae.train.state", "TrainState", "ResumeState"),
        ("pyrovae.train.interrupts", "TrainingInterrupted", "FitInterrupted"),
        ("pyrovae.commands", "train_run", "fit_run"),
        ("pyrovae.runs", "train_run", "fit_run"),
    ],
)
def test_the_names_of_earlier_versions_still_answer_with_a_warning(module, old, new):
    import importlib

    namespace = importlib.import_module(module)
    with pytest.warns(FutureWarning, match=rf"{module}\.{old} is deprecated: it is now called {new}"):
        value = getattr(namespace, old)
    assert value is getattr(namespace, new)
    with pytest.raises(AttributeError, match="has no attribute 'TrainOption'"):
        getattr(namespace, "TrainOption")  # noqa: B009 (the look-up is what is tested)
