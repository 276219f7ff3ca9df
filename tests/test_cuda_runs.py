"""Training, evaluation, resume, checkpoints and the CLI on a GPU (issue 12, part 2).

Each test runs on the CPU and, where torch sees a GPU, on CUDA (``cuda_devices()``); the CUDA
cases skip cleanly elsewhere. ``benchmarks/gpu_check.sh`` runs this file on a GPU machine.
"""

import copy
import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from pyrovae import VAE, FitConfig, evaluate, fit, load_checkpoint, load_dataset, load_vae, save_checkpoint
from pyrovae.cli import main
from pyrovae.commands import fit_run
from pyrovae.data import Dataset
from pyrovae.data.feed import ResidentBatches
from pyrovae.models.likelihoods import LIKELIHOODS
from pyrovae.models.priors import PRIORS, VampPrior
from pyrovae.train import FitOptions
from pyrovae.train.checkpoint import vae_from_checkpoint

from .conftest import cuda_devices


def _small(data: Dataset, train: int, test: int) -> Dataset:
    return dataclasses.replace(
        data,
        train=data.train[:train],
        test=data.test[:test],
        train_labels=None if data.train_labels is None else data.train_labels[:train],
        test_labels=None if data.test_labels is None else data.test_labels[:test],
    )


def _tensors(tree):
    """Every tensor in a nested checkpoint payload."""
    if torch.is_tensor(tree):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _tensors(value)


