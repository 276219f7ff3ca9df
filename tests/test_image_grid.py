import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.image_grid import DPI, grid_png


def _read(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _block(picture: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the pixels of colour ``rgb``, checked to fill that rectangle."""
    rows, cols = np.nonzero((picture == rgb).all(-1))
    top, left = rows.min(), cols.min()
    height, width = rows.max() - top + 1, cols.max() - left + 1
    assert rows.size == height * width, f"the pixels of {rgb} do not form one rectangle"
    return top, left, height, width


def test_each_pixel_becomes_a_square_of_its_grey_in_place():
    grey = np.array([[[0.0, 1 / 3], [2 / 3, 1.0]]])  # one 2 x 2 image
    picture = _read(grid_png(grey, ncols=1, inches=(1.2, 1.2)))
    assert picture.shape == (96, 96, 3)  # 1.2 inch at 80 pixels per inch
    top, left, size, width = _block(picture, (85, 85, 85))  # round(255 / 3)
    assert size == width and size >= 20
    assert _block(picture, (0, 0, 0)) == (top, left - size, size, size)  # to its left
    assert _block(picture, (170, 170, 170)) == (top + size, left - size, size, size)  # below that
    assert (picture[top + size : top + 2 * size, left : left + size] == 255).all()  # white pixel, bottom right


def test_colour_and_transparency():
    rgba = np.zeros((2, 3, 3, 4))
    rgba[0, ..., 0] = rgba[0, ..., 3] = 1.0  # opaque red
    rgba[1, ..., 2] = 1.0  # transparent blue: white, as over the white page
    picture = _read(grid_png(rgba, ncols=2, inches=(2.4, 1.2), title="red, then nothing"))
    assert picture.shape == (96, 192, 3)
    _, _, height, width = _block(picture, (255, 0, 0))
    assert height == width >= 20
    assert not ((picture[..., 2] > 200) & (picture[..., 0] < 50)).any()  # no blue anywhere


def test_strips_fill_their_cells_and_labels_are_drawn():
    strips = np.linspace(0, 1, 10).reshape(2, 1, 5)
    labels = grid_png(strips, ncols=1, inches=(4.0, 0.8), row_labels=["first", "second"], stretch=True)
    plain = grid_png(strips, ncols=1, inches=(4.0, 0.8), stretch=True)
    with_labels, without = _read(labels), _read(plain)
    _, _, height, width = _block(without, (0, 0, 0))  # the first pixel of the first strip
    assert width > 2 * height  # stretched along the row (300 pixels for 5), not kept square
    assert (with_labels[:, :16] < 128).any() and not (without[:, :4] < 128).any()  # the labels' ink


def test_the_grids_pyrovae_draws_need_no_matplotlib(tmp_path):
    script = (
        "import sys, torch\n"
        "from pyrovae.plots import save_image_grid\n"
        f"save_image_grid(torch.rand(10, 64), {str(tmp_path / 'g.png')!r}, (8, 8), ncols=4, title='t', "
        "row_labels=['a', 'b', 'c'])\n"
        "print('matplotlib' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    with Image.open(tmp_path / "g.png") as image:
        assert image.size == (round(4 * 1.2 * DPI), round((3 * 1.2 + 0.4) * DPI))


@pytest.mark.parametrize("ncols", [1, 3, 8])
def test_the_grid_has_the_size_asked_for(ncols):
    images = torch.rand(7, 28, 28).numpy()
    rows = -(-7 // ncols)
    picture = _read(grid_png(images, ncols=ncols, inches=(ncols * 1.2, rows * 1.2 + 0.4), title="digits"))
    assert picture.shape[:2] == (round((rows * 1.2 + 0.4) * DPI), round(ncols * 1.2 * DPI))
