"""``pyrovae export`` and ``pyrovae.load_pretrained``: the folder (safetensors + JSON, read back with
the libraries' own readers), identical outputs and log p(x) to the run's checkpoint, the commands on
the folder, huggingface_hub's conventions, and every bad folder or --out failing in one line with
nothing half-written."""

import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import pyrovae
from pyrovae.cli import main
from pyrovae.commands import evaluate_run, read_run_config
from pyrovae.errors import CheckpointError, ConfigError, DependencyError, PriorError, RunDirectoryError, RunFileError

from .conftest import unique_name
from .test_prior_spec import PRIOR_MODULE

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--epochs",
    "1",
    "--z-dim",
    "3",
    "--hidden",
    "16",
    "--batch-size",
    "256",
    "--no-progress",
    "--seed",
    "2",
    "--device",
    "cpu",
]
KINDS = {"mlp": [], "conv": ["--arch", "conv", "--channels", "4,8"], "two-level": ["--latents", "2"]}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *parts):
    """A refused command: exit 1, one line of output, no traceback, holding every part."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    for part in parts:
        assert part in result.output, (part, result.output)
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished one-epoch digits run of each kind, with an evaluation.json, and its export."""
    made = {}
    for kind, options in KINDS.items():
        run = tmp_path_factory.mktemp(kind) / "run"
        result = cli("fit", *FAST, *options, "--device", "cpu", "--out", run)
        assert result.exit_code == 0, result.output
        result = cli("evaluate", run, "--k", "8", "--points", "30", "--device", "cpu", "--no-progress")
        assert result.exit_code == 0, result.output
        exported = run.parent / "exported"
        result = cli("export", run, "--out", exported)
        assert result.exit_code == 0 and result.output == f"wrote {exported}\n", result.output
        made[kind] = run, exported
    return made


