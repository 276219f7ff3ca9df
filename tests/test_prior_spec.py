"""A prior class of the user's own through the CLI and the Python API; a run directory never makes
pyrovae import the code it names (issue 12, part 3)."""

import json
import os
import re
import subprocess
import sys
import traceback

import pyro
import pytest
import torch
from click.testing import CliRunner

from pyrovae import VAE, FitConfig, load_vae, save_checkpoint
from pyrovae.cli import main
from pyrovae.commands import read_run_config
from pyrovae.errors import PriorError
from pyrovae.models import priors
from pyrovae.models.prior_spec import (
    check_prior,
    check_prior_name,
    import_prior_class,
    parse_prior_options,
    prior_for_training,
    rebuild_prior,
)
from pyrovae.train.checkpoint import load_checkpoint

from .conftest import unique_name

TINY = ["--epochs", "1", "--z-dim", "3", "--hidden", "16", "--batch-size", "256", "--no-progress", "--device", "cpu"]

PRIOR_MODULE = '''
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.models.priors import Prior


class LaplaceMixPrior(Prior):
    """An equal mixture of `components` Laplace products with learned locations: `components` shapes
    the parameters, so a prior rebuilt without the recorded options would not fit the checkpoint."""

    def __init__(self, z_dim, components=2, scale=1.0, learn_scale=False):
        super().__init__(z_dim)
        self.locs = nn.Parameter(torch.randn(components, z_dim))
        log_scale = torch.full((z_dim,), float(scale)).log()
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)
        self.register_buffer("logits", torch.zeros(components))

    def forward(self, batch_shape=()):
        comp = dist.Laplace(self.locs, self.log_scale.exp().expand_as(self.locs)).to_event(1)
        mix = dist.MixtureSameFamily(dist.Categorical(logits=self.logits), comp)
        return mix.expand(torch.Size(batch_shape)) if tuple(batch_shape) else mix


class NotAPrior(nn.Module):
    def forward(self, batch_shape=()):
        raise RuntimeError("never called")
'''


