"""Likelihoods p(x|z): the distribution objects, and the heads that turn decoder outputs into them.

All log-densities are in nats, summed over the event dimensions (C, H, W): one value per example (and per sample).
A head declares how many decoder outputs it reads per image channel (`channels`) and what data it scores
(`scores`): "as-is" (values in [0, 1] as targets), or "dequantized" (a density over 8-bit data made continuous,
see `vaekit.data.scoring`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.model.posteriors import LOG_2PI

# The floor of a learned Gaussian likelihood's σ. Uniformly dequantized 8-bit pixels never support a σ below the bin's
# own spread, 1/(256·√12) ≈ 1.1e-3, so the floor binds only where a density would otherwise run off to infinity:
# constant pixels of continuous data, or a decoder that matches grey values exactly.
LOG_SCALE_MIN = math.log(1e-3)


def sum_event(t: Tensor, event_ndim: int) -> Tensor:
    """Sum the last `event_ndim` dimensions: one number per example (and per sample, if sampled)."""
    return t.flatten(-event_ndim).sum(-1) if event_ndim > 0 else t


class Bernoulli:
    """p(x|z) = Π Bernoulli(x; sigmoid(logits)). Targets may be binary or grey values in [0, 1] (then log p is the
    negative binary cross-entropy, the usual, unnormalized choice of tutorials)."""

    def __init__(self, logits: Tensor, event_ndim: int = 3) -> None:
        self.logits = logits
        self.event_ndim = event_ndim

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: Tensor) -> Tensor:
        """Σ_j x_j log p_j + (1 − x_j) log(1 − p_j) = Σ_j x_j·l_j − softplus(l_j) for logits l (stable for any l).

        Written as a dot product and one softplus pass rather than the fused BCE kernel: the same speed in training,
        twice as fast when many latent samples share one x (importance-weighted evaluation), since x is never expanded.
        """
        logits = self.logits.flatten(-self.event_ndim)
        linear: Tensor = torch.linalg.vecdot(logits, x.flatten(-self.event_ndim))
        return linear - F.softplus(logits).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean, generator=generator)


class Gaussian:
    """p(x|z) = N(x; loc, diag(exp(log_scale)²)); log_scale broadcasts (a constant, one learned scalar, or a learned
    value per pixel)."""

    def __init__(self, loc: Tensor, log_scale: Tensor, event_ndim: int = 3) -> None:
        self.loc = loc
        self.log_scale = log_scale.expand_as(loc)
        self.event_ndim = event_ndim

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def stddev(self) -> Tensor:
        return torch.exp(self.log_scale)

    def log_prob(self, x: Tensor) -> Tensor:
        """−½ Σ [log 2π + 2 log σ + (x − loc)² / σ²]."""
        z = (x - self.loc) * torch.exp(-self.log_scale)
        return -sum_event(0.5 * LOG_2PI + self.log_scale + 0.5 * z**2, self.event_ndim)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.loc.shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.stddev * noise


Likelihood = Bernoulli | Gaussian


class BernoulliHead(nn.Module):
    """Decoder logits → Bernoulli: for binary images, or grey values as targets."""

    channels, scores = 1, "as-is"

    def forward(self, out: Tensor) -> Likelihood:
        return Bernoulli(out)


class GaussianHead(nn.Module):
    """Decoder output → Gaussian with mean sigmoid(out) and σ fixed (`gaussian`), one σ learned for every pixel
    (`gaussian-learned`) or one σ per pixel learned and shared across images (`gaussian-pixel`)."""

    channels, scores = 1, "dequantized"

    def __init__(self, kind: str, scale: float, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.learned = kind != "gaussian"
        log_scale = torch.tensor(math.log(scale))
        if kind == "gaussian-learned":
            self.log_scale = nn.Parameter(log_scale)
        elif kind == "gaussian-pixel":
            self.log_scale = nn.Parameter(log_scale.expand(shape).clone())
        else:  # a constant; a buffer so it travels with .to(device) and the weights file
            self.register_buffer("log_scale", log_scale)

    def forward(self, out: Tensor) -> Likelihood:
        log_scale: Tensor = self.log_scale
        if self.learned:  # a learned σ gets a floor; a fixed one is what the user chose
            log_scale = log_scale.clamp_min(LOG_SCALE_MIN)
        return Gaussian(torch.sigmoid(out), log_scale)


Head = BernoulliHead | GaussianHead
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned", "gaussian-pixel")


def build_head(config: ModelConfig) -> Head:
    if config.likelihood == "bernoulli":
        return BernoulliHead()
    return GaussianHead(config.likelihood, config.gaussian_scale, tuple(config.input_shape))


def scores(likelihood: str) -> str:
    """What data a named likelihood scores, without building it: "as-is" or "dequantized"."""
    return "as-is" if likelihood == "bernoulli" else "dequantized"
