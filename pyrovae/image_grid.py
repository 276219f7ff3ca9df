"""A grid of small images drawn straight into a PNG with Pillow, with a title and row labels.

A grid of 64 tiles drawn as 64 matplotlib axes costs about a second (each axes builds its ticks,
spines and layout); pasting the tiles into one canvas costs milliseconds and needs no matplotlib,
so ``pyrovae fit`` draws its two grids without importing it. The picture has the size a matplotlib
figure of the same inches would have at :data:`DPI`. Small tiles are scaled up by a whole factor
(each pixel a square of one grey, as ``imshow`` shows them), larger ones averaged down, keeping
their aspect ratio (or stretched to the cell, ``stretch=True``, for one-pixel-high strips); each
tile is framed by a thin line.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["DPI", "grid_png"]

#: pixels per inch of the grids (as of the matplotlib figures :func:`pyrovae.rundir.write_png` renders)
DPI = 80
_TITLE_BAND = 0.4  # inches above the tiles for a title
_PAD = 4  # pixels of white around the grid
_FRAME = (68, 68, 68)  # the thin line around each tile


@functools.lru_cache(maxsize=8)
def _font(pixels: int) -> Any:
    """A scalable font of ``pixels`` height (Pillow's own, where Pillow has FreeType), else its bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: Any, text: str, font: Any) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _write(draw: Any, xy: tuple[float, float], text: str, font: Any) -> None:
    """``text`` in black with the top left corner of its ink at ``xy``."""
    left, top, _, _ = draw.textbbox((0, 0), text, font=font)
    draw.text((round(xy[0] - left), round(xy[1] - top)), text, fill="black", font=font)


def _fitting_font(draw: Any, text: str, pixels: int, width: int) -> Any:
    """The largest font of at most ``pixels`` height in which ``text`` fits in ``width`` pixels (down to 7)."""
    while pixels > 7 and _text_size(draw, text, _font(pixels))[0] > width:
        pixels -= 1
    return _font(pixels)


def _tile(image: np.ndarray) -> Any:
    """One image with values in [0, 1] as an RGB Pillow image (grey, RGB, or RGBA over white)."""
    from PIL import Image

    values = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    if values.ndim == 2:
        return Image.fromarray(values, "L").convert("RGB")
    if values.shape[-1] == 4:
        white = Image.new("RGBA", values.shape[1::-1], (255, 255, 255, 255))
        return Image.alpha_composite(white, Image.fromarray(values, "RGBA")).convert("RGB")
    return Image.fromarray(values, "RGB")


def grid_png(
    images: np.ndarray,
    ncols: int,
    inches: tuple[float, float],
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    stretch: bool = False,
) -> bytes:
    """The PNG bytes of ``images`` in rows of ``ncols`` tiles.

    :param images: ``(n, H, W)`` grey or ``(n, H, W, 3|4)`` colour, values in [0, 1] (clipped).
    :param int ncols: tiles per row; the grid has ``ceil(n / ncols)`` rows.
    :param inches: (width, height) of the picture; it is ``round(inches * DPI)`` pixels.
    :param title: written centred above the tiles (in a band of 0.4 inch).
    :param row_labels: written vertically left of each row, from the top.
    :param bool stretch: fill each cell whatever the images' aspect ratio (else keep it).
    """
    from PIL import Image, ImageDraw

    n = images.shape[0]
    nrows = -(-n // ncols)
    width, height = (max(1, round(size * DPI)) for size in inches)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = round(_TITLE_BAND * DPI) if title else _PAD
    left = round(0.2 * DPI) if row_labels else _PAD
    cell_w, cell_h = (width - left - _PAD) / ncols, (height - top - _PAD) / nrows
    gap = max(2, round(0.08 * min(cell_w, cell_h)))
    box_w, box_h = max(1, int(cell_w) - gap), max(1, int(cell_h) - gap)
    h, w = images.shape[1], images.shape[2]
    scale = min(box_w / w, box_h / h)
    scale = float(int(scale)) if scale >= 1 else scale  # whole multiples: every pixel a square of one size
    tile_w, tile_h = (box_w, box_h) if stretch else (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if stretch or scale >= 1 else Image.Resampling.BOX
    for i in range(n):
        row, col = divmod(i, ncols)
        x = round(left + col * cell_w + (cell_w - tile_w) / 2)
        y = round(top + row * cell_h + (cell_h - tile_h) / 2)
        canvas.paste(_tile(images[i]).resize((tile_w, tile_h), resample), (x, y))
        draw.rectangle((x - 1, y - 1, x + tile_w, y + tile_h), outline=_FRAME)
    if title:
        font = _fitting_font(draw, title, round(14.4 * DPI / 72), width - 2 * _PAD)
        text_w, text_h = _text_size(draw, title, font)
        _write(draw, ((width - text_w) / 2, (top - text_h) / 2), title, font)
    for row, label in enumerate((row_labels or [])[:nrows]):
        font = _fitting_font(draw, label, round(10 * DPI / 72), int(cell_h))
        text_w, text_h = _text_size(draw, label, font)
        strip = Image.new("RGB", (text_w + 2, text_h + 4), "white")
        _write(ImageDraw.Draw(strip), (1, 2), label, font)
        strip = strip.rotate(90, expand=True)  # read from bottom to top, as an axis label
        x = max(0, round(left - gap - strip.width))
        y = round(top + row * cell_h + (cell_h - strip.height) / 2)
        canvas.paste(strip, (x, y))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", dpi=(DPI, DPI))
    return buffer.getvalue()