def _same_outputs(a, b):
    """Identical parameters, encoder and decoder outputs (bit for bit) of two models."""
    assert type(a) is type(b) and a.hparams() == b.hparams()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) and sa[k].dtype == sb[k].dtype for k in sa)
    x = torch.rand(5, a.x_dim, generator=torch.Generator().manual_seed(1))
    z = torch.randn(5, a.z_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for left, right in zip(a.encoder(x), b.encoder(x), strict=True):
            assert torch.equal(left, right)
        assert torch.equal(a.decoder(z), b.decoder(z))


@pytest.mark.parametrize("kind", list(KINDS))
def test_export_gives_identical_outputs_and_log_px(runs, kind, tmp_path):
    run, exported = runs[kind]
    _same_outputs(pyrovae.load_vae(run), pyrovae.load_pretrained(exported))
    run, folder = tmp_path / "run", tmp_path / "copy"  # (evaluate writes into them)
    shutil.copytree(runs[kind][0], run)
    shutil.copytree(exported, folder)
    options = dict(k=8, n=30, seed=5, device="cpu", log=None, progress=False)
    from_run, from_folder = evaluate_run(run, **options), evaluate_run(folder, **options)
    assert torch.equal(from_run.log_px, from_folder.log_px) and torch.equal(from_run.elbo, from_folder.elbo)
    written = json.loads((folder / "evaluation.json").read_text())
    assert written["dataset"] == "digits" and written["binarization"] == "dynamic"
    assert written["per_point"]["log_px"] == from_run.log_px.tolist()


def test_the_folder_holds_json_and_safetensors_only(runs):
    run, exported = runs["mlp"]
    names = ["README.md", "config.json", "metrics.jsonl", "model.safetensors"]
    assert sorted(p.name for p in exported.iterdir()) == names
    checkpoint = pyrovae.load_checkpoint(run)
    with safe_open(str(exported / "model.safetensors"), framework="pt") as f:  # safetensors' own reader
        assert set(f.keys()) == set(checkpoint["model"])
        assert all(torch.equal(f.get_tensor(k), checkpoint["model"][k]) for k in f.keys())
        assert f.metadata()["pyrovae"] == pyrovae.__version__
    config = json.loads((exported / "config.json").read_text())
    hparams = {k: v for k, v in checkpoint["vae"].items() if k != "model"}
    assert {k: v for k, v in config.items() if k != "pyrovae"} == hparams  # the constructor's arguments, on top
    meta = config["pyrovae"]
    assert meta["format"] == "pyrovae-pretrained" and meta["version"] == pyrovae.__version__
    assert (meta["model"], meta["dtype"], meta["x_dim"], meta["z_dim"]) == ("vae", "float32", 64, 3)
    assert (meta["likelihood"], meta["prior"], meta["image_shape"]) == ("bernoulli", "normal", [8, 8])
    assert meta["data"] == {"dataset": "digits", "binarization": "dynamic"}
    assert meta["run"] == read_run_config(run)  # (the run's settings, as pyrovae reads them back)
    for path in exported.iterdir():  # no pickle anywhere (a pickle starts with the PROTO opcode 0x80)
        assert not path.read_bytes().startswith(b"\x80")
    assert (exported / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()


def test_the_model_card_quotes_the_runs_numbers(runs):
    run, exported = runs["mlp"]
    card = (exported / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: pyrovae\n")
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    summary = json.loads((run / "evaluation.json").read_text())["summary"]
    assert f"test ELBO {last['test_elbo']:.3f}" in card and f"train ELBO {last['train_elbo']:.3f}" in card
    assert f"log p(x) {summary['log_px']:.3f} ± {summary['log_px_se']:.3f}" in card
    assert "data set: digits, binarization dynamic" in card and "- meanfield (particles 1" in card


def test_sample_and_plots_take_the_folder(runs, tmp_path):
    _, exported = runs["conv"]
    folder = tmp_path / "copy"
    shutil.copytree(exported, folder)
    result = cli("sample", folder, "--samples", "4")
    assert result.exit_code == 0 and (folder / "samples.png").stat().st_size > 0, result.output
    result = cli("plots", folder)
    assert result.exit_code == 0, result.output
    pictures = ("reconstructions.png", "latent.png", "training_curves.png")
    assert all((folder / name).stat().st_size > 0 for name in pictures)


def test_export_from_python_and_evaluate_on_a_named_data_set(tmp_path):
    vae = pyrovae.VAE(64, z_dim=2, hidden_dims=(8,), image_shape=(8, 8))
    out = pyrovae.export(vae, tmp_path / "model")
    _same_outputs(vae, pyrovae.load_pretrained(out))
    assert "pyrovae.load_pretrained" in (out / "README.md").read_text() and not (out / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match="records no data set .*: pass --dataset"):
        evaluate_run(out, k=4, n=10, log=None, progress=False)
    result = evaluate_run(out, dataset="digits", k=4, n=10, log=None, progress=False)
    assert result.log_px.shape == (10,) and bool(torch.isfinite(result.log_px).all())
    assert cli("plots", out, "--dataset", "digits").exit_code == 0 and not (out / "training_curves.png").exists()
    again = pyrovae.save_pretrained(vae, tmp_path / "saved")
    _same_outputs(vae, pyrovae.load_pretrained(again))


def test_a_float64_model_keeps_its_dtype(tmp_path, float64):
    vae = pyrovae.VAE(6, z_dim=2, hidden_dims=(4,))
    loaded = pyrovae.load_pretrained(pyrovae.export(vae, tmp_path / "m"))
    assert loaded.dtype == torch.float64
    _same_outputs(vae, loaded)


# -- huggingface_hub --------------------------------------------------------------------------------
def test_huggingface_hub_loads_and_saves_the_folder(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import PyTorchModelHubMixin

    from pyrovae.pretrained.hub import PretrainedModel

    run, exported = runs["two-level"]
    loaded = PretrainedModel.from_pretrained(exported)  # the mixin's from_pretrained on a local folder
    _same_outputs(pyrovae.load_vae(run), loaded.model)
    PretrainedModel(loaded.model).save_pretrained(tmp_path / "saved")
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in (tmp_path / "saved").iterdir()}
    _same_outputs(loaded.model, pyrovae.load_pretrained(tmp_path / "saved"))

    class HubVAE(pyrovae.VAE, PyTorchModelHubMixin):  # the convention: config.json = the constructor's arguments
        kind = "vae"

    run, exported = runs["mlp"]
    plain, reference = HubVAE.from_pretrained(exported), pyrovae.load_vae(run)
    assert plain.hparams() == reference.hparams() and plain.state_dict().keys() == reference.state_dict().keys()
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in reference.state_dict().items())


# -- failing well ------------------------------------------------------------------------------------
def _copy(runs, kind, tmp_path):
    folder = tmp_path / kind
    shutil.copytree(runs[kind][1], folder)
    return folder


def test_weights_of_another_architecture_are_named(runs, tmp_path):
    folder = _copy(runs, "mlp", tmp_path)
    shutil.copy(runs["two-level"][1] / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"do not fit the model .*\(missing .*; unexpected .*conditional_prior"):
        pyrovae.load_pretrained(folder)
    one_line_error(cli("sample", folder), "do not fit", "model.safetensors", "unexpected")
    conv = _copy(runs, "conv", tmp_path)
    shutil.copy(folder / "config.json", tmp_path / "mlp.json")
    shutil.copy(runs["mlp"][1] / "model.safetensors", conv / "model.safetensors")
    one_line_error(cli("evaluate", conv, "--k", "2", "--points", "2"), "do not fit", "(missing decoder.")


def test_a_truncated_weights_file_is_one_line(runs, tmp_path):
    folder = _copy(runs, "mlp", tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        pyrovae.load_pretrained(folder)
    one_line_error(cli("evaluate", folder, "--k", "2", "--points", "2"), "cannot read", "export the run again")
    assert not (folder / "evaluation.json").exists()


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_a_missing_file_is_one_line(runs, tmp_path, missing):
    folder = _copy(runs, "mlp", tmp_path)
    (folder / missing).unlink()
    with pytest.raises(RunFileError, match=f"no {missing} in {folder}"):
        pyrovae.load_pretrained(folder)
    one_line_error(cli("sample", folder), f"no {missing}")


def _damage(config, how):
    if how == "not JSON":
        return '{"x_dim": 64,'
    if how == "no marker":
        config.pop("pyrovae")
    elif how == "newer format":
        config["pyrovae"]["format_version"] = 99
    elif how == "bad setting":
        config["z_dim"] = "three"
    elif how == "bad run settings":
        config["pyrovae"]["run"]["epochs"] = "many"
    return json.dumps(config)


@pytest.mark.parametrize(
    "how, said",
    [
        ("not JSON", "is not valid JSON"),
        ("no marker", "is not the config of an exported pyrovae model"),
        ("newer format", "format_version is 99, this pyrovae reads up to 1: upgrade pyrovae"),
        ("bad setting", "z_dim must be a positive int, got 'three'"),
        ("bad run settings", "field 'epochs' should be int, found str 'many'"),
    ],
)
def test_a_damaged_config_is_one_line(runs, tmp_path, how, said):
    folder = _copy(runs, "mlp", tmp_path)
    (folder / "config.json").write_text(_damage(json.loads((folder / "config.json").read_text()), how))
    one_line_error(cli("evaluate", folder, "--k", "2", "--points", "2"), said)
    assert not (folder / "evaluation.json").exists()


@pytest.mark.parametrize("field", ["prior", "model"])
def test_a_config_naming_code_imports_nothing_unless_named(runs, tmp_path, canary, field):
    name, imported = canary
    folder = _copy(runs, "mlp", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    if field == "prior":
        config["prior"] = f"{name}:Evil"
    else:
        config["pyrovae"]["model"] = f"{name}:Evil"
    (folder / "config.json").write_text(json.dumps(config))
    for command in (["sample", folder], ["evaluate", folder, "--k", "2", "--points", "2"], ["plots", folder]):
        one_line_error(cli(*command), f"{name}:Evil", f"--trust-{field}")
    with pytest.raises((PriorError, ConfigError), match="imports a class that a run names only when you name it"):
        pyrovae.load_pretrained(folder)
    assert not imported()
    if field == "prior":  # named again: imported, built, and the weights fit (Evil is a standard normal)
        assert isinstance(pyrovae.load_pretrained(folder, prior=f"{name}:Evil").prior, torch.nn.Module)
        assert imported()
    else:  # Evil is no model: refused once imported, never called
        with pytest.raises(ConfigError, match="is not a subclass of .*LatentVariableModel"):
            pyrovae.load_pretrained(folder, trust_model=True)


def test_a_prior_of_yours_exports_and_loads_when_named(tmp_path, monkeypatch):
    name = unique_name("export_priors")
    (tmp_path / f"{name}.py").write_text(PRIOR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = f"{name}:LaplaceMixPrior"
    run, out = tmp_path / "run", tmp_path / "exported"
    result = cli("fit", *FAST, "--prior", path, "--prior-option", "components=3", "--device", "cpu", "--out", run)
    assert result.exit_code == 0, result.output
    assert cli("export", run, "--out", out).exit_code == 0  # copies the weights: imports nothing
    one_line_error(cli("sample", out), f"--prior {path} or --trust-prior")
    _same_outputs(pyrovae.load_vae(run, prior=path), pyrovae.load_pretrained(out, prior=path))
    options = dict(k=8, n=20, seed=1, device="cpu", log=None, progress=False, prior=path)
    assert torch.equal(evaluate_run(run, **options).log_px, evaluate_run(out, **options).log_px)
    sys.modules.pop(name, None)


def test_an_out_that_exists_is_refused_unless_overwrite(runs, tmp_path):
    run, exported = runs["mlp"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    one_line_error(cli("export", run, "--out", out), "already exists", "--overwrite")
    one_line_error(cli("export", run, "--out", out, "--overwrite"), "holds no exported model", "not removed")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    replaced = tmp_path / "replaced"
    shutil.copytree(runs["conv"][1], replaced)
    assert cli("export", run, "--out", replaced, "--overwrite").exit_code == 0
    _same_outputs(pyrovae.load_vae(run), pyrovae.load_pretrained(replaced))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "replaced"]  # no staging folder left behind
    one_line_error(cli("export", run, "--out", exported / "config.json"), "is not a folder")


def test_an_overwrite_that_fails_at_the_last_step_keeps_the_old_folder(runs, tmp_path, monkeypatch):
    run, _ = runs["mlp"]
    old = tmp_path / "old"
    shutil.copytree(runs["conv"][1], old)
    before = (old / "model.safetensors").read_bytes()

    def refuse(source, target):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "rename", refuse)
    one_line_error(cli("export", run, "--out", old, "--overwrite"), f"cannot write {old}", "is unchanged")
    assert (old / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_an_unwritable_out_writes_nothing(runs, tmp_path):
    run, _ = runs["mlp"]
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    one_line_error(cli("export", run, "--out", blocker / "model"), f"{blocker} is a file, not a folder")
    with pytest.raises(RunDirectoryError):
        pyrovae.export(run, blocker / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("error", [errno.EROFS, errno.ENOSPC])
def test_a_read_only_or_full_disk_leaves_nothing(runs, tmp_path, monkeypatch, error):
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    target = (tempfile, "mkdtemp") if error == errno.EROFS else (safetensors.torch, "save_file")
    monkeypatch.setattr(*target, refuse)
    said = "read-only file system (EROFS)" if error == errno.EROFS else "no space left on device (ENOSPC)"
    one_line_error(cli("export", runs["mlp"][0], "--out", tmp_path / "m"), "cannot", said)
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_a_checkpoint_or_an_export_of_an_export_is_refused(runs, tmp_path):
    run, exported = runs["mlp"]
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    (damaged / "checkpoint.pt").unlink()
    one_line_error(cli("export", damaged, "--out", tmp_path / "a"), "no checkpoint")
    one_line_error(cli("export", exported, "--out", tmp_path / "b"), "already an exported model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_safetensors_missing_is_one_line(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(DependencyError, match=r'pip install "pyrovae\[export\]"'):
        pyrovae.load_pretrained(runs["mlp"][1])
    one_line_error(cli("export", runs["mlp"][0], "--out", tmp_path / "m"), "safetensors", "pyrovae[export]")
    assert not (tmp_path / "m").exists()


def test_a_model_class_of_yours_exports_and_loads_when_named(tmp_path, monkeypatch):
    name = unique_name("export_models")
    shutil.copy(ROOT / "examples" / "custom_model.py", tmp_path / f"{name}.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = f"{name}:LaplaceVAE"
    run, out = tmp_path / "run", tmp_path / "exported"
    result = cli("fit", "--model", path, "--model-option", "z_dim=3", "--model-option", "hidden=16", "--epochs", "1",
                 "--batch-size", "256", "--no-progress", "--device", "cpu", "--out", run)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert cli("export", run, "--out", out).exit_code == 0  # copies the weights: imports nothing
    meta = json.loads((out / "config.json").read_text())["pyrovae"]
    assert (meta["model"], meta["x_dim"], meta["z_dim"], meta["image_shape"]) == (path, 64, 3, [8, 8])
    assert "likelihood" not in meta and "prior" not in meta  # the run's options for built-in models are not its
    one_line_error(cli("evaluate", out, "--k", "4", "--points", "4"), f"pass --model {path} or --trust-model")
    _same_outputs(pyrovae.load_vae(run, model=path), pyrovae.load_pretrained(out, model=path))
    options = dict(k=8, n=20, seed=1, device="cpu", log=None, progress=False, model=path)
    assert torch.equal(evaluate_run(run, **options).log_px, evaluate_run(out, **options).log_px)
    assert cli("sample", out, "--trust-model").exit_code == 0
    sys.modules.pop(name, None)


def test_huggingface_hub_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.delitem(sys.modules, "pyrovae.pretrained.hub", raising=False)
    with pytest.raises(DependencyError, match=r'huggingface_hub cannot be imported .*pip install "pyrovae\[hub\]"'):
        import pyrovae.pretrained.hub  # noqa: F401