def _on(module: torch.nn.Module, device: str) -> bool:
    return all(t.device.type == device for t in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize("device", cuda_devices())
@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("prior", PRIORS)
def test_every_prior_and_likelihood_trains_on_the_device(device, prior, likelihood):
    binarization = "dynamic" if likelihood == "bernoulli" else "none"
    data = _small(load_dataset("digits", binarization), 512, 128)
    if likelihood == "discretized-logistic":  # 8-bit levels k/255, as images are stored
        data = dataclasses.replace(data, train=(data.train * 255).round() / 255, test=(data.test * 255).round() / 255)
    torch.manual_seed(0)
    vae = VAE(data.x_dim, z_dim=4, hidden_dims=(32,), likelihood=likelihood, learn_sigma=likelihood == "gaussian",
              prior=prior, prior_components=3).to(device)  # fmt: skip
    if isinstance(vae.prior, VampPrior):
        vae.prior.initialize_from_data(data.train.to(device))
    history = fit(vae, data, epochs=4, batch_size=64, lr=3e-3, seed=0, device=device)
    assert _on(vae, device) and _on(vae.prior, device)
    steps = history.step_elbos
    assert len(steps) == 4 * 8 and all(math.isfinite(s) for s in steps)
    assert all(math.isfinite(r["test_elbo"]) for r in history.epochs)
    # 32 Adam steps at lr 3e-3 from a random start: the ELBO of the last 8 steps is above the first 8's
    assert sum(steps[-8:]) > sum(steps[:8])


@pytest.fixture(scope="module")
def trained_vae():
    """A small VAE trained on the CPU in float64, with its test images."""
    data = load_dataset("digits", "dynamic")
    torch.manual_seed(0)
    vae = VAE(data.x_dim, z_dim=4, hidden_dims=(32,)).double()
    fit(vae, data, FitOptions(epochs=5, batch_size=128, lr=3e-3, seed=0))
    return vae, data.test[:60].double()


@pytest.mark.parametrize("device", cuda_devices())
def test_evaluate_on_the_device_agrees_with_the_cpu_within_monte_carlo_error(trained_vae, device):
    """Independent draws on each side (CPU: seed 0; the device: seed 1, and on CUDA its own generator).

    Per test point i, the IWAE estimate has a delta-method standard error s_i and the ELBO estimate
    (the mean of K log weights) the standard error sd(log w_i)/sqrt(K); the two sides are
    independent, so the difference of their means over n points has the standard error
    sqrt(sum_i (s_i^2 + t_i^2)) / n, with s_i and t_i the two sides' errors. The test allows 4 of them
    (a normal deviate is beyond 4 once in 16,000 draws). The encoder's means need no Monte Carlo: they agree to
    rounding, so the active-unit variances and the closed-form KL agree to 1e-10.
    """
    vae, x = trained_vae
    n, k = x.shape[0], 400
    cpu = evaluate(vae, x, k=k, seed=0, keep_draws=n)
    other = evaluate(copy.deepcopy(vae).to(device), x.to(device), k=k, seed=1, keep_draws=n)
    assert other.device.startswith(device) and other.log_px.device.type == "cpu"

    def elbo_se(result):
        return result.draws.log_weight.std(0) / math.sqrt(k)

    for name, se_a, se_b in [("log_px", cpu.log_px_se, other.log_px_se), ("elbo", elbo_se(cpu), elbo_se(other))]:
        a, b = getattr(cpu, name).double(), getattr(other, name).double()
        tolerance = 4 * (se_a.double().pow(2) + se_b.double().pow(2)).sum().sqrt() / n
        assert 0 < tolerance < 0.5, (name, tolerance)  # the check has teeth: a fraction of a nat
        assert abs(a.mean() - b.mean()) < tolerance, (name, a.mean().item(), b.mean().item(), tolerance.item())
    assert not torch.equal(cpu.log_px, other.log_px)  # the draws were independent
    torch.testing.assert_close(cpu.kl_analytic, other.kl_analytic, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cpu.active.variance, other.active.variance, rtol=1e-10, atol=1e-12)


class StopHereError(Exception):
    pass


@pytest.mark.parametrize("device", cuda_devices())
@pytest.mark.parametrize("stop_at", [5, 12])  # mid-epoch, and at an epoch's end (12 steps per epoch)
def test_a_run_interrupted_on_the_device_resumes_exactly(tmp_path, device, stop_at):
    """The interrupted run's checkpoint goes through a file (loaded to the CPU, as pyrovae does),
    the resumed run ends with the same parameters and ELBOs, bit for bit, as one that never stopped."""
    data = load_dataset("digits", "dynamic")

    def new_vae():
        torch.manual_seed(1)
        return VAE(data.x_dim, z_dim=3, hidden_dims=(16,), prior="gaussian").double().to(device)

    options = dict(elbo="meanfield", epochs=2, batch_size=128, seed=4, device=device)
    reference = new_vae()
    full = fit(reference, data, **options)

    path = tmp_path / "checkpoint.pt"

    def stop(state):
        if state.step == stop_at:
            save_checkpoint(path, state.vae, history=state.history.epochs, resume=state.resume_state())
            raise StopHereError

    with pytest.raises(StopHereError):
        fit(new_vae(), data, checkpoint_every=1, callbacks=[stop], **options)
    payload = load_checkpoint(path)
    assert all(t.device.type == "cpu" for t in _tensors(payload))
    resumed_vae = vae_from_checkpoint(payload).to(device)
    resumed = fit(resumed_vae, data, resume=payload["resume"], **options)

    assert _on(resumed_vae, device)
    for (name, a), (_, b) in zip(resumed_vae.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.step_elbos == full.step_elbos
    assert [r["test_elbo"] for r in resumed.epochs] == [r["test_elbo"] for r in full.epochs]


@pytest.fixture(scope="module", params=cuda_devices())
def device_run(request, tmp_path_factory):
    """A tiny `pyrovae fit` run directory trained on each device, and the trained model."""
    out = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    config = FitConfig(epochs=2, z_dim=4, hidden_dims=(32,), batch_size=256, device=request.param, out=str(out))
    result = fit_run(config, log=None, progress=False)
    return request.param, out, result.vae


def test_a_run_trained_on_the_device_records_it(device_run):
    device, out, vae = device_run
    assert json.loads((out / "config.json").read_text())["resolved"]["device"].startswith(device)
    assert vae.device.type == device


def test_a_checkpoint_written_on_the_device_loads_and_evaluates_on_a_cpu_only_machine(device_run, monkeypatch):
    """CPU-only is simulated: torch.cuda.is_available() says False while loading and evaluating."""
    device, out, vae = device_run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    payload = load_checkpoint(out)  # map_location="cpu"
    assert all(t.device.type == "cpu" for t in _tensors(payload))
    loaded = load_vae(out, map_location="cpu")
    assert _on(loaded, "cpu")
    trained = copy.deepcopy(vae).cpu()
    for (name, a), (_, b) in zip(loaded.state_dict().items(), trained.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    x = load_dataset("digits", "dynamic").test[:20]
    mine, theirs = evaluate(loaded, x, k=30, seed=0), evaluate(trained, x, k=30, seed=0)
    assert torch.equal(mine.log_px, theirs.log_px) and torch.equal(mine.elbo, theirs.elbo)

    result = CliRunner().invoke(main, ["evaluate", str(out), "--points", "20", "--k", "30", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "evaluation.json").read_text())["summary"]
    assert summary["device"] == "cpu" and summary["n"] == 20
    assert summary["log_px"] == pytest.approx(theirs.log_px.mean().item(), rel=1e-6)


def test_sample_and_plots_from_a_run_trained_on_the_device(device_run, tmp_path):
    device, out, _ = device_run
    result = CliRunner().invoke(main, ["sample", str(out), "--samples", "16", "--out", str(tmp_path / "samples.png")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["plots", str(out), "--out", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    for picture in ("samples.png", "plots/reconstructions.png", "plots/latent.png", "plots/training_curves.png"):
        with Image.open(tmp_path / picture) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 50, picture


@pytest.mark.parametrize("device", cuda_devices())
def test_the_training_data_go_to_the_device_once(device, monkeypatch):
    """``fit`` moves the data set once; the loop slices batches from tensors already on the device,
    and no batch-sized tensor is copied from the host while it trains."""
    data = load_dataset("digits", "dynamic")
    vae = VAE(data.x_dim, z_dim=3, hidden_dims=(16,))
    batch_size, epochs = 128, 3

    moves = []
    dataset_to = Dataset.to

    def counting_dataset_to(self, *args, **kwargs):
        moves.append((args, kwargs))
        return dataset_to(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "to", counting_dataset_to)

    sources, batches, training = [], [], []

    resident_epoch = ResidentBatches.epoch

    def recording_epoch(self, start, shard):
        training.append(True)  # the loop has started: data and model are where they will stay
        sources.append(self.x)
        for batch in resident_epoch(self, start, shard):
            batches.append(batch[0])
            yield batch

    monkeypatch.setattr(ResidentBatches, "epoch", recording_epoch)

    host_to_device = []
    tensor_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        moved = tensor_to(self, *args, **kwargs)
        if training and self.device.type == "cpu" and moved.device.type != "cpu" and self.numel() >= batch_size:
            host_to_device.append(tuple(self.shape))
        return moved

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    history = fit(vae, data, epochs=epochs, batch_size=batch_size, seed=0, device=device)

    steps = math.ceil(data.train.shape[0] / batch_size)
    assert len(history.step_elbos) == epochs * steps
    assert len(moves) == 1  # the whole data set, once, before the first step
    assert len(sources) == epochs and all(x.device.type == device and x.shape == data.train.shape for x in sources)
    assert len(batches) == epochs * steps and all(b.device.type == device for b in batches)
    assert host_to_device == []
