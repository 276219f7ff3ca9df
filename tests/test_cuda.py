"""CUDA checks: they run where torch sees a GPU and skip cleanly elsewhere."""

import pytest
import torch
from pyro import poutine

from pyrovae import VAE, closed_form_elbo, fit, load_dataset, make_elbo
from pyrovae.train import FitOptions

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_fit_on_cuda_keeps_everything_on_the_gpu():
    data = load_dataset("digits", "dynamic")
    vae = VAE(data.x_dim, z_dim=8, hidden_dims=(64,)).to("cuda")  # fit trains on the model's device
    lines = []
    history = fit(vae, data, FitOptions(epochs=3, batch_size=128, seed=0), log=lines.append)
    assert " device=cuda" in lines[0] and vae.device.type == "cuda"
    assert all(buffer.device.type == "cuda" for buffer in vae.buffers())
    assert history.last["test_elbo"] > history.epochs[0]["test_elbo"]


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_closed_form_equals_pyro_on_cuda_in_float64(likelihood):
    vae = VAE(12, z_dim=3, hidden_dims=(8,), likelihood=likelihood, learn_sigma=likelihood == "gaussian")
    vae = vae.to("cuda", torch.float64)
    x = torch.bernoulli(torch.rand(6, 12, device="cuda", dtype=torch.float64))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    loc, scale = vae.encoder(x)
    eps = (guide_trace.nodes["z"]["value"] - loc) / scale
    loss = make_elbo("meanfield").loss(
        poutine.replay(vae.model, trace=guide_trace), poutine.replay(vae.guide, trace=guide_trace), x
    )
    assert -loss == pytest.approx(closed_form_elbo(vae, x, eps=eps).elbo.sum().item(), rel=1e-10)


def _engine(name):
    from pyrovae.train.engines import CudaGraphEngine, EagerEngine

    return CudaGraphEngine(EagerEngine()) if name == "cudagraph-eager" else name


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
@pytest.mark.parametrize("engine", ["compiled", "cudagraph", "cudagraph-eager"])
def test_engines_on_cuda_train_to_the_eager_parameters(engine, elbo):
    # torch.compile on a GPU (Triton kernels; noise from the eager CUDA generator), and the step
    # replayed from a CUDA graph (whose replays draw from the generator where eager steps would)
    data = load_dataset("digits", "static")
    data = type(data)(data.name, data.train[:512], data.test[:128], data.image_shape)  # 4 full batches
    runs = []
    for name in (engine, "eager"):
        torch.manual_seed(0)
        vae = VAE(data.x_dim, z_dim=4, hidden_dims=(32,)).to("cuda", torch.float64)
        history = fit(vae, data, FitOptions(elbo=elbo, engine=_engine(name), epochs=3, batch_size=128, seed=1))
        runs.append((vae, history))
    (engine_vae, by_engine), (eager_vae, eager) = runs
    assert len(by_engine.step_elbos) == len(eager.step_elbos) == 12
    assert by_engine.step_elbos == pytest.approx(eager.step_elbos, rel=1e-8)
    for a, b in zip(engine_vae.parameters(), eager_vae.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_a_replayed_step_that_turns_non_finite_is_never_applied():
    import pyro

    from pyrovae.infer import Objective
    from pyrovae.train import GraphedStep, make_adam

    torch.manual_seed(0)
    vae = VAE(12, z_dim=3, hidden_dims=(8,)).to("cuda")
    x = torch.bernoulli(torch.rand(16, 12, device="cuda"))
    with pyro.validation_enabled(False):
        objective = Objective(vae.model, vae.guide, make_elbo("meanfield"), num_data=16)
        step = GraphedStep(objective, make_adam(vae.parameters(), lr=0.01), warmup=2)
        for _ in range(4):  # two warm-up steps, then the recording and a replay
            step(x)
        assert step.recorded
        before = [p.detach().clone() for p in vae.parameters()]
        poisoned = x.clone()
        poisoned[0, 0] = float("nan")
        losses = torch.stack([step(poisoned), step(x)])
    assert step.failed() == (5, "the loss became nan")
    assert not torch.isfinite(losses[0]).item() and torch.isfinite(losses[1]).item()
    for p, q in zip(vae.parameters(), before, strict=True):
        assert torch.equal(p, q)
