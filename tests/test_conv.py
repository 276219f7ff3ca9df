"""The convolutional encoder and decoder: sizes from the data, the closed-form ELBO, checkpoints."""

import math

import pytest
import torch
from pyro import poutine

from pyrovae import VAE, closed_form_elbo, make_elbo
from pyrovae.errors import ConfigError
from pyrovae.models.conv import ConvBody, conv_map_sizes, conv_sides, image_chw
from pyrovae.train import load_vae, save_checkpoint

# (C, H, W) or (H, W) of the data sets pyrovae reads, and odd sides that must come back exactly
SHAPES = {"fashion-mnist": (28, 28), "cifar10": (3, 32, 32), "digits": (8, 8), "odd": (2, 7, 5), "one-pixel": (1, 1)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized-logistic"])
def test_sizes_come_from_the_data(shape, likelihood):
    d = math.prod(shape)
    vae = VAE(d, z_dim=3, hidden_dims=(16,), arch="conv", channels=(4, 6), image_shape=shape, likelihood=likelihood)
    x = torch.rand(5, d)
    loc, scale = vae.encoder(x)
    assert loc.shape == scale.shape == (5, 3) and bool((scale > 0).all())
    per_dim = 2 if likelihood == "discretized-logistic" else 1
    assert vae.decoder(loc).shape == (5, per_dim * d)
    assert vae.decoder(torch.randn(4, 5, 3)).shape == (4, 5, per_dim * d)  # particles in front
    # the decoder's last feature map has the data's height and width, whatever their parity
    c, h, w = image_chw(shape)
    maps = vae.decoder.deconvs(vae.decoder.dense(loc).reshape(-1, *vae.decoder.start))
    assert maps.shape == (5, 4, h, w)


def test_sides_halve_rounding_up_and_map_sizes_follow():
    assert conv_sides(28, 3) == [28, 14, 7, 4] and conv_sides(7, 2) == [7, 4, 2] and conv_sides(1, 2) == [1, 1, 1]
    # 32x32x3 with channels 8, 16: 8*16*16 and 16*8*8, then the decoder's full-size map of 8 channels
    assert conv_map_sizes((3, 32, 32), (8, 16)) == [2048, 1024, 8 * 32 * 32]
    body = ConvBody((3, 32, 32), (8, 16), (10,), "relu")
    assert body(torch.rand(2, 3072)).shape == (2, 10)


def test_image_layout_is_channel_row_column():
    # one bright pixel in channel 1, row 2, column 3 of a (2, 4, 5) image lands at that flat index
    shape = (2, 4, 5)
    x = torch.zeros(1, 40)
    x[0, 1 * 20 + 2 * 5 + 3] = 1.0
    assert x.reshape(1, *shape)[0, 1, 2, 3] == 1.0
    assert image_chw((4, 5)) == (1, 4, 5) and image_chw(shape) == shape


@pytest.mark.parametrize("shape", [None, (12,), (2, 2, 3, 1)], ids=["none", "flat", "rank-4"])
def test_conv_needs_images(shape):
    with pytest.raises(ConfigError, match="the conv architecture needs image data.*use --arch mlp"):
        VAE(12, arch="conv", image_shape=shape)


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(arch="resnet"), "arch .--arch. must be one of mlp, conv, got 'resnet'"),
        (dict(arch="conv", channels=()), r"channels \(--channels\) must be positive ints"),
        (dict(arch="conv", channels=(8, 0)), r"channels \(--channels\) must be positive ints"),
    ],
)
def test_bad_conv_options(options, match):
    with pytest.raises(ConfigError, match=match):
        VAE(16, image_shape=(4, 4), **options)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "discretized-logistic"])
def test_closed_form_equals_the_mean_field_elbo_for_conv(float64, likelihood):
    vae = VAE(30, z_dim=3, hidden_dims=(9,), arch="conv", channels=(3, 4), image_shape=(2, 3, 5), likelihood=likelihood)
    x = torch.randint(0, 256, (4, 30)).double() / 255
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    guide_trace = poutine.trace(vae.guide).get_trace(x, num_data=20)
    loc, scale = vae.encoder(x)
    eps = ((guide_trace.nodes["z"]["value"] - loc) / scale).detach()
    model, guide = (poutine.replay(p, trace=guide_trace) for p in (vae.model, vae.guide))
    loss = make_elbo("meanfield").differentiable_loss(model, guide, x, num_data=20)
    terms = closed_form_elbo(vae, x, eps=eps)
    assert -loss.item() == pytest.approx(5 * terms.elbo.sum().item(), rel=1e-12)
    loss.backward()
    pyro_grads = [p.grad.clone() for p in vae.parameters()]
    vae.zero_grad()
    (-5 * terms.elbo.sum()).backward()
    for a, b in zip(pyro_grads, (p.grad for p in vae.parameters()), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_checkpoint_rebuilds_the_conv_architecture(tmp_path, float64):
    vae = VAE(64, z_dim=2, hidden_dims=(7,), arch="conv", channels=(3, 5), image_shape=(8, 8))
    save_checkpoint(tmp_path / "c.pt", vae)
    loaded = load_vae(tmp_path / "c.pt")
    assert loaded.arch == "conv" and loaded.channels == (3, 5) and loaded.hparams() == vae.hparams()
    x = torch.rand(3, 64)
    torch.testing.assert_close(loaded.encoder(x), vae.encoder(x), rtol=0, atol=0)


def test_a_checkpoint_without_an_arch_field_loads_as_an_mlp(tmp_path):
    # what pyrovae wrote before --arch existed: hparams without "arch" and "channels"
    vae = VAE(20, z_dim=2, hidden_dims=(6,))
    save_checkpoint(tmp_path / "c.pt", vae)
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    for key in ("arch", "channels"):
        del payload["vae"][key]
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_vae(tmp_path / "old.pt")
    assert loaded.arch == "mlp" and type(loaded.encoder).__name__ == "Encoder"
    x = torch.rand(3, 20)
    torch.testing.assert_close(loaded.decoder(loaded.encoder(x)[0]), vae.decoder(vae.encoder(x)[0]))


def test_the_mlp_keeps_its_parameter_names_and_initial_values():
    # arch and channels changed nothing for the MLP: same modules, same draws from the seed
    torch.manual_seed(0)
    vae = VAE(784)
    assert [n for n, _ in vae.named_parameters()] == [
        f"{net}.net.{i}.{kind}" for net in ("encoder", "decoder") for i in (0, 2) for kind in ("weight", "bias")
    ]
    torch.manual_seed(0)
    first = torch.nn.Linear(784, 400)  # the encoder's first layer is the seed's first draw
    torch.testing.assert_close(vae.encoder.net[0].weight, first.weight, rtol=0, atol=0)
