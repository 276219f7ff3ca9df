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
