r"""Convolutional encoder and decoder for images of any shape :math:`(C, H, W)` known from the data.

Rows of the data are flattened images (channel, then row, then column: the order of
``x.reshape(C, H, W)``). The encoder views a row as an image and halves its height and width
``len(channels)`` times with 3x3 convolutions of stride 2 (padding 1, so a side of :math:`n`
becomes :math:`\lceil n/2 \rceil`), then flattens the last feature map and runs the dense
layers ``hidden_dims``. The decoder mirrors it: dense layers up to the last feature map, 3x3
transposed convolutions of stride 2 back to the exact :math:`(H, W)` of the data (the output
padding of each is chosen from the sizes the encoder went through, so odd sides such as 7 come
back as 7), and a last 3x3 convolution to the likelihood's parameters per pixel.

Nothing here knows an image size: 28x28x1 (Fashion-MNIST), 32x32x3 (CIFAR-10) and 8x8x1
(the digits) all take the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .networks import check_activation, check_hidden_dims, loc_and_scale, mlp, mlp_body

__all__ = [
    "ConvBody",
    "ConvEncoder",
    "ConvDecoder",
    "image_chw",
    "conv_sides",
    "check_channels",
    "conv_map_sizes",
]


def check_channels(channels: Sequence[int]) -> tuple[int, ...]:
    """``channels`` as a tuple, if it is one or more positive ints (the feature maps of each stage)."""
    found = tuple(channels) if isinstance(channels, (list, tuple)) else channels
    if (
        not isinstance(found, tuple)
        or not found
        or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in found)
    ):
        raise ConfigError(f"channels (--channels) must be positive ints such as 32,64, got {channels!r}")
    return found


def image_chw(image_shape: Sequence[int] | None) -> tuple[int, int, int]:
    """``(C, H, W)`` of one data point: ``(H, W)`` is one channel, ``(C, H, W)`` is used as it is.

    :raises ConfigError: for data that are not images (``None`` or a 1-d shape such as ``(D,)``).
    """
    shape = tuple(image_shape) if image_shape is not None else ()
    if len(shape) == 2:
        return (1, *shape)  # type: ignore[return-value]
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise ConfigError(
        f"the conv architecture needs image data, of shape (H, W) or (C, H, W) per data point; got "
        f"{shape or 'no image shape'}: use --arch mlp, or save the data as an array of images (N, H, W)"
    )


def conv_sides(side: int, stages: int) -> list[int]:
    r"""A side of the image and of each feature map: :math:`n \to \lceil n/2 \rceil` per stage."""
    sides = [side]
    for _ in range(stages):
        sides.append((sides[-1] + 1) // 2)
    return sides


def conv_map_sizes(image_shape: Sequence[int] | None, channels: Sequence[int]) -> list[int]:
    """Numbers per data point in each feature map of the encoder's convolutions (the decoder's are
    the same, plus one of ``channels[0]`` maps at full size): for memory estimates."""
    _, h, w = image_chw(image_shape)
    heights, widths = conv_sides(h, len(channels)), conv_sides(w, len(channels))
    maps = [ch * hh * ww for ch, hh, ww in zip(channels, heights[1:], widths[1:], strict=True)]
    return [*maps, channels[0] * h * w]


class ConvBody(nn.Module):
    """Image rows ``(..., C*H*W)`` -> features ``(..., hidden_dims[-1])``: strided convolutions, then
    dense layers, each followed by the activation."""

    def __init__(
        self, image_shape: Sequence[int], channels: Sequence[int], hidden_dims: Sequence[int], activation: str
    ):
        super().__init__()
        act = check_activation(activation)
        self.chw = image_chw(image_shape)
        channels, hidden = check_channels(channels), check_hidden_dims(hidden_dims)
        layers: list[nn.Module] = []
        previous = self.chw[0]
        for c in channels:
            layers += [nn.Conv2d(previous, c, 3, stride=2, padding=1), act()]
            previous = c
        self.convs = nn.Sequential(*layers)
        h, w = conv_sides(self.chw[1], len(channels))[-1], conv_sides(self.chw[2], len(channels))[-1]
        self.dense = mlp_body(channels[-1] * h * w, hidden, activation)
        self.out_dim = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        maps = self.convs(x.reshape(-1, *self.chw))
        return self.dense(maps.flatten(1)).reshape(*batch, self.out_dim)


class ConvEncoder(nn.Module):
    r"""Amortised posterior parameters :math:`x \mapsto (\mu_\phi(x), \sigma_\phi(x))` of a convolutional
    body; :math:`\sigma = \mathrm{softplus}(\cdot) + 10^{-6}` as in the MLP encoder."""

    def __init__(
        self,
        image_shape: Sequence[int],
        z_dim: int,
        channels: Sequence[int] = (32, 64),
        hidden_dims: Sequence[int] = (400,),
        activation: str = "relu",
    ):
        super().__init__()
        self.z_dim = z_dim
        self.body = ConvBody(image_shape, channels, hidden_dims, activation)
        self.head = nn.Linear(self.body.out_dim, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return loc_and_scale(self.head(self.body(x)), self.z_dim)


class ConvDecoder(nn.Module):
    """:math:`z \\mapsto` the likelihood's parameters, ``params_per_pixel`` numbers per pixel, as rows of
    ``params_per_pixel * C * H * W`` (all of the first parameter, then all of the second, ...).

    :param int params_per_pixel: 1 for a Bernoulli's logits or a Gaussian's mean, 2 for a location
        and a scale.
    """

    def __init__(
        self,
        z_dim: int,
        image_shape: Sequence[int],
        params_per_pixel: int = 1,
        channels: Sequence[int] = (32, 64),
        hidden_dims: Sequence[int] = (400,),
        activation: str = "relu",
    ):
        super().__init__()
        act = check_activation(activation)
        self.chw = image_chw(image_shape)
        self.params_per_pixel = params_per_pixel
        channels, hidden = check_channels(channels), check_hidden_dims(hidden_dims)
        heights, widths = conv_sides(self.chw[1], len(channels)), conv_sides(self.chw[2], len(channels))
        self.start = (channels[-1], heights[-1], widths[-1])
        self.dense = nn.Sequential(
            mlp(z_dim, tuple(reversed(hidden)), channels[-1] * heights[-1] * widths[-1], activation),
            act(),
        )
        layers: list[nn.Module] = []
        outputs = (*reversed(channels[:-1]), channels[0])
        for i, (c_in, c_out) in enumerate(zip(reversed(channels), outputs, strict=True)):
            # (n - 1) * 2 - 2 + 3 + p = target, so p = target - 2n + 1 (0 for an odd target, 1 for an even one)
            level = len(channels) - i
            pad = (heights[level - 1] - 2 * heights[level] + 1, widths[level - 1] - 2 * widths[level] + 1)
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=pad),
                act(),
            ]
        self.deconvs = nn.Sequential(*layers)
        self.out = nn.Conv2d(channels[0], params_per_pixel * self.chw[0], 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        maps = self.dense(z).reshape(-1, *self.start)
        return self.out(self.deconvs(maps)).reshape(*batch, -1)
