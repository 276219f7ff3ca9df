import pytest
import torch
from PIL import Image

from pyrovae import VAE
from pyrovae.plots import (
    latent_coordinates,
    save_image_grid,
    save_latent_scatter,
    save_reconstructions,
    save_samples,
    save_training_curves,
)


@pytest.mark.parametrize("image_shape", [(8, 8), (28, 28), (1, 28, 28), (5,), None], ids=str)
def test_image_grid_for_any_shape(tmp_path, image_shape):
    d = 5 if image_shape in ((5,), None) else int(torch.Size(image_shape).numel())
    path = save_image_grid(torch.rand(10, d), tmp_path / "grid.png", image_shape, ncols=4)
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 20


def test_image_grid_errors(tmp_path):
    with pytest.raises(ValueError, match=r"image_shape \(3, 3\) has 9 pixels, the data have 8"):
        save_image_grid(torch.rand(2, 8), tmp_path / "grid.png", (3, 3))
    with pytest.raises(ValueError, match="no images"):
        save_image_grid(torch.rand(0, 4), tmp_path / "grid.png", (2, 2))


def test_samples_and_reconstructions_are_written(tmp_path):
    vae = VAE(28 * 28, z_dim=2, hidden_dims=(16,), image_shape=(28, 28))
    save_samples(vae, tmp_path / "samples.png", n=16)
    save_reconstructions(vae, torch.bernoulli(torch.rand(5, 784)), tmp_path / "reconstructions.png")
    with Image.open(tmp_path / "samples.png") as s, Image.open(tmp_path / "reconstructions.png") as r:
        assert s.size[0] > 200 and r.size[0] > 200


@pytest.mark.parametrize("z_dim", [1, 2, 5])
def test_latent_coordinates_are_the_means_or_their_principal_components(float64, z_dim):
    vae = VAE(12, z_dim=z_dim, hidden_dims=(16,), activation="tanh")
    x = torch.bernoulli(torch.rand(200, 12))
    coords, labels = latent_coordinates(vae, x, batch_size=64)
    means = vae.encoder(x)[0].detach()
    assert coords.shape == (200, 2) and len(labels) == 2
    if z_dim == 1:
        torch.testing.assert_close(coords[:, 0], means[:, 0])
        assert (coords[:, 1] == 0).all()
    elif z_dim == 2:
        torch.testing.assert_close(coords, means)
    else:
        # PCA: uncorrelated coordinates whose variances are the two largest eigenvalues of Cov(means)
        eigenvalues = torch.linalg.eigvalsh(torch.cov(means.T, correction=0)).flip(0)
        torch.testing.assert_close(coords.var(0, unbiased=False), eigenvalues[:2], rtol=1e-10, atol=1e-12)
        cross = (coords[:, 0] * coords[:, 1]).mean()
        assert abs(cross) < 1e-12 and coords.mean(0).abs().max() < 1e-12
        assert "% of variance" in labels[0]


def test_latent_scatter_and_training_curves_are_written(tmp_path):
    vae = VAE(64, z_dim=3, hidden_dims=(16,), image_shape=(8, 8))
    x = torch.bernoulli(torch.rand(30, 64))
    path = save_latent_scatter(vae, x, tmp_path / "latent.png", labels=torch.arange(30) % 10)
    records = [{"epoch": e, "train_elbo": -40 + e, "test_elbo": -41 + e, "seconds": 0.5} for e in range(1, 6)]
    curves = save_training_curves(records, tmp_path / "curves.png")
    with Image.open(path) as latent, Image.open(curves) as image:
        assert latent.format == image.format == "PNG"
        assert image.size[0] > 1.5 * image.size[1]  # two panels side by side
    with pytest.raises(ValueError, match=r"labels must have one entry per row of x \(30\), got 4"):
        save_latent_scatter(vae, x, tmp_path / "bad.png", labels=torch.arange(4))
    with pytest.raises(ValueError, match="the metrics are empty"):
        save_training_curves([], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="missing seconds"):
        save_training_curves([{"epoch": 1, "train_elbo": -3.0}], tmp_path / "bad.png")


@pytest.mark.parametrize(
    "image_shape, expected",
    [
        ((8, 8), (5, 8, 8)),
        ((1, 28, 28), (5, 28, 28)),
        ((28, 28, 1), (5, 28, 28)),
        ((3, 4, 6), (5, 4, 6, 3)),
        ((4, 6, 3), (5, 4, 6, 3)),
        ((2, 5, 6), (5, 10, 6)),
        ((12,), (5, 1, 12)),
    ],
    ids=str,
)
def test_one_picture_per_data_point_grey_or_colour(image_shape, expected):
    from pyrovae.plots import as_images

    d = int(torch.Size(image_shape).numel())
    x = torch.arange(5 * d, dtype=torch.float32).reshape(5, d)
    images = as_images(x, image_shape)
    assert images.shape == expected
    if image_shape == (3, 4, 6):  # channel-first: pixel (0, 0) of point 1 holds its three channels
        assert images[1, 0, 0].tolist() == [d, d + 24, d + 48]


def test_colour_grid_is_written(tmp_path):
    path = save_image_grid(torch.rand(6, 3 * 5 * 5), tmp_path / "rgb.png", (5, 5, 3))
    with Image.open(path) as image:
        assert image.mode in ("RGBA", "RGB") and min(image.size) > 20
