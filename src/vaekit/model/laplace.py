"""The Laplace likelihood: p(x|z) = Π Laplace(x; sigmoid(out), b) with one learned scale b for every pixel.

Its log-density −|x − μ|/b − log 2b penalizes a residual linearly rather than quadratically, so a few badly
reconstructed pixels cost less than under a Gaussian, and its mean is sharper where a Gaussian's averages (the L1
loss is its negative log-likelihood at fixed b). Like the Gaussians it is a density on [0, 1]-valued pixels, scored on
dequantized 8-bit data.

This module is the whole part: the distribution, its head, what an export holds of it, and its registration.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.model.heads import DEQUANTIZED, Likelihood, register
from vaekit.model.likelihoods import LOG_SCALE_MIN, sum_event
from vaekit.parts import Exported, Output

INITIAL_SCALE = 0.1  # b at the first step, about the spread of a decoder's first guesses on [0, 1] pixels


class Laplace:
    """p(x|z) = Π_j (1 / 2b_j) exp(−|x_j − loc_j| / b_j), with log b given (it broadcasts over the pixels)."""

    export: Exported = (
        Output("mean", "loc", "Laplace location per pixel, in [0, 1] (the sigmoid is applied): the picture"),
        Output(
            "log_scale",
            "log_scale",
            "log b per pixel: a sample is mean - exp(log_scale) * sign(u) * log(1 - 2|u|), u ~ U(-1/2, 1/2)",
        ),
    )

    def __init__(self, loc: Tensor, log_scale: Tensor, event_ndim: int = 3) -> None:
        self.loc = loc
        self.log_scale = log_scale.expand_as(loc)
        self.event_ndim = event_ndim

    @property
    def mean(self) -> Tensor:
        return self.loc

    def log_prob(self, x: Tensor) -> Tensor:
        """−Σ_j [log 2 + log b_j + |x_j − loc_j| / b_j]."""
        residual = (x - self.loc).abs() * torch.exp(-self.log_scale)
        return -sum_event(math.log(2.0) + self.log_scale + residual, self.event_ndim)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Inverse CDF: loc − b·sign(u)·log(1 − 2|u|) for u uniform on (−½, ½)."""
        u = torch.rand(self.loc.shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device) - 0.5
        u = u.clamp(-0.5 + 1e-7, 0.5 - 1e-7)  # log(1 − 2|u|) finite at the ends of the interval
        return self.loc - torch.exp(self.log_scale) * u.sign() * torch.log1p(-2 * u.abs())


class LaplaceHead(nn.Module):
    """Decoder output → Laplace with location sigmoid(out) and one learned scale, floored like the Gaussians' σ."""

    channels, scores = 1, DEQUANTIZED

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(INITIAL_SCALE)))

    def forward(self, out: Tensor) -> Likelihood:
        return Laplace(torch.sigmoid(out), self.log_scale.clamp_min(LOG_SCALE_MIN))


def _build(config: ModelConfig) -> nn.Module:
    return LaplaceHead()


register("laplace", "one learned scale, L1-like", _build, DEQUANTIZED)
