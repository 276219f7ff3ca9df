"""A model class of the user's own, from a module outside the package: trained by pyrovae.fit,
evaluated by pyrovae.evaluate, saved and reloaded through the registry and its trust rule (a file
never makes pyrovae import the code it names)."""

import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from pyrovae import VAE, estimate_elbo, evaluate, fit, load_vae, save_checkpoint
from pyrovae.models import build_model, import_model_class
from pyrovae.train import FitOptions
from pyrovae.train.checkpoint import load_checkpoint

from .conftest import unique_name

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_model.py"


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """The example's LaplaceVAE as a module of the user's, importable by name from tmp_path."""
    name = unique_name("user_models")
    folder = tmp_path / "userpkg"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder / f"{name}.py")
    monkeypatch.syspath_prepend(str(folder))
    yield name
    sys.modules.pop(name, None)


def _trained(name, tmp_path):
    """The user's model built from its class path, trained two epochs; the module, test rows, checkpoint."""
    vae = build_model(f"{name}:LaplaceVAE", 6, {"z_dim": 2, "hidden": 16})
    module = sys.modules[name]
    x = module.make_data(400, 6, 2, seed=0)
    history = fit(vae, x[40:], FitOptions(epochs=2, batch_size=120, seed=0))
    return vae, module, x[:40], history, save_checkpoint(tmp_path / "checkpoint.pt", vae, history=history.epochs)


def test_fit_and_evaluate_a_model_of_yours(user_module, tmp_path):
    """fit trains it with the closed-form KL its Gaussian guide and N(0, I) prior have; evaluate's ELBO
    (the mean of k log weights per point) agrees with Pyro's TraceMeanField_ELBO (2000 particles, a
    smaller error) within 5 standard errors of the k = 200 draws, and the IWAE estimate is above it
    on every point (Jensen, exactly)."""
    vae, module, test, history, _ = _trained(user_module, tmp_path)
    assert type(vae).__name__ == "LaplaceVAE" and vae.kind == f"{user_module}:LaplaceVAE"
    assert history.kl_mode == {"z": "analytic"} and history.epochs[-1]["train_elbo"] < 0
    result = evaluate(vae, test, k=200, seed=1, keep_draws=test.shape[0])
    assert result.kl_analytic is None and result.discrete_dims is None and result.z_dim == 2
    assert bool((result.log_px >= result.elbo).all())
    se = (result.draws.log_weight.std(0) / math.sqrt(200)).pow(2).sum().sqrt() / test.shape[0]
    pyro_elbo = estimate_elbo(vae, test, num_particles=2000)
    assert abs(float(result.elbo.mean()) - pyro_elbo) < 5 * float(se)


def test_a_checkpoint_of_your_model_reloads_only_when_you_name_it(user_module, tmp_path):
    vae, module, test, _, path = _trained(user_module, tmp_path)
    recorded = f"{user_module}:LaplaceVAE"
    assert load_checkpoint(path)["vae"] == {"model": recorded, "x_dim": 6, "z_dim": 2, "hidden": 16}
    with pytest.raises(ValueError, match=f"trained with the model class {recorded}; pyrovae imports") as error:
        load_vae(path)
    assert "\n" not in str(error.value)
    expected = evaluate(vae, test, k=50, seed=2).log_px
    for named in ({"model": module.LaplaceVAE}, {"model": recorded}, {"trust_model": True}):
        loaded = load_vae(path, **named)
        assert type(loaded) is module.LaplaceVAE
        pairs = zip(loaded.state_dict().values(), vae.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
        assert torch.equal(evaluate(loaded, test, k=50, seed=2).log_px, expected)


@pytest.mark.parametrize(
    "named, message",
    [
        ("vae", "trained with the model class .*LaplaceVAE, but the model named is 'vae'"),
        (VAE, "but the model named is pyrovae.models.vae:VAE"),
        (torch.nn.Linear, "torch.nn.modules.linear:Linear is not a subclass of pyrovae.models.base.LatentVariable"),
        ("os:system", "os:system is not a subclass of .* \\(found a builtin_function_or_method\\): refused"),
    ],
)
def test_another_class_named_is_refused_in_one_line(user_module, tmp_path, named, message):
    *_, path = _trained(user_module, tmp_path)
    with pytest.raises(ValueError, match=message) as error:
        load_vae(path, model=named)
    assert "\n" not in str(error.value)


def test_a_checkpoint_naming_no_model_kind_imports_nothing(tmp_path, canary):
    """(A recorded class path is refused without naming: test_prior_spec.py's hostile checkpoints.)"""
    _, imported = canary
    path = save_checkpoint(tmp_path / "checkpoint.pt", VAE(4, z_dim=2, hidden_dims=(3,)))
    payload = torch.load(path, weights_only=True)
    payload["vae"]["model"] = "os.system('x')"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="holds a model of kind \"os.system\\('x'\\)\"; expected one of 'vae'"):
        load_vae(path, trust_model=True)
    assert not imported()


