"""Every script in examples/ runs with tiny arguments; an unlisted example fails the suite."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"

#: script -> tiny arguments
EXAMPLES = {
    "quickstart.py": ["--epochs", "1", "--z-dim", "2", "--hidden", "16"],
    "swap_priors.py": [
        "--epochs",
        "1",
        "--z-dim",
        "2",
        "--hidden",
        "16",
        "--components",
        "2",
        "--k",
        "8",
        "--eval-particles",
        "1",
        "--out",
        "table",
    ],  # fmt: skip
    "custom_prior.py": ["--epochs", "1", "--z-dim", "2"],
    "custom_model.py": ["--epochs", "1", "--n", "200", "--k", "30"],
    "linear_gaussian_check.py": ["--x-dim", "4", "--z-dim", "2", "--n", "20", "--k", "1", "500"],
    "seed_identities.py": ["--n", "6", "--draws", "20000"],
    "objectives.py": (
        "--dataset digits --n-train 300 --epochs 1 --z-dim 2 --hidden 16 --n-eval 40 --k 20 "
        "--objectives meanfield,iwae-5,infovae,warmup --out table"
    ).split(),
}


def _example(name: str):
    """The example script ``examples/<name>.py``, imported as a module (its folder on the path only meanwhile)."""
    sys.path.insert(0, str(EXAMPLES_DIR))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_every_example_is_listed():
    scripts = sorted(p.name for p in EXAMPLES_DIR.glob("*.py"))
    assert scripts == sorted(EXAMPLES), "add new examples to EXAMPLES in tests/test_examples.py"


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / script), *EXAMPLES[script]],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), "an example prints what it found"


def test_quickstart_closed_form_matches_pyro():
    quickstart = _example("quickstart")
    result = quickstart.main(["--epochs", "1", "--z-dim", "2", "--hidden", "16"])
    assert result["pyro_elbo"] == pytest.approx(result["closed_form_elbo"], rel=1e-5)


def test_swap_priors_reports_every_prior_with_its_kl_mode(tmp_path):
    swap_priors = _example("swap_priors")
    args = ["--epochs", "1", "--z-dim", "2", "--hidden", "16", "--components", "2", "--k", "8", "--out", str(tmp_path)]
    rows = swap_priors.main(args)
    modes = {row["prior"]: row["kl_mode"] for row in rows}
    assert modes == {"normal": "analytic", "gaussian": "analytic", "mog": "monte-carlo", "vamp": "monte-carlo",
                     "flow": "monte-carlo"}  # fmt: skip
    table = (tmp_path / "priors.md").read_text()
    assert all(f"| {name} | {mode} |" in table for name, mode in modes.items())
    assert all(row["test_elbo"] < 0 for row in rows)
    assert all(row["log_px"] is not None and row["log_px"] < 0 for row in rows)


def test_custom_prior_trains_with_a_monte_carlo_kl_and_reloads_from_its_class(tmp_path):
    custom_prior = _example("custom_prior")
    result = custom_prior.main(["--epochs", "1", "--z-dim", "2", "--df", "4", "--out", str(tmp_path)])
    assert result["kl_mode"] == "monte-carlo" and result["test_elbo"] < 0
    assert result["scales"] != [1.0, 1.0]  # the prior's parameters were trained
    assert result["reloaded_equal"] is True
    assert "trained with the prior class custom_prior:StudentTPrior" in result["refused_without_class"]
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["vae"]["prior"] == "custom_prior:StudentTPrior" and payload["vae"]["prior_options"] == {"df": 4.0}


def test_custom_model_trains_evaluates_and_reloads_from_its_class(tmp_path):
    custom_model = _example("custom_model")
    result = custom_model.main([*EXAMPLES["custom_model.py"], "--out", str(tmp_path)])
    assert result["kl_mode"] == "analytic" and result["elbo"] <= result["log_px"] < 0
    assert result["reloaded_same"] is True
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["vae"] == {"model": "custom_model:LaplaceVAE", "x_dim": 8, "z_dim": 2, "hidden": 32}


def test_linear_gaussian_check_finds_the_identities():
    linear_gaussian_check = _example("linear_gaussian_check")
    result = linear_gaussian_check.main(EXAMPLES["linear_gaussian_check.py"])
    assert result["max_elbo_minus_log_px"] < 0
    assert result["max_identity_20_error"] < 1e-10 and result["max_posterior_elbo_error"] < 1e-10
    assert result["khat_exact_max"] < 0.5 and result["khat_narrow_median"] > 0.7


def test_seed_identities_prints_both_sides_of_each_form():
    seed_identities = _example("seed_identities")
    result = seed_identities.main(EXAMPLES["seed_identities.py"])
    assert result["n_points"] == 6 and result["draws"] == 20_000
    assert result["eq19_error"] < 1e-10 and result["eq20_error"] < 1e-10
    assert abs(result["eq21_z"]) < 4 and abs(result["eq32_z"]) < 4
    assert result["kl_posterior"] > 0 and result["mutual_information"] > 0


def test_objectives_study_measures_every_column(tmp_path):
    objectives = _example("objectives")
    args = [*EXAMPLES["objectives.py"][:-1], str(tmp_path)]
    rows = objectives.main(args)
    assert [row["options"]["elbo"] for row in rows] == ["meanfield", "iwae", "infovae", "meanfield"]
    for row in rows:
        assert row["test_elbo"] < 0 and row["log_px"] < 0 and row["kl"] >= 0 and 0 <= row["active_units"] <= 2
        assert row["seconds"] > 0
    meanfield, iwae, infovae, warmup = rows
    assert meanfield["optimised"] == "the ELBO (eq. 11)" and meanfield["train_objective"] == meanfield["train_elbo"]
    assert "K=5" in iwae["optimised"] and "MMD weight 999" in infovae["optimised"]
    assert warmup["options"]["kl_warmup"] == 1  # a third of the run's 3 steps (300 rows, batch 128)
    table = (tmp_path / "objectives.md").read_text()
    assert "IWAE k=20" in table and table.count("\n") == len(rows) + 2
    saved = json.loads((tmp_path / "objectives.json").read_text())
    assert saved["settings"]["n_train"] == 300 and len(saved["rows"]) == 4
