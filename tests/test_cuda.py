"""CUDA checks: they run where torch sees a GPU and skip cleanly elsewhere."""

import pytest
import torch
from pyro import poutine

from pyrovae import VAE, closed_form_elbo, fit, load_dataset, make_elbo

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_fit_on_cuda_keeps_everything_on_the_gpu():
    data = load_dataset("digits", "dynamic")
    vae = VAE(data.x_dim, z_dim=8, hidden_dims=(64,))
    history = fit(vae, data, epochs=3, batch_size=128, seed=0, device="cuda")
    assert vae.device.type == "cuda"
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


@pytest.mark.parametrize("elbo", ["compiled-meanfield", "compiled-trace"])
def test_compiled_elbos_on_cuda_train_to_the_eager_parameters(elbo):
    # torch.compile on a GPU (Triton kernels; noise from the eager CUDA generator)
    data = load_dataset("digits", "static")
    data = type(data)(data.name, data.train[:512], data.test[:128], data.image_shape)
    runs = []
    for name in (elbo, elbo.removeprefix("compiled-")):
        torch.manual_seed(0)
        vae = VAE(data.x_dim, z_dim=4, hidden_dims=(32,)).to("cuda", torch.float64)
        svi_elbo = make_elbo(name)
        history = fit(vae, data, elbo=svi_elbo, epochs=2, batch_size=128, seed=1, device="cuda")
        runs.append((vae, history, svi_elbo))
    (compiled_vae, compiled, svi_elbo), (eager_vae, eager, _) = runs
    assert all(step.compiled for step in svi_elbo._compiled_steps.values())
    assert compiled.step_elbos == pytest.approx(eager.step_elbos, rel=1e-8)
    for a, b in zip(compiled_vae.parameters(), eager_vae.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