@pytest.fixture
def prior_module(tmp_path, monkeypatch):
    """A module of the user's, importable by name from tmp_path; its class path."""
    name = unique_name("user_priors")
    folder = tmp_path / "userpkg"
    folder.mkdir()
    (folder / f"{name}.py").write_text(PRIOR_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    yield name, folder
    sys.modules.pop(name, None)


# -- parsing and checking -------------------------------------------------------------------------
def test_prior_options_are_json_scalars_where_they_parse_and_text_otherwise():
    pairs = ["df=3", "scale=0.5", "learn=true", "off=false", "none=null", "name=student", 'quoted="3"', "list=[1,2]"]
    assert parse_prior_options(pairs) == {
        "df": 3, "scale": 0.5, "learn": True, "off": False, "none": None, "name": "student", "quoted": "3",
        "list": "[1,2]",
    }  # fmt: skip
    assert isinstance(parse_prior_options(["df=3"])["df"], int)


@pytest.mark.parametrize(
    "pairs, message",
    [
        (["df"], "expected a prior option as key=value"),
        (["=3"], "expected a prior option as key=value"),
        (["df=3", "df=4"], "prior option df is given twice"),
        (["z_dim=3"], "other than z_dim"),
        (["1x=2"], "must be a Python identifier"),
    ],
)
def test_bad_prior_options_are_refused(pairs, message):
    with pytest.raises(ValueError, match=message):
        parse_prior_options(pairs)


@pytest.mark.parametrize("name", ["normal", "mog", "pkg.mod:Cls", "mod:Outer.Inner", "_m:_C"])
def test_prior_names_accepted(name):
    assert check_prior_name(name) == name


@pytest.mark.parametrize("name", ["laplace", "os.system", "a:b:c", "mod:", ":Cls", "mod:Cls()", "", 3, None])
def test_prior_names_refused_without_importing(name):
    with pytest.raises(ValueError, match="prior must be one of normal, gaussian, mog, vamp, flow or a class"):
        check_prior_name(name)


def test_fit_config_checks_prior_and_options_without_importing(canary):
    name, imported = canary
    config = FitConfig(prior=f"{name}:Evil", prior_options={"df": 3})
    assert config.to_dict()["prior_options"] == {"df": 3} and not imported()
    with pytest.raises(ValueError, match="built-in prior 'normal', which takes none"):
        FitConfig(prior="normal", prior_options={"df": 3})
    with pytest.raises(ValueError, match="prior option df must be a number, true/false, null or text"):
        FitConfig(prior="m:C", prior_options={"df": [3]})


@pytest.mark.parametrize(
    "path, message",
    [
        ("os:system", r"os:system is not a subclass of pyrovae.models.priors.Prior \(found a builtin_function"),
        ("subprocess:Popen", r"is not a subclass of .*\(found the class subprocess:Popen\): refused"),
        ("torch.nn:Linear", r"is not a subclass of .*\(found the class torch.nn.modules.linear:Linear\)"),
        ("pyrovae.models.priors:Prior", r"is abstract \(it does not define forward\)"),
        ("no_such_module_xyz:Cls", "cannot import no_such_module_xyz .*ModuleNotFoundError"),
        ("os:NoSuchThing", "module os has no NoSuchThing"),
    ],
)
def test_only_prior_subclasses_are_accepted(path, message):
    with pytest.raises(ValueError, match=message) as error:
        import_prior_class(path)
    assert "\n" not in str(error.value)


def test_a_named_user_class_is_imported_and_checked(prior_module):
    name, _ = prior_module
    cls = import_prior_class(f"{name}:LaplaceMixPrior")
    assert cls.__name__ == "LaplaceMixPrior" and cls.__module__ == name
    with pytest.raises(ValueError, match=f"{name}:NotAPrior is not a subclass"):
        import_prior_class(f"{name}:NotAPrior")


# -- the Python API round trip ----------------------------------------------------------------------
def _trained_checkpoint(cls, tmp_path, **options):
    torch.manual_seed(0)
    vae = VAE(6, z_dim=2, hidden_dims=(5,), prior=cls(2, **options), prior_options=options).double()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))  # parameters no fresh build would have
    return vae, save_checkpoint(tmp_path / "checkpoint.pt", vae)


def _assert_same_model(a, b):
    assert type(a.prior) is type(b.prior)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_python_round_trip_with_the_class_an_instance_or_the_path(prior_module, tmp_path):
    name, _ = prior_module
    cls = import_prior_class(f"{name}:LaplaceMixPrior")
    vae, path = _trained_checkpoint(cls, tmp_path, components=3, learn_scale=True)
    payload = load_checkpoint(path)
    assert payload["vae"]["prior"] == f"{name}:LaplaceMixPrior"
    assert payload["vae"]["prior_options"] == {"components": 3, "learn_scale": True}
    # the class: built as cls(z_dim, components=3, learn_scale=True) from the recorded options
    _assert_same_model(vae, load_vae(path, prior=cls))
    _assert_same_model(vae, load_vae(path, prior=cls(2, components=3, learn_scale=True)))
    _assert_same_model(vae, load_vae(path, prior=f"{name}:LaplaceMixPrior"))
    _assert_same_model(vae, load_vae(path, trust_prior=True))
    x = torch.rand(4, 6, dtype=torch.float64)
    assert torch.equal(load_vae(path, prior=cls).reconstruct(x), vae.reconstruct(x))


def test_python_load_without_naming_the_class_or_with_another_is_refused(prior_module, tmp_path):
    name, _ = prior_module
    cls = import_prior_class(f"{name}:LaplaceMixPrior")
    _, path = _trained_checkpoint(cls, tmp_path, components=3)
    with pytest.raises(ValueError, match=f"trained with the prior class {name}:LaplaceMixPrior; pyrovae imports"):
        load_vae(path)
    with pytest.raises(ValueError, match="but the prior named is pyrovae.models.priors:StandardNormalPrior"):
        load_vae(path, prior=import_prior_class("pyrovae.models.priors:StandardNormalPrior"))
    with pytest.raises(ValueError, match="but the prior named is 'normal'"):
        load_vae(path, prior="normal")
    with pytest.raises(ValueError, match="is not a subclass of pyrovae.models.priors.Prior"):
        load_vae(path, prior=torch.nn.Linear)
    # an instance built with other options than the recorded ones does not fit the saved tensors
    with pytest.raises(ValueError, match="do not fit the model rebuilt from its settings .*size mismatch"):
        load_vae(path, prior=cls(2, components=4))


