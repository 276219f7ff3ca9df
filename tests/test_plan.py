"""A run's plan: every decision of a ``pyrovae fit`` run is taken once (pyrovae.plan)."""

import json
from collections import Counter

import pyro
import pytest
from click.testing import CliRunner

import pyrovae.data.batches
import pyrovae.data.datasets
import pyrovae.train.engines
import pyrovae.train.loop
import pyrovae.train.options
from pyrovae.cli import main
from pyrovae.config import FitConfig
from pyrovae.plan import plan_run

FAST = ["--z-dim", "3", "--hidden", "16", "--batch-size", "256", "--no-progress", "--seed", "2", "--device", "cpu"]


@pytest.fixture
def counted(monkeypatch):
    """Counts of the engine resolutions and checks, RNG seedings, data loads and checks against the
    likelihood in this test."""
    calls = Counter()

    def counting(module, name, key):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[key(*args, **kwargs)] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(pyrovae.train.options, "make_engine", lambda *a, **k: "engine")
    counting(pyrovae.train.engines.Engine, "require", lambda *a, **k: "engine check")  # (eager's, jit's)
    counting(pyro, "set_rng_seed", lambda *a, **k: "seed")
    counting(pyrovae.plan, "load_dataset", lambda *a, **k: "load")
    # pyrovae.data.datasets: check_dataset's checks; batches: the loop's own; the loaders' own pass likelihood None
    for module in (pyrovae.data.datasets, pyrovae.data.batches):
        counting(module, "validate_data", lambda x, x_dim, likelihood, what="", **k: likelihood and f"check {what}")
    return calls


@pytest.mark.parametrize("engine", ["auto", "eager", "jit"])
def test_a_run_resolves_its_engine_and_checks_its_data_once(tmp_path, counted, engine):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--epochs", "2", *FAST, "--engine", engine, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert counted["engine"] == 1 and counted["engine check"] == 1 and counted["seed"] == 1 and counted["load"] == 1
    assert counted["check the train set of digits"] == 1 and counted["check the test set of digits"] == 1
    assert not [key for key in counted if key and key.startswith("check") and "digits" not in key]  # the loop's
    facts = json.loads((out / "config.json").read_text())["resolved"]
    assert facts["engine"] == ("eager" if engine == "auto" else engine)  # auto: a run this short is eager
    counted.clear()
    result = CliRunner().invoke(main, ["fit", "--resume", str(out), "--epochs", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert counted["engine"] == 1 and counted["engine check"] == 1 and counted["load"] == 1
    assert counted["check the train set of digits"] == 1 and counted["seed"] == 1  # (fit's; then the state resumes)


def test_the_plan_holds_what_config_json_records(counted):
    config = FitConfig(z_dim=3, hidden_dims=(16,), batch_size=256, epochs=1, device="cpu", elbo="trace")
    plan = plan_run(config, None, "planning")
    facts = plan.facts()
    assert plan.data.checked == "bernoulli" and plan.model.z_dim == 3 and str(plan.device) == "cpu"
    assert facts["engine"] == plan.engine.name == "eager" and facts["kl_mode"] == {"z": "monte-carlo"}
    assert (facts["train_size"], facts["test_size"], facts["x_dim"]) == (1438, 359, 64)
    assert facts["world_size"] == 1 and set(facts["versions"]) == {"pyrovae", "pyro", "torch", "python"}
    assert plan.options.engine is plan.engine and counted["engine"] == 1  # decided once, then handed on


def test_config_json_is_the_nested_spec_and_the_facts_of_the_start(tmp_path):
    from pyrovae.spec import RunSpec

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--epochs", "1", *FAST, "--elbo", "trace", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads((out / "config.json").read_text())
    assert set(written) == {"data", "model", "objective", "engine", "training", "output", "logging", "resolved"}
    spec = RunSpec.from_dict({key: value for key, value in written.items() if key != "resolved"})
    assert spec.model.z_dim == 3 and spec.model.hidden == [16] and spec.objective.name == "trace"
    assert spec.training.seed == 2 and spec.output.dir == str(out) and spec.data.dataset == "digits"
    facts = written["resolved"]
    assert facts["device"] == "cpu" and facts["engine"] == "eager" and facts["kl_mode"] == {"z": "monte-carlo"}
    assert (facts["train_size"], facts["test_size"]) == (1438, 359) and facts["versions"]["pyrovae"]
    assert facts["host"] and facts["started"].endswith("+00:00") and isinstance(facts["command"], list)
    assert facts["git_commit"] is None or len(facts["git_commit"]) == 40


@pytest.mark.parametrize("version", ["0.1", "0.2.0.dev0"])
def test_a_run_with_a_flat_config_json_still_evaluates_and_resumes(tmp_path, version):
    from pyrovae.commands import read_run_config

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--epochs", "1", *FAST, "--out", str(out)])
    assert result.exit_code == 0, result.output
    flat = read_run_config(out)  # the nested file as the flat options of 0.2.0.dev0 (and their facts)
    assert flat["z_dim"] == 3 and flat["hidden_dims"] == [16] and flat["resolved"]["engine"] == "eager"
    if version == "0.1":  # 0.1 wrote neither these options nor the resolved engine
        flat = {k: v for k, v in flat.items() if k not in FitConfig.ADDED_SINCE_0_1}
        flat["resolved"] = {k: v for k, v in flat["resolved"].items() if k != "engine"}
    (out / "config.json").write_text(json.dumps(flat, indent=2))
    result = CliRunner().invoke(main, ["evaluate", str(out), "--points", "10", "--k", "30", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["fit", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    rewritten = json.loads((out / "config.json").read_text())  # (with its epochs: now nested)
    assert rewritten["training"]["epochs"] == 2 and rewritten["model"]["z_dim"] == 3


def test_held_out_rows_do_not_make_the_loop_check_the_engine_again(tmp_path, counted):
    out = tmp_path / "run"
    args = ["fit", "--epochs", "1", *FAST, "--engine", "jit", "--validation", "100", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert counted["engine"] == 1 and counted["engine check"] == 1 and counted["seed"] == 1
    # the check is against the 1338 rows left to train on: a batch above them is refused before any file
    args = ["fit", "--epochs", "1", *FAST, "--batch-size", "1400",
            "--engine", "jit", "--validation", "100", "--out", str(tmp_path / "refused")]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "--batch-size 1400 must not exceed the 1338 training rows" in result.output
    assert not (tmp_path / "refused").exists()
