"""The run spec: nested typed sections, TOML files read and printed (``fit --config`` /
``--print-config``), one-line errors naming the key, and the flat names of the command line."""

import dataclasses
import inspect
import subprocess
import sys

import pytest
import tomllib
from click.testing import CliRunner

import pyrovae
from pyrovae.cli import main
from pyrovae.config import FitConfig
from pyrovae.errors import ConfigError
from pyrovae.spec import FLAT_KEYS, IWAEOptions, KLOptions, RunSpec, read_spec, spec_to_toml

FAST = ["--z-dim", "3", "--hidden", "16", "--batch-size", "256", "--no-progress", "--device", "cpu"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_spec_owns_every_default_of_the_flat_config():
    assert RunSpec().to_flat() == FitConfig.defaults()
    assert set(FLAT_KEYS) == {f.name for f in dataclasses.fields(FitConfig)}
    signature = inspect.signature(pyrovae.load_dataset).parameters
    spec = RunSpec()
    assert (spec.data.dataset, spec.data.data_dir, spec.data.test_fraction) == (
        signature["name"].default,
        signature["data_dir"].default,
        signature["test_fraction"].default,
    )


def test_the_spec_module_imports_no_torch():
    code = "import sys, pyrovae.spec as s; s.spec_to_toml(s.RunSpec()); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


@pytest.mark.parametrize(
    "flat",
    [
        {},
        {"elbo": "iwae", "particles": 5, "iwae_grad": "standard", "z_dim": 3, "hidden_dims": (16, 8)},
        {"elbo": "infovae", "infovae_lambda": 10.0, "mmd_kernel": "rbf", "data_dir": "/data"},
        {"elbo": "trace", "beta": 0.5, "kl_warmup": 100, "prior": "mod:Cls", "prior_options": {"df": 3, "x": "a"}},
        {"model": "mine.models:LaplaceVAE", "model_options": {"z_dim": 3, "hidden": 16}},
    ],
    ids=["defaults", "iwae", "infovae", "trace", "user-model"],
)
def test_toml_round_trips_and_the_flat_form_keeps_every_value(flat):
    spec = RunSpec.from_flat(flat)
    again = RunSpec.from_dict(tomllib.loads(spec_to_toml(spec)))
    assert again == spec
    assert {name: again.to_flat()[name] for name in flat} == flat
    assert type(spec.objective.options) is {"iwae": IWAEOptions}.get(spec.objective.name, type(spec.objective.options))


def test_objective_options_live_in_their_objectives_section():
    spec = RunSpec.from_flat({"elbo": "trace", "beta": 0.25})
    assert spec.objective.options == KLOptions(beta=0.25)
    assert spec.to_dict()["objective"] == {"name": "trace", "particles": 1, "trace": {"beta": 0.25, "kl_warmup": 0,
                                                                                     "free_bits": 0.0}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"--beta is for --elbo meanfield or trace, not --elbo iwae"):
        RunSpec.from_flat({"elbo": "iwae", "beta": 2.0})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"trainin": {}}, "trainin is not a key of the spec: did you mean 'training'?"),
        ({"model": {"z_dimm": 3}}, "model.z_dimm is not a key of the spec: did you mean 'z_dim'?"),
        ({"model": {"prior": {"nam": "x"}}}, "model.prior.nam is not a key of the spec: did you mean 'name'?"),
        ({"training": {"lr": "fast"}}, "training.lr should be a number, found a string 'fast'"),
        ({"training": {"epochs": True}}, "training.epochs should be an integer, found a boolean True"),
        ({"training": {"epochs": 2.5}}, "training.epochs should be an integer, found a number 2.5"),
        ({"model": {"hidden": 400}}, "model.hidden should be a list of ints such as [400], found an integer"),
        ({"model": {"hidden": [400, "x"]}}, "model.hidden[1] should be an integer, found a string 'x'"),
        ({"data": 3}, "data should be a table (a [section]), found an integer"),
        ({"objective": {"name": "vae"}}, "objective.name should be one of meanfield, trace, iwae, infovae"),
        ({"objective": {"iwae": {"grad": "dreg"}}}, "objective.iwae is the section of objective 'iwae', but "
                                                    "objective.name is 'meanfield'"),
        ({"objective": {"name": "iwae", "iwae": {"gradd": "dreg"}}}, "objective.iwae.gradd is not a key"),
        ({"model": {"prior": {"options": [1]}}}, "model.prior.options should be a table of keys and values"),
    ],
)  # fmt: skip
def test_a_bad_key_or_type_is_one_error_naming_the_key(values, message):
    with pytest.raises(ConfigError) as caught:
        RunSpec.from_dict(values)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty: expected a TOML run spec"),
        (b"   \n# nothing\n", "is empty"),
        (b"[training]\nlr = ", "is not valid TOML"),
        (b"\xff\xfe[", "is not a UTF-8 text file"),
        (b"[training]\nepochs = 'many'\n", "training.epochs should be an integer, found a string 'many'"),
    ],
    ids=["empty", "blank", "truncated", "binary", "type"],
)
def test_a_bad_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "run.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="^--config .*run.toml") as caught:
        read_spec(path)
    assert message in str(caught.value)
    result = cli("fit", "--config", path, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output and message in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="no such file"):
        read_spec(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        read_spec(tmp_path)


def test_print_config_round_trips_through_config_and_the_command_line_overrides_it(tmp_path):
    printed = cli("fit", "--print-config", "--elbo", "iwae", "--particles", "4", "--iwae-grad", "standard", *FAST)
    assert printed.exit_code == 0, printed.output
    path = tmp_path / "run.toml"
    path.write_text(printed.output)
    spec = read_spec(path)
    assert (spec.objective.name, spec.objective.particles, spec.objective.options.grad) == ("iwae", 4, "standard")
    assert (spec.model.z_dim, spec.model.hidden, spec.training.device) == (3, [16], "cpu")
    again = cli("fit", "--config", path, "--print-config")
    assert again.exit_code == 0 and again.output == printed.output  # the same spec, byte for byte
    override = cli("fit", "--config", path, "--print-config", "--lr", "0.01", "--z-dim", "5")
    overridden = RunSpec.from_dict(tomllib.loads(override.output))
    assert (overridden.training.lr, overridden.model.z_dim, overridden.objective.particles) == (0.01, 5, 4)


def test_a_run_from_a_config_file_trains_and_records_the_files_options(tmp_path):
    spec = RunSpec.from_flat({"z_dim": 3, "hidden_dims": (16,), "batch_size": 256, "epochs": 1, "device": "cpu",
                              "elbo": "trace", "beta": 0.5, "out": str(tmp_path / "run")})  # fmt: skip
    path = tmp_path / "run.toml"
    path.write_text(spec_to_toml(spec))
    result = cli("fit", "--config", path, "--no-progress", "--seed", "3")
    assert result.exit_code == 0, result.output
    recorded = pyrovae.commands.read_run_config(tmp_path / "run")
    assert (recorded["elbo"], recorded["beta"], recorded["z_dim"], recorded["seed"]) == ("trace", 0.5, 3, 3)


def test_a_value_the_checks_refuse_names_the_files_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[training]\nlr = -1.0\n[objective]\nname = 'infovae'\n[objective.infovae]\nalpha = 2.0\n")
    result = cli("fit", "--config", path, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "lr (--lr) must be a finite number > 0" in result.output and f"({path}: training.lr)" in result.output
    path.write_text("[objective]\nname = 'infovae'\n[objective.infovae]\nalpha = 2.0\n")
    result = cli("fit", "--config", path, "--out", tmp_path / "out")
    assert result.exit_code == 1 and f"({path}: objective.infovae.alpha)" in result.output
    assert not (tmp_path / "out").exists()


def test_config_and_print_config_cannot_be_combined_with_resume(tmp_path):
    result = cli("fit", "--resume", tmp_path, "--print-config")
    assert result.exit_code == 2 and "--print-config cannot be combined with --resume" in result.output