def test_a_built_in_prior_refuses_another_name(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", VAE(4, z_dim=2, hidden_dims=(3,), prior="gaussian"))
    assert load_vae(path, prior="gaussian").hparams()["prior"] == "gaussian"
    with pytest.raises(ValueError, match="has the built-in prior 'gaussian', but the prior named is 'mog'"):
        load_vae(path, prior="mog")


@pytest.mark.parametrize("field", ["prior", "model"])  # the prior's class, or the model's (test_custom_model.py)
@pytest.mark.parametrize("recorded", ["subprocess:Popen", "os:system", "CANARY"])
def test_a_hostile_checkpoint_imports_nothing(tmp_path, canary, recorded, field):
    name, imported = canary
    recorded = f"{name}:Evil" if recorded == "CANARY" else recorded
    path = save_checkpoint(tmp_path / "checkpoint.pt", VAE(4, z_dim=2, hidden_dims=(3,)))
    payload = torch.load(path, weights_only=True)
    payload["vae"][field] = recorded
    torch.save(payload, path)
    with pytest.raises(ValueError, match=f"trained with the {field} class {recorded}; pyrovae imports") as error:
        load_vae(path)
    assert "\n" not in str(error.value) and not imported()
    for not_a_path in ("os.system('x')", ["normal"]):
        with pytest.raises(ValueError, match="neither built in nor a class path"):
            rebuild_prior(not_a_path, 2)


# -- the command line -------------------------------------------------------------------------------
def _fit(out, *args):
    return CliRunner().invoke(main, ["fit", "--out", str(out), *TINY, *args])


def test_cli_round_trip_with_a_prior_of_yours(prior_module, tmp_path):
    name, _ = prior_module
    path = f"{name}:LaplaceMixPrior"
    out = tmp_path / "run"
    args = ["--prior", path, "--prior-option", "components=3", "--prior-option", "learn_scale=true"]
    result = _fit(out, *args)
    assert result.exit_code == 0, result.output
    assert "prior=LaplaceMixPrior" in result.output.splitlines()[0] and "kl=z:monte-carlo" in result.output
    config = read_run_config(out)
    assert config["prior"] == path and config["prior_options"] == {"components": 3, "learn_scale": True}
    trained = load_vae(out, prior=path)
    assert trained.prior.locs.shape == (3, 3) and isinstance(trained.prior.log_scale, torch.nn.Parameter)

    for command in (["evaluate", str(out), "--points", "20", "--k", "25", "--no-progress"], ["sample", str(out)],
                    ["plots", str(out)], ["fit", "--resume", str(out), "--epochs", "2", "--no-progress"]):  # fmt: skip
        refused = CliRunner().invoke(main, command)
        assert refused.exit_code == 1, (command, refused.output)
        assert refused.output.count("\n") == 1 and f"--prior {path} or --trust-prior" in refused.output
        done = CliRunner().invoke(main, [*command, "--prior", path])
        assert done.exit_code == 0, (command, done.output)
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["summary"]["n"] == 20 and evaluation["summary"]["log_px"] < 0
    assert (out / "samples.png").stat().st_size > 0 and (out / "latent.png").stat().st_size > 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert load_checkpoint(out)["resume"]["epoch"] == 3
    trusted = CliRunner().invoke(main, ["sample", str(out), "--trust-prior", "--out", str(tmp_path / "t.png")])
    assert trusted.exit_code == 0 and (tmp_path / "t.png").is_file()


def test_cli_refuses_a_class_that_is_not_a_prior_or_options_for_a_built_in(prior_module, tmp_path):
    name, _ = prior_module
    for args, message in [
        (["--prior", f"{name}:NotAPrior"], f"{name}:NotAPrior is not a subclass of pyrovae.models.priors.Prior"),
        (["--prior", "subprocess:Popen"], "subprocess:Popen is not a subclass"),
        (["--prior", "normal", "--prior-option", "df=3"], "built-in prior 'normal', which takes none"),
        (["--prior", f"{name}:LaplaceMixPrior", "--prior-option", "wings=2"], "cannot build the prior .*wings"),
        (["--trust-prior"], "--trust-prior is for --resume"),
    ]:
        out = tmp_path / unique_name("run")
        result = _fit(out, *args)
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert re.search(message, result.output), (args, result.output)
        assert not out.exists()
    result = _fit(tmp_path / "run", "--prior", "os.system")
    assert result.exit_code == 2 and "Invalid value for '--prior'" in result.output


@pytest.mark.parametrize("recorded", ["subprocess:Popen", "os:system", "CANARY"])
def test_a_hostile_run_directory_imports_nothing(tmp_path, canary, recorded):
    name, imported = canary
    recorded = f"{name}:Evil" if recorded == "CANARY" else recorded
    out = tmp_path / "run"
    assert _fit(out).exit_code == 0
    config = read_run_config(out)
    (out / "config.json").write_text(json.dumps({**config, "prior": recorded}))
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    payload["vae"]["prior"] = recorded
    payload["config"]["prior"] = recorded
    torch.save(payload, out / "checkpoint.pt")
    for command in (["evaluate", str(out), "--points", "5", "--k", "2"], ["sample", str(out)], ["plots", str(out)],
                    ["fit", "--resume", str(out), "--epochs", "2"]):  # fmt: skip
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1, (command, result.output)
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
        assert f"trained with the prior class {recorded}" in result.output
    assert not imported()
    # naming another class, or trusting a path that is not a Prior subclass, is refused too
    result = CliRunner().invoke(main, ["sample", str(out), "--prior", "pyrovae.models.priors:StandardNormalPrior"])
    assert result.exit_code == 1 and "but the prior named is" in result.output and not imported()
    if recorded != f"{name}:Evil":
        result = CliRunner().invoke(main, ["sample", str(out), "--trust-prior"])
        assert result.exit_code == 1 and "is not a subclass of pyrovae.models.priors.Prior" in result.output


def test_fit_with_a_prior_of_yours_in_a_real_subprocess(prior_module, tmp_path):
    name, folder = prior_module
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pyrovae", "fit", "--out", str(out), *TINY,
               "--prior", f"{name}:LaplaceMixPrior", "--prior-option", "components=2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert load_vae(out, prior=f"{name}:LaplaceMixPrior").prior.locs.shape == (2, 3)


def _user_module(tmp_path, monkeypatch, prefix, text):
    """A module of the user's holding ``text``, importable under a fresh name from a folder of
    tmp_path: its name and folder."""
    name = unique_name(prefix)
    folder = tmp_path / f"{prefix}_pkg"
    folder.mkdir()
    (folder / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(folder))
    return name, folder


# -- the contract a prior of yours must keep, checked before a run directory is created -----------
BAD_PRIOR_MODULE = '''
import pyro.distributions as dist
import torch

from pyrovae.models.priors import Prior


class Normalish(Prior):
    """A standard normal over z that keeps the contract; the classes below each break one rule."""

    def __init__(self, z_dim):
        super().__init__(z_dim)
        self.register_buffer("loc", torch.zeros(z_dim))

    def forward(self, batch_shape=()):
        shape = tuple(batch_shape) + (self.z_dim,)
        return dist.Normal(self.loc.expand(shape), torch.ones_like(self.loc).expand(shape)).to_event(1)


class RaisesInInit(Normalish):
    def __init__(self, z_dim):
        super().__init__(z_dim)
        raise RuntimeError("cannot reach the prior server")


class StudentT(Normalish):
    def __init__(self, z_dim, df=3.0):
        if df <= 2:
            raise ValueError("df must be > 2")
        super().__init__(z_dim)


class WrongEventSize(Normalish):
    def forward(self, batch_shape=()):
        shape = tuple(batch_shape) + (self.z_dim + 1,)
        return dist.Normal(torch.zeros(shape), torch.ones(shape)).to_event(1)


class WrongBatchShape(Normalish):
    def forward(self, batch_shape=()):
        return dist.Normal(self.loc, torch.ones_like(self.loc)).to_event(1).expand((7,))


class NoEventDim(Normalish):
    def forward(self, batch_shape=()):
        shape = tuple(batch_shape) + (self.z_dim,)
        return dist.Normal(self.loc.expand(shape), torch.ones_like(self.loc).expand(shape))


class ReturnsTensor(Normalish):
    def forward(self, batch_shape=()):
        return torch.zeros(tuple(batch_shape) + (self.z_dim,))


class NaNParameters(Normalish):
    def __init__(self, z_dim):
        super().__init__(z_dim)
        self.loc.fill_(float("nan"))


class Float64Sample(Normalish):
    def forward(self, batch_shape=()):
        zeros = torch.zeros(tuple(batch_shape) + (self.z_dim,), dtype=torch.float64)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


class ReadsValuesInInit(Normalish):
    """Builds anywhere but on the meta device, where its values cannot be read."""

    def __init__(self, z_dim):
        super().__init__(z_dim)
        self.total = float(self.loc.sum())
'''

HINT = "(run again with PYROVAE_TRACEBACK=1 for the traceback)"
SHAPE_RULE = (
    r"prior\(batch_shape\) must return a distribution over z of that batch shape and of event shape "
    r"\(z_dim,\) = \(3,\)$"
)
CONTRACT = r"the prior {m}:{cls} breaks the Prior contract: "
# class, --prior-option arguments, the line (a regular expression; {m}: the module, {cls}: the class),
# whether it chains the user's exception (and ends with HINT)
BAD_PRIORS = {
    "init-raises": (
        "RaisesInInit", [],
        r"cannot build the prior {m}:{cls}\(z_dim=3\): its constructor raised RuntimeError: cannot reach the prior "
        r"server; pyrovae builds a prior class as Class\(z_dim, \*\*options\), so it must build for the "
        r"--prior-option values given$",
        True,
    ),
    "option-rejected": (
        "StudentT", ["--prior-option", "df=1"],
        r"cannot build the prior {m}:{cls}\(z_dim=3, df=1\): its constructor raised ValueError: df must be > 2; "
        r"pyrovae builds a prior class as Class\(z_dim, \*\*options\), so it must build for the --prior-option "
        r"values given$",
        True,
    ),
    "event-size": (
        "WrongEventSize", [],
        CONTRACT + r"asked for batch shape \(2,\), it returned a distribution of event shape \(4,\); " + SHAPE_RULE,
        False,
    ),
    "batch-shape": (
        "WrongBatchShape", [],
        CONTRACT + r"asked for batch shape \(2,\), it returned a distribution of batch shape \(7,\); " + SHAPE_RULE,
        False,
    ),
    "no-event-dim": (
        "NoEventDim", [],
        CONTRACT + r"asked for batch shape \(2,\), it returned a distribution of event shape \(\): it has no event "
        r"dimension \(end it with .to_event\(1\)\); " + SHAPE_RULE,
        False,
    ),
    "returns-tensor": (
        "ReturnsTensor", [],
        CONTRACT + r"prior\(batch_shape=\(2,\)\) returned a Tensor, not a distribution; " + SHAPE_RULE,
        False,
    ),
    # Pyro's validation (on for the command line) refuses the NaN location as the distribution is made
    "nan-parameters": (
        "NaNParameters", [],
        CONTRACT + r"prior\(batch_shape=\(2,\)\) raised ValueError: Expected parameter loc .* but found invalid "
        r"values: tensor\(\[\[nan, nan, nan\], \[nan, nan, nan\]\]\); prior\(batch_shape\) must build its "
        r"distribution without raising, from finite, valid parameters$",
        True,
    ),
}  # fmt: skip


@pytest.fixture
def bad_priors(tmp_path, monkeypatch):
    """The module of priors above, importable by name from tmp_path; its name."""
    name, _ = _user_module(tmp_path, monkeypatch, "bad_priors", BAD_PRIOR_MODULE)
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("cls, args, message, chained", BAD_PRIORS.values(), ids=BAD_PRIORS.keys())
def test_fit_refuses_a_prior_that_breaks_the_contract_in_one_line_before_writing(
    bad_priors, tmp_path, cls, args, message, chained
):
    # --out inside a folder that does not exist: a run directory made and removed again would leave it
    parent = tmp_path / "runs"
    result = _fit(parent / "run", "--prior", f"{bad_priors}:{cls}", *args)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output
    line = result.output.removeprefix("Error: ").removesuffix("\n")
    assert line.endswith(f" {HINT}") == chained, line
    assert re.match(message.format(m=bad_priors, cls=cls), line.removesuffix(f" {HINT}")), line
    assert not parent.exists()


def test_the_traceback_of_a_prior_of_yours_is_shown_on_demand(bad_priors, tmp_path):
    command = ["fit", "--out", str(tmp_path / "run"), *TINY, "--prior", f"{bad_priors}:RaisesInInit"]
    result = CliRunner().invoke(main, command, env={"PYROVAE_TRACEBACK": "1"})
    # raised, not turned into one line, and chained to the user's exception, raised in their module
    assert result.exit_code == 1 and isinstance(result.exception, PriorError), result.output
    cause = result.exception.__cause__
    assert isinstance(cause, RuntimeError) and str(cause) == "cannot reach the prior server"
    assert traceback.extract_tb(cause.__traceback__)[-1].filename.endswith(f"{bad_priors}.py")
    assert not (tmp_path / "run").exists()


def test_check_prior_refuses_a_non_finite_log_prob_and_a_stray_dtype(bad_priors):
    classes = sys.modules[import_prior_class(f"{bad_priors}:Normalish").__module__]
    with pyro.validation_enabled(False):  # without validation, the NaN location reaches log_prob
        with pytest.raises(PriorError, match=r"log_prob of its own sample is \[nan, nan\]; the log-density of a "):
            check_prior(classes.NaNParameters(3), 3)
    stray = r"sample has dtype torch.float64 on cpu, its parameters and buffers torch.float32 on cpu; make every "
    with pytest.raises(PriorError, match=stray + "tensor of the distribution from the prior's buffers"):
        check_prior(classes.Float64Sample(3), 3)


def test_a_checked_prior_leaves_the_random_numbers_of_training_as_they_were(bad_priors):
    path = f"{bad_priors}:Normalish"
    state = torch.get_rng_state()
    assert isinstance(prior_for_training(path, 3), import_prior_class(path))
    assert torch.equal(torch.get_rng_state(), state)


def test_a_prior_that_cannot_be_built_on_the_meta_device_is_not_refused_for_it(bad_priors):
    # pyrovae counts parameters on the meta device (pyrovae.memory.parameter_count), where values cannot be
    # read: a failure there says only that the prior cannot be counted; the real build is checked
    path = f"{bad_priors}:ReadsValuesInInit"
    with torch.device("meta"), pytest.raises(NotImplementedError, match="cannot be built on the meta device"):
        prior_for_training(path, 3)
    assert prior_for_training(path, 3).total == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: priors.StandardNormalPrior(4),
        lambda: priors.LearnedGaussianPrior(4),
        lambda: priors.MixtureOfGaussiansPrior(4, 3),
        lambda: priors.FlowPrior(4),
    ],
    ids=["normal", "gaussian", "mog", "flow"],
)
def test_the_built_in_priors_keep_the_contract_they_ask_of_yours(make):
    prior = make()
    assert check_prior(prior, 4) is prior
