"""Likelihood heads: the small modules that turn decoder outputs into a likelihood p(x|z), each registered as a
likelihood part (`vaekit.parts.LIKELIHOODS`) under the name a config gives.

A head declares how many decoder outputs it reads per image channel (`channels`) and what data it scores
(`scores`, read by `vaekit.data.scoring`): `AS_IS` (values in [0, 1] as targets), `DEQUANTIZED` (a density over
8-bit data made continuous: x̃ = (k + u)/256, with −D·log 256 per image), or `LEVELS` (the probability of each of the
256 levels, exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig, options_of, setting
from vaekit.model.likelihoods import LOG_SCALE_MIN, Bernoulli, Gaussian
from vaekit.model.pixel_likelihoods import ContinuousBernoulli, DiscretizedLogisticMixture
from vaekit.parts import LIKELIHOODS, Part, Requirement


class Likelihood(Protocol):
    """p(x|z): what every likelihood gives (see `vaekit.model.likelihoods`)."""

    @property
    def mean(self) -> Tensor: ...
    def log_prob(self, x: Tensor) -> Tensor: ...
    def sample(self, generator: torch.Generator | None = None) -> Tensor: ...


@dataclass(frozen=True)
class Scores:
    """What data a likelihood scores, read by `vaekit.data.scoring`."""

    dequantize: bool  # a density on continuous values: 8-bit pixels are dequantized, with −D·log 256 per image
    levels: bool  # the probability of each of the 256 levels of 8-bit pixels, exact


AS_IS, DEQUANTIZED, LEVELS = Scores(False, False), Scores(True, False), Scores(False, True)


class BernoulliHead(nn.Module):
    """Decoder logits → Bernoulli: for binary images, or grey values as targets."""

    channels, scores = 1, AS_IS

    def forward(self, out: Tensor) -> Likelihood:
        return Bernoulli(out)


class ContinuousBernoulliHead(nn.Module):
    """Decoder logits → continuous Bernoulli (Loaiza-Ganem & Cunningham 2019): the normalized density on [0, 1]
    that the Bernoulli applied to grey values is not, so it is scored like the Gaussians, on dequantized pixels."""

    channels, scores = 1, DEQUANTIZED

    def forward(self, out: Tensor) -> Likelihood:
        return ContinuousBernoulli(out)


class DiscretizedLogisticHead(nn.Module):
    """Decoder outputs → a mixture of discretized logistics per pixel (Salimans et al. 2017): the probability of each
    8-bit level, exact, so bits/dim need no dequantization bound."""

    scores = LEVELS

    def __init__(self, mixtures: int) -> None:
        super().__init__()
        self.mixtures = mixtures
        self.channels = DiscretizedLogisticMixture.channels(mixtures)

    def forward(self, out: Tensor) -> Likelihood:
        return DiscretizedLogisticMixture(out, self.mixtures)


class GaussianHead(nn.Module):
    """Decoder output → Gaussian with mean sigmoid(out) and σ fixed (`gaussian`), one σ learned for every pixel
    (`gaussian-learned`) or one σ per pixel learned and shared across images (`gaussian-pixel`)."""

    channels, scores = 1, DEQUANTIZED

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


class Head(Protocol):
    """Decoder outputs → a likelihood; `channels` outputs per image channel."""

    channels: int

    def __call__(self, out: Tensor) -> Likelihood: ...


@dataclass(frozen=True)
class HeadPart:
    """A likelihood part: how to build its head from a config, and what it scores (known without building it)."""

    build: Callable[[ModelConfig], nn.Module]
    scores: Scores


def register(
    name: str,
    help: str,
    build: Callable[[ModelConfig], nn.Module],
    scores: Scores,
    doc: str = "",
    settings: type | None = None,
    requires: tuple[Requirement, ...] = (),
) -> None:
    """Register a likelihood part: its head's builder, what it scores, and its own settings and their checks."""
    part = Part(name, help, requires=requires, impl=HeadPart(build, scores), doc=doc, settings=settings)
    LIKELIHOODS.register(part)


@dataclass(frozen=True)
class GaussianSettings:
    """The Gaussian likelihoods' own setting."""

    gaussian_scale: float = setting(0.1, "Fixed σ of the gaussian likelihood; the starting σ of the learned ones.")


@dataclass(frozen=True)
class DiscretizedLogisticSettings:
    """The discretized logistic mixture's own setting."""

    mixtures: int = setting(5, "Logistic components per pixel of discretized-logistic.", bounds=(1, 256))


def _gaussian(config: ModelConfig) -> nn.Module:
    return GaussianHead(config.likelihood, options_of(config, GaussianSettings).gaussian_scale, config.input_shape)


POSITIVE_SCALE = Requirement(
    lambda config: options_of(config.model, GaussianSettings).gaussian_scale > 0,
    "gaussian_scale must be positive: change that setting",
)


register("bernoulli", "", lambda config: BernoulliHead(), AS_IS, "on logits, for pixels in [0, 1] or binarized")
for _name, _help in (("gaussian", "fixed σ"), ("gaussian-learned", "one learned σ"), ("gaussian-pixel", "σ per pixel")):
    register(_name, _help, _gaussian, DEQUANTIZED, settings=GaussianSettings, requires=(POSITIVE_SCALE,))
register(
    "continuous-bernoulli",
    "",
    lambda config: ContinuousBernoulliHead(),
    DEQUANTIZED,
    "a normalized density on [0, 1] (Loaiza-Ganem & Cunningham 2019)",
)
register(
    "discretized-logistic",
    "",
    lambda config: DiscretizedLogisticHead(options_of(config, DiscretizedLogisticSettings).mixtures),
    LEVELS,
    "a mixture of `--mixtures M` logistics per pixel, each of the 256 levels its exact probability (Salimans et al. "
    "2017)",
    settings=DiscretizedLogisticSettings,
)
HEADS = LIKELIHOODS  # the likelihood parts: name → part, `impl` its HeadPart


def head_part(name: str) -> HeadPart:
    found: HeadPart = LIKELIHOODS[name].impl
    return found


def build_head(config: ModelConfig) -> Head:
    head: Head = head_part(config.likelihood).build(config)  # type: ignore[assignment]
    return head


def scores(likelihood: str) -> Scores:
    """What data a named likelihood scores, without building it."""
    return head_part(likelihood).scores
