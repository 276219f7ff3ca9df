"""Plugins: a module outside the package registers a prior, an objective with an option, a model, an
engine and a data set, each by one class and one call, and `pyrovae fit --plugin` trains each (docs/guide/extending.md's
module, run as the page shows); a plugin that fails is refused in one line before anything is written."""

import copy
import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import pyrovae.infer.elbo
import pyrovae.models.model_spec
import pyrovae.models.prior_spec
import pyrovae.spec.datasets
import pyrovae.spec.names
import pyrovae.spec.plugins
import pyrovae.spec.sections
import pyrovae.train.engines
from pyrovae.cli import main
from pyrovae.commands import read_run_config

GUIDE = Path(__file__).parent.parent / "docs" / "guide" / "extending.md"
FAST = ["--epochs", "1", "--batch-size", "256", "--no-progress", "--seed", "3", "--device", "cpu"]
SMALL = ["--z-dim", "3", "--hidden", "16"]


@pytest.fixture
def registries(monkeypatch, tmp_path):
    """The registries, the plugins imported and sys.modules as they were before the test; tmp_path on
    sys.path and as the working folder (so that a run without --out would land in it)."""
    saved = [
        (pyrovae.spec.names, "REGISTERED"),
        (pyrovae.spec.plugins, "IMPORTED"),
        (pyrovae.spec.sections, "OBJECTIVE_OPTIONS"),
        (pyrovae.infer.elbo, "ELBOS"),
        (pyrovae.models.model_spec, "MODELS"),
        (pyrovae.models.prior_spec, "REGISTERED_PRIORS"),
        (pyrovae.train.engines, "ENGINES"),
        (pyrovae.spec.datasets, "_REGISTRY"),
        (pyrovae.spec.datasets, "_DEFAULTS"),
    ]
    copies = [(module, name, copy.deepcopy(getattr(module, name))) for module, name in saved]
    modules = set(sys.modules)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for module, name, value in copies:  # (in place: other modules hold these objects)
        target = getattr(module, name)
        target.clear()
        target.update(value) if isinstance(target, dict) else target.extend(value)
    for name in set(sys.modules) - modules:  # the plugins written in tmp_path (not what they imported)
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.fixture
def plugin(registries):
    """docs/guide/extending.md's plugin module, written as vae_parts.py outside the package."""
    module = re.search(r"```python\n(.*?)```", GUIDE.read_text(), re.S).group(1)
    (registries / "vae_parts.py").write_text(module)
    return registries


def fit(*args):
    result = CliRunner().invoke(main, ["fit", *args, *FAST])
    return result


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_plugin_prior_trains_and_is_recorded_by_name(plugin):
    result = fit("--plugin", "vae_parts", "--prior", "laplace", "--prior-option", "scale=0.5", *SMALL, "--out", "p")
    assert result.exit_code == 0, result.output
    config = read_run_config(plugin / "p")
    assert config["plugins"] == ["vae_parts"] and config["prior"] == "laplace"
    assert config["prior_options"] == {"scale": 0.5}
    assert config["resolved"]["kl_mode"] == {"z": "analytic"}  # (torch registers KL(Normal || Laplace))
    import torch

    from pyrovae.train import load_vae

    vae = load_vae(plugin / "p")  # (the plugin is imported in this process: the name is known)
    assert type(vae.prior).__name__ == "LaplacePrior" and torch.allclose(vae.prior.scale, torch.full((3,), 0.5))


