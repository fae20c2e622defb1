"""Encoder and decoder builders: MLP (any depth, a chosen activation), conv, residual conv, and the ladder's
half-resolution conv stages with the convolutions that read a hierarchy's spatial z1 out of them and predict it.

Encoders map (N, C, H, W) to (N, F) features (the posterior family reads them: F = 2D for a Gaussian); decoders map
(N, D) to (N, C', H, W), where C' is the likelihood's number of outputs per image (its channels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaekit.errors import VaekitError
from vaekit.parts import NETWORKS, Part, Requirement

if TYPE_CHECKING:
    from vaekit.config import TrainConfig

Shape = Sequence[int]  # (C, H, W)
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


def mlp_encoder(shape: Shape, hidden: Sequence[int], out_features: int, activation: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def mlp_decoder(shape: Shape, hidden: Sequence[int], latent_dim: int, activation: str = "relu") -> nn.Sequential:
    layers: list[nn.Module] = []
    width = latent_dim
    for h in reversed(hidden):  # mirror the encoder: 784-400-20 becomes 20-400-784
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers += [nn.Linear(width, math.prod(shape)), nn.Unflatten(1, tuple(shape))]
    return nn.Sequential(*layers)


def mlp(in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu") -> nn.Sequential:
    """A plain MLP over the last dimension, for the networks between latent layers: leading sample and batch
    dimensions pass through untouched, unlike the encoders' Flatten."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_features))
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


class Residual(nn.Module):
    """x + conv(act(conv(act(x)))): a 3x3 residual block that keeps channels and size (He et al. 2016)."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ACTIVATIONS[activation](),
            nn.Conv2d(channels, channels, 3, padding=1),
            ACTIVATIONS[activation](),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.body(x)
        return out


def conv_encoder(
    shape: Shape, channels: Sequence[int], out_features: int, activation: str = "relu", residual: bool = False
) -> nn.Sequential:
    grid_h, grid_w = _conv_grid(shape, channels)
    layers: list[nn.Module] = []
    previous = shape[0]
    for c in channels:  # 4x4 kernels, stride 2, padding 1: each layer halves H and W (28 → 14 → 7, 32 → 16 → 8)
        layers += [nn.Conv2d(previous, c, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
        if residual:
            layers.append(Residual(c, activation))
        previous = c
    layers += [nn.Flatten(), nn.Linear(previous * grid_h * grid_w, out_features)]
    return nn.Sequential(*layers)


def conv_decoder(
    shape: Shape, channels: Sequence[int], latent_dim: int, activation: str = "relu", residual: bool = False
) -> nn.Sequential:
    grid_h, grid_w = _conv_grid(shape, channels)
    reversed_channels = list(reversed(channels))
    layers: list[nn.Module] = [
        nn.Linear(latent_dim, reversed_channels[0] * grid_h * grid_w),
        ACTIVATIONS[activation](),
        nn.Unflatten(1, (reversed_channels[0], grid_h, grid_w)),
    ]
    for c_in, c_out in zip(reversed_channels, [*reversed_channels[1:], shape[0]], strict=True):
        if residual:
            layers.append(Residual(c_in, activation))
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
        layers.append(ACTIVATIONS[activation]())
    layers.pop()  # no activation on the output: the likelihood decides how to read it (logits or a mean)
    return nn.Sequential(*layers)


def resconv_encoder(
    shape: Shape, channels: Sequence[int], out_features: int, activation: str = "relu"
) -> nn.Sequential:
    return conv_encoder(shape, channels, out_features, activation, residual=True)


def resconv_decoder(shape: Shape, channels: Sequence[int], latent_dim: int, activation: str = "relu") -> nn.Sequential:
    return conv_decoder(shape, channels, latent_dim, activation, residual=True)


LADDER_ONLY = "--network ladder feeds a hierarchy with a spatial z1: add --latent hierarchy --z1-channels C"


def half_grid(shape: Shape) -> tuple[int, int]:
    """The ladder's grid: half the image's height and width, each of which must be divisible by 4 (one stride-2
    step to z1's grid, and one more on the way up to the layers above)."""
    _, height, width = shape
    if height % 4 or width % 4:
        raise VaekitError(
            f"--network ladder needs height and width divisible by 4, got {height}x{width}: resize the images"
        )
    return height // 2, width // 2


def ladder_encoder(shape: Shape, channels: Sequence[int], out_features: int, activation: str = "relu") -> nn.Sequential:
    """x → feature maps at half resolution, flattened (channels[0] × H/2 × W/2): the bottom of a hierarchy's
    bottom-up pass, which reads z1 out of them with a convolution, so that z1 stays local."""
    grid_h, grid_w = half_grid(shape)
    width = channels[0]
    if out_features != width * grid_h * grid_w:
        raise VaekitError(LADDER_ONLY)
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Conv2d(shape[0], width, 3, padding=1),
        act(),
        nn.Conv2d(width, width, 4, stride=2, padding=1),
        Residual(width, activation),
        nn.Flatten(),
    )


