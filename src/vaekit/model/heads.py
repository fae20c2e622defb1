"""Likelihood heads: the small modules that turn decoder outputs into a likelihood p(x|z), and the one place that
maps a config's likelihood name to its head.

A head declares how many decoder outputs it reads per image channel (`channels`) and what data it scores
(`scores`, read by `vaekit.data.scoring`): "as-is" (values in [0, 1] as targets), "dequantized" (a density over
8-bit data made continuous: x̃ = (k + u)/256, with −D·log 256 per image), or "8-bit" (the probability of each of the
256 levels, exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.model.likelihoods import LOG_SCALE_MIN, Bernoulli, Gaussian
from vaekit.model.pixel_likelihoods import ContinuousBernoulli, DiscretizedLogisticMixture

Likelihood = Bernoulli | Gaussian | ContinuousBernoulli | DiscretizedLogisticMixture


class BernoulliHead(nn.Module):
    """Decoder logits → Bernoulli: for binary images, or grey values as targets."""

    channels, scores = 1, "as-is"

    def forward(self, out: Tensor) -> Likelihood:
        return Bernoulli(out)


class ContinuousBernoulliHead(nn.Module):
    """Decoder logits → continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the normalized density on [0, 1]
    that the Bernoulli applied to grey values is not, so it is scored like the Gaussians, on dequantized pixels."""

    channels, scores = 1, "dequantized"

    def forward(self, out: Tensor) -> Likelihood:
        return ContinuousBernoulli(out)


class DiscretizedLogisticHead(nn.Module):
    """Decoder outputs → a mixture of discretized logistics per pixel (Salimans et al. 2017): the probability of each
    8-bit level, exact, so bits/dim need no dequantization bound."""

    scores = "8-bit"

    def __init__(self, mixtures: int) -> None:
        super().__init__()
        self.mixtures = mixtures
        self.channels = DiscretizedLogisticMixture.channels(mixtures)

    def forward(self, out: Tensor) -> Likelihood:
        return DiscretizedLogisticMixture(out, self.mixtures)


class GaussianHead(nn.Module):
    """Decoder output → Gaussian with mean sigmoid(out) and σ fixed (`gaussian`), one σ learned for every pixel
    (`gaussian-learned`) or one σ per pixel learned and shared across images (`gaussian-pixel`)."""

    channels, scores = 1, "dequantized"

    def __init__(self, kind: str, scale: float, shape: Sequence[int]) -> None:
        super().__init__()
        self.learned = kind != "gaussian"
        log_scale = torch.tensor(math.log(scale))
        if kind == "gaussian-learned":
            self.log_scale = nn.Parameter(log_scale)
        elif kind == "gaussian-pixel":
            self.log_scale = nn.Parameter(log_scale.expand(tuple(shape)).clone())
        else:  # a constant; a buffer so it travels with .to(device) and the weights file
            self.register_buffer("log_scale", log_scale)

    def forward(self, out: Tensor) -> Likelihood:
        log_scale: Tensor = self.log_scale
        if self.learned:  # a learned σ gets a floor; a fixed one is what the user chose
            log_scale = log_scale.clamp_min(LOG_SCALE_MIN)
        return Gaussian(torch.sigmoid(out), log_scale)


Head = BernoulliHead | GaussianHead | ContinuousBernoulliHead | DiscretizedLogisticHead
HEADS: dict[str, tuple[type[Head], Callable[[ModelConfig], Head]]] = {  # name -> (class, builder)
    "bernoulli": (BernoulliHead, lambda config: BernoulliHead()),
    "continuous-bernoulli": (ContinuousBernoulliHead, lambda config: ContinuousBernoulliHead()),
    "discretized-logistic": (DiscretizedLogisticHead, lambda config: DiscretizedLogisticHead(config.mixtures)),
    **{
        name: (GaussianHead, lambda config: GaussianHead(config.likelihood, config.gaussian_scale, config.input_shape))
        for name in ("gaussian", "gaussian-learned", "gaussian-pixel")
    },
}


def build_head(config: ModelConfig) -> Head:
    return HEADS[config.likelihood][1](config)


def scores(likelihood: str) -> str:
    """What data a named likelihood scores, without building it: its head class says."""
    return HEADS[likelihood][0].scores