def test_a_plugin_objective_takes_its_option_from_a_run_file(plugin):
    (plugin / "run.toml").write_text(
        'plugins = ["vae_parts"]\n[objective]\nname = "weighted"\n[objective.weighted]\nscale = 0.5\n'
        "[model]\nz_dim = 3\nhidden = [16]\n"
    )
    printed = CliRunner().invoke(main, ["fit", "--config", "run.toml", "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert 'plugins = [\n    "vae_parts",\n]' in printed.output or 'plugins = ["vae_parts"]' in printed.output
    assert "[objective.weighted]\nscale = 0.5" in printed.output
    (plugin / "again.toml").write_text(printed.output)  # --print-config's output reads back to itself
    again = CliRunner().invoke(main, ["fit", "--config", "again.toml", "--print-config"])
    assert again.output == printed.output
    result = fit("--config", "run.toml", "--out", "o")
    assert result.exit_code == 0, result.output
    config = read_run_config(plugin / "o")
    assert config["elbo"] == "weighted" and config["objective_options"] == {"scale": 0.5}
    (record,) = records(plugin / "o")
    assert record["objective"] == "the ELBO with log p(x|z) weighted by 0.5"
    # the weighted objective is larger than the ELBO (log p(x|z) < 0 counts half): measured apart
    assert record["train_objective"] > record["train_elbo"]
    result = fit("--config", "run.toml", "--objective-option", "scale=x", "--out", "bad")
    assert result.exit_code != 0 and "objective.weighted.scale should be a number" in result.output
    assert not (plugin / "bad").exists()


def test_a_plugin_model_trains_evaluates_and_resumes_under_the_trust_rule(plugin):
    common = ["--model", "tiny-vae", "--model-option", "hidden=8", "--binarize", "static"]
    result = fit("--plugin", "vae_parts", *common, "--out", "m")
    assert result.exit_code == 0, result.output
    run = plugin / "m"
    assert read_run_config(run)["model"] == "tiny-vae"
    refused = CliRunner().invoke(main, ["evaluate", str(run), "--points", "20", "--k", "10", "--device", "cpu"])
    assert refused.exit_code == 1 and not (run / "evaluation.json").exists()
    assert refused.output.count("\n") == 1 and "--plugin vae_parts (or --trust-plugins" in refused.output
    ok = ["evaluate", str(run), "--points", "20", "--k", "30", "--device", "cpu", "--max-minutes", "0"]
    result = CliRunner().invoke(main, [*ok, "--plugin", "vae_parts"])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "evaluation.json").read_text())["summary"]
    assert (summary["n"], summary["k"]) == (20, 30) and summary["log_px"] >= summary["elbo"]
    result = CliRunner().invoke(main, [*ok, "--trust-plugins"])
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(main, ["fit", "--resume", str(run), "--epochs", "2", "--no-progress"])
    assert refused.exit_code == 1 and "--plugin vae_parts" in refused.output and len(records(run)) == 1
    result = CliRunner().invoke(main, ["fit", "--resume", str(run), "--epochs", "2", "--plugin", "vae_parts",
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in records(run)] == [1, 2]


def test_a_plugin_engine_runs_every_step(plugin):
    result = fit("--plugin", "vae_parts", "--engine", "counting", *SMALL, "--out", "e")
    assert result.exit_code == 0, result.output
    assert json.loads((plugin / "e" / "config.json").read_text())["resolved"]["engine"] == "counting"
    assert sys.modules["vae_parts"].CountingEngine.calls == 6  # ceil(1438 training rows of digits / 256)
    refused = fit("--engine", "countin", "--out", "x")  # (a name no plugin registered)
    assert refused.exit_code == 2 and "expected one of auto, eager, compiled, jit, cudagraph" in refused.output


BROKEN = {
    "raises": "raise RuntimeError('no GPU here')\n",
    "empty": "import math\n",
    "clash": "from pyrovae import register_prior\nfrom pyrovae.models import StandardNormalPrior\n"
    "register_prior('normal', StandardNormalPrior)\n",
    "missing": None,
}
SAID = {
    "raises": "--plugin raises could not be imported (RuntimeError: no GPU here)",
    "empty": "--plugin empty registered nothing",
    "clash": "--plugin clash: the prior 'normal' is registered already (by pyrovae, built in): choose another name",
    "missing": "--plugin missing could not be imported (ModuleNotFoundError: No module named 'missing')",
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_failing_plugin_is_refused_in_one_line_before_anything_is_written(registries, name):
    if BROKEN[name] is not None:
        (registries / f"{name}.py").write_text(BROKEN[name])
    for out in (["--out", "run"], []):  # a named run directory, and the runs/ folder of one without --out
        result = fit("--plugin", name, *out)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {SAID[name]}") and result.output.count("\n") == 1
        assert not (registries / "run").exists() and not (registries / "runs").exists()


def test_a_plugin_dataset_trains_evaluates_and_plots(plugin):
    result = fit("--plugin", "vae_parts", "--dataset", "stripes", *SMALL, "--out", "d")
    assert result.exit_code == 0, result.output
    assert "train=400 test=100" in result.output.splitlines()[0]
    config = read_run_config(plugin / "d")
    assert config["plugins"] == ["vae_parts"] and config["dataset"] == "stripes"
    evaluate = ["evaluate", "d", "--plugin", "vae_parts", "--points", "20", "--k", "10", "--device", "cpu"]
    result = CliRunner().invoke(main, evaluate)
    assert result.exit_code == 0, result.output
    assert json.loads((plugin / "d" / "evaluation.json").read_text())["summary"]["n"] == 20
    result = CliRunner().invoke(main, ["plots", "d", "--plugin", "vae_parts"])
    assert result.exit_code == 0, result.output
    assert (plugin / "d" / "latent.png").is_file()


def test_a_data_set_name_is_known_only_once_its_plugin_is_imported(registries):
    result = fit("--dataset", "stripes", *SMALL, "--out", "no")
    error = result.output.strip().splitlines()[-1]  # (click's usage error, as for any bad option value)
    assert result.exit_code == 2 and error.startswith("Error: Invalid value for '--dataset'") and "'stripes'" in error
    assert not (registries / "no").exists()