def ladder_decoder(shape: Shape, channels: Sequence[int], latent_dim: int, activation: str = "relu") -> nn.Sequential:
    """Half-resolution maps, flattened → (C', H, W): a shallow decoder, one residual block and one upsampling step,
    so that p(x | z1) models local detail and the layers above carry what the image is of."""
    grid_h, grid_w = half_grid(shape)
    width = channels[0]
    if latent_dim % (grid_h * grid_w):
        raise VaekitError(LADDER_ONLY)
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Unflatten(1, (latent_dim // (grid_h * grid_w), grid_h, grid_w)),
        nn.Conv2d(latent_dim // (grid_h * grid_w), width, 3, padding=1),
        Residual(width, activation),
        act(),
        nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
        act(),
        nn.Conv2d(width, shape[0], 3, padding=1),
    )


class MapReadout(nn.Module):
    """Feature maps, flattened (..., C·h·w) → a diagonal Gaussian's parameters at each position of z1's grid,
    flattened [μ (c·h·w), log σ² (c·h·w)]: a 3×3 convolution, so that each position of z1 reads its own
    neighbourhood and z1 keeps what is local."""

    def __init__(self, maps: int, channels: int, grid: tuple[int, int], activation: str) -> None:
        super().__init__()
        self.maps, self.grid = maps, grid
        self.net = nn.Sequential(ACTIVATIONS[activation](), nn.Conv2d(maps, 2 * channels, 3, padding=1))

    def forward(self, features: Tensor) -> Tensor:
        mu, logvar = self.net(features.reshape(-1, self.maps, *self.grid)).chunk(2, dim=1)
        flat: Tensor = torch.cat([mu.flatten(1), logvar.flatten(1)], -1)
        return flat.reshape(*features.shape[:-1], -1)


class MapConditional(nn.Module):
    """z2 → p(z1 | z2) on z1's grid: an MLP to a quarter-resolution map, one upsampling step and a residual block give
    feature maps, which `MapReadout` reads. The decoder reads those maps beside z1 (a skip connection, as in BIVA
    and Havtorn et al.'s HVAE), so what the layers above say reaches p(x | z1, z2) directly."""

    def __init__(self, above: int, width: int, maps: int, channels: int, grid: tuple[int, int], activation: str):
        super().__init__()
        act = ACTIVATIONS[activation]
        quarter = (grid[0] // 2, grid[1] // 2)
        self.maps = nn.Sequential(
            nn.Linear(above, width),
            act(),
            nn.Linear(width, maps * quarter[0] * quarter[1]),
            act(),
            nn.Unflatten(1, (maps, *quarter)),
            nn.ConvTranspose2d(maps, maps, 4, stride=2, padding=1),
            Residual(maps, activation),
        )
        self.readout = MapReadout(maps, channels, grid, activation)

    def features(self, above: Tensor) -> Tensor:
        """The maps p(z1 | z2) is read from, flattened: (..., maps·h·w) for z2 (..., D2)."""
        flat: Tensor = self.maps(above.reshape(-1, above.shape[-1])).flatten(1)
        return flat.reshape(*above.shape[:-1], -1)

    def forward(self, above: Tensor) -> Tensor:
        params: Tensor = self.readout(self.features(above))
        return params


Builder = Callable[[Shape, Sequence[int], int, str], nn.Sequential]


@dataclass(frozen=True)
class Network:
    """A network family: its encoder and decoder builders, and whether the encoder reads a flat vector (then extra
    inputs, such as a one-hot label, join as more features; otherwise as constant image channels)."""

    encoder: Builder
    decoder: Builder
    flat_input: bool


def default_hidden(widths: list[int]) -> Callable[[TrainConfig], None]:
    """The widths (or channels) a network family gets when `hidden` is left empty."""

    def settle(config: TrainConfig) -> None:
        if not config.model.hidden:
            config.model.hidden = list(widths)

    return settle


NETWORKS.register(Part("mlp", settle=default_hidden([400]), impl=Network(mlp_encoder, mlp_decoder, flat_input=True)))
NETWORKS.register(
    Part("conv", settle=default_hidden([32, 64]), impl=Network(conv_encoder, conv_decoder, flat_input=False))
)
NETWORKS.register(
    Part(
        "resconv",
        "residual conv",
        settle=default_hidden([32, 64]),
        doc="residual conv: 28×28 or 32×32 images, 1 or 3 channels",
        impl=Network(resconv_encoder, resconv_decoder, flat_input=False),
    )
)


NETWORKS.register(
    Part(
        "ladder",
        "ladder conv",
        settle=default_hidden([32]),
        doc="conv stages that keep a half-resolution grid, for a hierarchy whose z1 is feature maps "
        "(`--latent hierarchy --z1-channels C`); `--hidden` is their channels",
        requires=(
            Requirement(
                lambda c: c.model.latent == "hierarchy" and c.model.options.get("z1_channels", 0) > 0,
                LADDER_ONLY,
            ),
            Requirement(lambda c: c.model.condition == "none", "--network ladder reads no label: drop --condition"),
        ),
        impl=Network(ladder_encoder, ladder_decoder, flat_input=False),
    )
)


def network(name: str) -> Network:
    """The network family registered as `name`."""
    found: Network = NETWORKS[name].impl
    return found