def test_build_model_refuses_in_one_line(user_module):
    assert type(import_model_class(f"{user_module}:LaplaceVAE")).__name__ == "ABCMeta"
    for name, options, message in [
        ("nope", {}, "model must be one of vae, hierarchical, linear-gaussian or a class of yours"),
        ("subprocess:Popen", {}, "is not a subclass of pyrovae.models.base.LatentVariableModel"),
        ("pyrovae.models.base:LatentVariableModel", {}, "is abstract \\(it does not define guide, hparams, model\\)"),
        (f"{user_module}:LaplaceVAE", {"depth": 3}, "cannot build the model .*depth=3.*keyword arguments"),
        (f"{user_module}:LaplaceVAE", {"z_dim": torch.ones(1)}, "must hold plain JSON values"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            build_model(name, 6, options)
        assert "\n" not in str(error.value)
    assert build_model("vae", 6, {"z_dim": 2}).hparams()["z_dim"] == 2


def test_a_prior_named_for_a_model_that_takes_none_is_refused(user_module, tmp_path):
    *_, path = _trained(user_module, tmp_path)
    with pytest.raises(ValueError, match=f"the model {user_module}:LaplaceVAE takes no prior option, but prior='mog'"):
        load_vae(path, model=f"{user_module}:LaplaceVAE", prior="mog")


def test_the_command_line_trains_evaluates_samples_plots_and_resumes_a_model_of_yours(user_module, tmp_path):
    from click.testing import CliRunner

    from pyrovae.cli import main
    from pyrovae.commands import read_metrics, read_run_config

    def cli(*args):
        return CliRunner().invoke(main, [str(a) for a in args])

    path, run = f"{user_module}:LaplaceVAE", tmp_path / "run"
    fast = ["--batch-size", "256", "--no-progress", "--device", "cpu"]
    result = cli("fit", "--model", path, "--model-option", "z_dim=3", "--model-option", "hidden=16", "--epochs", "1",
                 *fast, "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "likelihood=laplace" in result.output and "z_dim=3" in result.output
    recorded = read_run_config(run)
    assert (recorded["model"], recorded["model_options"], recorded["resolved"]["binarization"]) == (
        path, {"z_dim": 3, "hidden": 16}, "none"  # the data stay grey levels: the model's likelihood is not binary
    )  # fmt: skip
    # a run directory alone never makes pyrovae import the class it names
    refused = cli("evaluate", run, "--k", "10", "--points", "5", "--device", "cpu", "--no-progress")
    assert refused.exit_code == 1 and f"pass --model {path} or --trust-model" in refused.output
    for command in (
        ["evaluate", run, "--k", "10", "--points", "5", "--device", "cpu", "--no-progress", "--model", path],
        ["sample", run, "--model", path],
        ["plots", run, "--trust-model"],
        ["fit", "--resume", run, "--epochs", "2", "--model", path, "--no-progress"],
    ):
        result = cli(*command)
        assert result.exit_code == 0, (command, result.output)
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]
    for name in ("evaluation.json", "samples.png", "latent.png", "training_curves.png", "traversals.png"):
        assert (run / name).stat().st_size > 0, name
    # the built-in model's options do not reach a class of yours: refused, not ignored
    result = cli("fit", "--model", path, "--z-dim", "4", *fast, "--out", tmp_path / "other")
    assert result.exit_code == 1 and "--z-dim set the built-in model, not --model" in result.output
    assert not (tmp_path / "other").exists()
