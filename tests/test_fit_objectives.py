"""Every objective trains from Python and from the command line; runs record the objective and the
true ELBO; a warm-up's weight follows the step count, also across a resume."""

import json

import pyro
import pytest
import torch
from click.testing import CliRunner

from pyrovae import VAE, estimate_elbo, fit, load_dataset
from pyrovae.cli import main
from pyrovae.commands import fit_run, read_run_config, resume_run
from pyrovae.data import binarize
from pyrovae.infer import KLWeightedMeanField_ELBO
from pyrovae.train import FitOptions
from pyrovae.train.engines import CompiledEngine
from pyrovae.train.loop import TRAIN_ELBO_ROWS

TINY = ["--epochs", "2", "--z-dim", "4", "--hidden", "32", "--batch-size", "256", "--no-progress", "--device", "cpu"]

OBJECTIVES = {
    "iwae-5-dreg": dict(elbo="iwae", num_particles=5),
    "iwae-3-standard": dict(elbo="iwae", num_particles=3, iwae_grad="standard"),
    "infovae": dict(elbo="infovae"),
    "beta-0.5": dict(elbo="meanfield", beta=0.5),
    "trace-warmup-free-bits": dict(elbo="trace", kl_warmup=20, free_bits=0.1),
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "dynamic")


@pytest.mark.parametrize("options", OBJECTIVES.values(), ids=OBJECTIVES.keys())
def test_each_objective_trains_and_records_the_true_elbo_beside_it(digits, options):
    vae = VAE(digits.x_dim, z_dim=4, hidden_dims=(32,))
    lines = []
    history = fit(vae, digits, epochs=3, batch_size=128, lr=3e-3, seed=0, log=lines.append, **options)
    first, last = history.epochs[0], history.last
    assert last["test_elbo"] > first["test_elbo"]  # training improves the ELBO (eq. 11) it does not optimise
    for record in history.epochs:
        assert {"objective", "train_objective", "train_elbo", "train_elbo_rows", "test_elbo"} <= set(record)
        assert record["train_elbo_rows"] == min(TRAIN_ELBO_ROWS, 1438)
        json.dumps(record)
    assert "not the ELBO" in last["objective"] and "; optimising " in lines[0]
    assert last["objective"] in lines[0]
    # train_elbo is the ELBO of the model after the epoch on the first training rows, binarized once
    rows = binarize(digits.train[:TRAIN_ELBO_ROWS])
    pyro.set_rng_seed(1)
    assert last["train_elbo"] == pytest.approx(estimate_elbo(vae, rows, num_particles=200), abs=0.5)


def test_the_elbo_objectives_record_no_second_column(digits):
    history = fit(VAE(digits.x_dim, z_dim=4, hidden_dims=(32,)), digits, FitOptions(epochs=1, batch_size=256, seed=0))
    assert "train_objective" not in history.last and "objective" not in history.last


class RecordingWeight(KLWeightedMeanField_ELBO):
    """Remembers the step counts the loop sets it to."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps = []

    def set_step(self, step):
        self.steps.append(step)
        super().set_step(step)


def test_the_loop_sets_the_warmup_weight_before_every_step_and_continues_it_on_resume(digits):
    estimator = RecordingWeight(kl_warmup=10)
    states = []
    vae = VAE(digits.x_dim, z_dim=4, hidden_dims=(16,))
    options = FitOptions(elbo=estimator, epochs=2, batch_size=512, seed=0)
    fit(vae, digits, options, callbacks=[lambda state: states.append(state.train_state())])
    assert estimator.steps == list(range(6))  # 3 steps per epoch
    assert estimator.kl_weight.item() == pytest.approx(0.5)  # the weight of the last step, 5 of 10
    resumed = RecordingWeight(kl_warmup=10)
    fit(vae, digits, FitOptions(elbo=resumed, epochs=2, batch_size=512), resume=states[0])
    assert resumed.steps == [3, 4, 5]


def test_a_warmup_trains_to_the_same_parameters_under_the_compiled_engine(digits, float64):
    data = digits.to(dtype=torch.float64)
    results = []
    for engine in ("eager", CompiledEngine(backend=None)):
        pyro.set_rng_seed(0)
        vae = VAE(data.x_dim, z_dim=3, hidden_dims=(16,)).double()
        fit(
            vae,
            data,
            FitOptions(elbo="meanfield", kl_warmup=5, free_bits=0.05, engine=engine, epochs=2, batch_size=512, seed=4),
        )
        results.append([p.detach().clone() for p in vae.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_the_cli_trains_infovae_and_writes_its_options(tmp_path):
    out = tmp_path / "run"
    args = ["fit", "--elbo", "infovae", "--infovae-alpha", "0.5", "--infovae-lambda", "10", "--mmd-kernel", "rbf",
            "--out", str(out), *TINY]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    config = read_run_config(out)
    assert (config["elbo"], config["infovae_alpha"], config["infovae_lambda"], config["mmd_kernel"]) == (
        "infovae", 0.5, 10.0, "rbf",
    )  # fmt: skip
    assert (
        config["beta"] == 1.0 and config["iwae_grad"] == "dreg" and config["resolved"]["kl_mode"] == {"z": "analytic"}
    )
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("train_objective" in r and r["objective"].startswith("InfoVAE") for r in records)
    assert "optimising InfoVAE" in result.output.splitlines()[0]
    assert "alpha=0.5, lambda=10 (KL weight 0.5, MMD weight 9.5), rbf kernel" in result.output.splitlines()[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--elbo", "iwae", "--beta", "2"], "--beta is for --elbo meanfield or trace, not --elbo iwae"),
        (["--elbo", "infovae", "--infovae-lambda", "0.2"], "infovae needs alpha + lambda >= 1"),
        (["--elbo", "meanfield", "--iwae-grad", "standard"], "--iwae-grad is for --elbo iwae, not --elbo meanfield"),
        (["--elbo", "trace", "--mmd-kernel", "rbf"], "--mmd-kernel is for --elbo infovae"),
        (["--elbo", "infovae", "--infovae-alpha", "2"], "2.0 is not in the range x<=1"),
    ],
)
def test_the_cli_refuses_objective_options_in_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", *args, "--out", str(out), *TINY])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not out.exists()


def test_a_run_from_before_the_objective_options_still_reads_and_resumes(tmp_path):
    from pyrovae.config import OBJECTIVE_FIELDS, FitConfig

    config = FitConfig(z_dim=2, hidden_dims=(8,), epochs=1, batch_size=512, device="cpu", out=str(tmp_path / "run"))
    fit_run(config, log=None, progress=False)
    path = tmp_path / "run" / "config.json"
    saved = read_run_config(tmp_path / "run")  # (written as 0.2.0.dev0 wrote it: flat)
    for name in OBJECTIVE_FIELDS:
        del saved[name]
    path.write_text(json.dumps(saved))
    assert all(name not in read_run_config(tmp_path / "run") for name in OBJECTIVE_FIELDS)
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["beta"] == 1.0  # the checkpoint has them: the two then agree on the defaults
    result = resume_run(tmp_path / "run", epochs=2, log=None, progress=False)
    assert len(result.history.epochs) == 2


def test_an_iwae_run_resumes_with_its_options(tmp_path):
    out = tmp_path / "run"
    assert (
        CliRunner().invoke(main, ["fit", "--elbo", "iwae", "--particles", "3", "--out", str(out), *TINY]).exit_code == 0
    )
    result = CliRunner().invoke(main, ["fit", "--resume", str(out), "--epochs", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all("K=3" in r["objective"] for r in records)
