import pytest
import torch
from PIL import Image

from pyrovae import VAE
from pyrovae.plots import save_image_grid, save_reconstructions, save_samples


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
