"""Encoder and decoder builders, MLP and convolutional, from (input shape, widths, latent size).

Encoders map (N, C, H, W) to (N, 2D) features (split into mu and logvar by the model); decoders map (N, D) to
(N, C', H, W), where C' is the number of decoder outputs per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from vaekit.errors import VaekitError

Shape = Sequence[int]  # (C, H, W)


def mlp_encoder(shape: Shape, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_decoder(shape: Shape, hidden: Sequence[int], latent_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = latent_dim
    for h in reversed(hidden):  # mirror the encoder: 784-400-20 becomes 20-400-784
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers += [nn.Linear(width, math.prod(shape)), nn.Unflatten(1, tuple(shape))]
    return nn.Sequential(*layers)


def _conv_grid(shape: Shape, channels: Sequence[int]) -> tuple[int, int]:
    """Spatial size after len(channels) stride-2 convolutions; each must halve the image exactly."""
    _, height, width = shape
    factor = 2 ** len(channels)
    if height % factor or width % factor:
        raise VaekitError(
            f"the conv network with {len(channels)} stride-2 layers needs height and width divisible by {factor}, "
            f"got {height}x{width}: use --network mlp or resize the images"
        )
    return height // factor, width // factor


def conv_encoder(shape: Shape, channels: Sequence[int], out_features: int) -> nn.Sequential:
    grid_h, grid_w = _conv_grid(shape, channels)
    layers: list[nn.Module] = []
    previous = shape[0]
    for c in channels:  # 4x4 kernels, stride 2, padding 1: each layer halves H and W (28 → 14 → 7, 32 → 16 → 8)
        layers += [nn.Conv2d(previous, c, 4, stride=2, padding=1), nn.ReLU()]
        previous = c
    layers += [nn.Flatten(), nn.Linear(previous * grid_h * grid_w, out_features)]
    return nn.Sequential(*layers)


def conv_decoder(shape: Shape, channels: Sequence[int], latent_dim: int) -> nn.Sequential:
    grid_h, grid_w = _conv_grid(shape, channels)
    reversed_channels = list(reversed(channels))
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, reversed_channels[0] * grid_h * grid_w),
        nn.ReLU(),
        nn.Unflatten(1, (reversed_channels[0], grid_h, grid_w)),
    ]
    for c_in, c_out in zip(reversed_channels, [*reversed_channels[1:], shape[0]], strict=True):
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        layers.append(nn.ReLU())
    layers.pop()  # no activation on the output: the likelihood decides how to read it (logits or a mean)
    return nn.Sequential(*layers)


Builder = Callable[[Shape, Sequence[int], int], nn.Sequential]
NETWORKS: dict[str, tuple[Builder, Builder]] = {
    "mlp": (mlp_encoder, mlp_decoder),
    "conv": (conv_encoder, conv_decoder),
}
