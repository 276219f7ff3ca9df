"""``pyrovae export --onnx``: the encoder and decoder as ONNX graphs, run by onnxruntime and compared
with torch to 1e-5 at several batch sizes; a model that cannot be exported is refused in one line,
with nothing written."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import pyrovae
from pyrovae.cli import main
from pyrovae.errors import DependencyError, ModelError
from pyrovae.models import HierarchicalVAE, LatentVariableModel

from .conftest import unique_name

IMAGE = dict(image_shape=(8, 8), hidden_dims=(16,), z_dim=3)
MODELS = {
    "mlp-bernoulli": lambda: pyrovae.VAE(64, **IMAGE),
    "conv-gaussian": lambda: pyrovae.VAE(
        64, **IMAGE, arch="conv", channels=(4, 8), likelihood="gaussian", learn_sigma=True
    ),
    "two-level-logistic": lambda: HierarchicalVAE(64, **IMAGE, likelihood="discretized-logistic"),
}


def _session(path):
    onnx.checker.check_model(str(path))
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _matches(model, folder):
    """onnxruntime's encoder and decoder outputs equal torch's to 1e-5, for batches of 1 and 7."""
    encoder, decoder = _session(folder / "encoder.onnx"), _session(folder / "decoder.onnx")

    def names(values):
        return [value.name for value in values]

    assert names(encoder.get_inputs()) == ["x"] and names(encoder.get_outputs()) == ["loc", "scale"]
    assert names(decoder.get_inputs()) == ["z"] and names(decoder.get_outputs()) == ["params"]
    assert isinstance(encoder.get_inputs()[0].shape[0], str)  # the batch axis is dynamic
    assert isinstance(decoder.get_inputs()[0].shape[0], str)
    generator = torch.Generator().manual_seed(3)
    for batch in (1, 7):
        x = torch.rand(batch, model.x_dim, generator=generator)
        z = torch.randn(batch, model.z_dim, generator=generator)
        with torch.no_grad():
            loc, scale = model.encoder(x)
            params = model.decoder(z)
        got_loc, got_scale = encoder.run(None, {"x": x.numpy()})
        (got_params,) = decoder.run(None, {"z": z.numpy()})
        assert got_params.shape == (batch, model.likelihood.params_per_dim * model.x_dim)
        np.testing.assert_allclose(got_loc, loc.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_scale, scale.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_params, params.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(MODELS))
def test_onnx_graphs_match_torch(kind, tmp_path):
    model = MODELS[kind]()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    random_state = torch.get_rng_state()
    out = pyrovae.export(model, tmp_path / "model", onnx=True)
    assert torch.equal(torch.get_rng_state(), random_state) and model.training  # left as it was
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert {"encoder.onnx", "decoder.onnx", "model.safetensors", "config.json"} <= {p.name for p in out.iterdir()}
    _matches(model, out)
    _matches(pyrovae.load_pretrained(out), out)


def test_cli_export_onnx_of_a_run(tmp_path):
    run, out = tmp_path / "run", tmp_path / "exported"
    fast = ["--epochs", "1", "--z-dim", "2", "--hidden", "8", "--batch-size", "256", "--no-progress", "--device", "cpu"]
    assert CliRunner().invoke(main, ["fit", *fast, "--out", str(run)]).exit_code == 0
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(out), "--onnx"])
    assert result.exit_code == 0 and result.output == f"wrote {out}\n", result.output  # the exporter kept quiet
    _matches(pyrovae.load_vae(run), out)
    assert json.loads((out / "config.json").read_text())["pyrovae"]["latent_sites"] == ["z"]


class Branchy(nn.Module):
    """A decoder whose path depends on the values of its input: ONNX cannot hold it as one graph."""

    def __init__(self, z_dim, x_dim):
        super().__init__()
        self.linear = nn.Linear(z_dim, x_dim)

    def forward(self, z):
        if z.sum() > 0:
            return self.linear(z)
        return -self.linear(z)


class BranchyVAE(pyrovae.VAE):
    def __init__(self, x_dim, **options):
        super().__init__(x_dim, **options)
        self.decoder = Branchy(self.z_dim, x_dim)


class NoNetworks(LatentVariableModel):
    def __init__(self, x_dim=4, z_dim=2):
        super().__init__()
        self.x_dim, self.z_dim = x_dim, z_dim
        self.weight = nn.Parameter(torch.zeros(z_dim, x_dim))

    def hparams(self):
        return {"x_dim": self.x_dim, "z_dim": self.z_dim}

    def model(self, x, num_data=None):
        raise NotImplementedError

    def guide(self, x, num_data=None):
        raise NotImplementedError


def test_data_dependent_control_flow_is_refused_with_nothing_written(tmp_path):
    model = BranchyVAE(6, z_dim=2, hidden_dims=(4,))
    with pytest.raises(ModelError) as refused:
        pyrovae.export(model, tmp_path / "model", onnx=True)
    said = str(refused.value)
    assert said.startswith(f"cannot export the decoder of the model {BranchyVAE.kind} to ONNX: ")
    assert "data-dependent" in said and "test_onnx.py" in said and "if z.sum() > 0" in said
    assert "\n" not in said and list(tmp_path.iterdir()) == []


def test_a_model_without_encoder_and_decoder_is_refused(tmp_path):
    with pytest.raises(ModelError, match=f"cannot export the model {NoNetworks.kind} to ONNX: it has no encoder or"):
        pyrovae.export(NoNetworks(), tmp_path / "model", onnx=True)
    assert list(tmp_path.iterdir()) == []
    plain = pyrovae.export(NoNetworks(), tmp_path / "plain")  # without --onnx it exports
    assert torch.equal(pyrovae.load_pretrained(plain, model=NoNetworks).weight, torch.zeros(2, 4))


def test_onnx_libraries_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(DependencyError, match=r'onnxscript cannot be imported .*pip install "pyrovae\[onnx\]"'):
        pyrovae.export(pyrovae.VAE(4, z_dim=2, hidden_dims=(4,)), tmp_path / "model", onnx=True)
    assert list(tmp_path.iterdir()) == []


def test_onnx_of_a_run_with_a_model_class_of_yours_needs_it_named(tmp_path, monkeypatch):
    name = unique_name("onnx_models")
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "custom_model.py", tmp_path / f"{name}.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    path, run, out = f"{name}:LaplaceVAE", tmp_path / "run", tmp_path / "exported"
    fast = ["--epochs", "1", "--batch-size", "256", "--no-progress", "--device", "cpu"]
    result = CliRunner().invoke(main, ["fit", "--model", path, "--model-option", "z_dim=2", *fast, "--out", str(run)])
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(main, ["export", str(run), "--out", str(out), "--onnx"])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and f"--model {path}" in refused.output
    assert not out.exists()
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(out), "--onnx", "--model", path])
    assert result.exit_code == 0, result.output
    model = pyrovae.load_pretrained(out, model=path)
    encoder = _session(out / "encoder.onnx")  # its encoder returns one tensor: named for what it is
    assert [o.name for o in encoder.get_outputs()] == ["output_0"]
    x = torch.rand(4, model.x_dim)
    (got,) = encoder.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, model.encoder(x).detach().numpy(), rtol=1e-5, atol=1e-5)
    sys.modules.pop(name, None)
