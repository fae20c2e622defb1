"""What the likelihood scores: one definition of the values p(x|z) sees, for training, evaluation and the tools.

Images arrive as uint8 (or float32 in [0, 1]); `Scoring.input` turns a batch into the float tensor the model
scores, `Scoring.offset` gives the per-image constant that makes log p(x|z) a log-probability of the data as stored:

  bernoulli, grey values      k/255 as targets: the usual, unnormalized choice (no density, no bits/dim to compare)
  bernoulli, dynamic          a Bernoulli(k/255) draw of every pixel (Salakhutdinov & Murray 2008): fresh per batch
                              in training, one fixed-seed draw in evaluation (the generator decides which)
  bernoulli, static           the fixed draw made when the data was loaded (so are validation and test splits)
  gaussian*, 8-bit data       uniformly dequantized x̃ = (k + u)/256, u ~ U[0, 1), with −D·log 256 per image:
                              log P(k) ≥ E_u[log p(x̃)] − D·log 256 (Theis et al. 2016), a bound on the same discrete
                              likelihood in training (fresh u) and in evaluation (fixed-seed u)
  gaussian*, float data       the values as given (a density; nothing to dequantize)
  continuous-bernoulli        as the Gaussians: a normalized density on [0, 1]
  discretized-logistic        k/255 as given: the likelihood is the probability of level k itself (no bound, no offset)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.config import DataConfig, ModelConfig
from vaekit.data.sources import to_float
from vaekit.model.heads import scores

LOG_256 = math.log(256)


@dataclass(frozen=True)
class Scoring:
    """How one run turns stored images into the values its likelihood scores."""

    binarize: bool  # draw Bernoulli(k/255) pixels on every use (dynamic binarization)
    dequantize: bool  # the likelihood is a density: 8-bit pixels become (k + u)/256
    levels: bool = False  # the likelihood gives each of the 256 levels its probability (discretized logistic)

    @classmethod
    def of(cls, model: ModelConfig, data: DataConfig | None = None) -> Scoring:
        """The scoring of a run. Without `data`, no draw is made: validation and test splits (and static training
        sets) arrive already binarized by `vaekit.data.sources.load_dataset`, so only dynamic training images need
        one."""
        scored = scores(model.likelihood)
        return cls(
            binarize=data is not None and data.binarize == "dynamic",
            dequantize=scored.dequantize,
            levels=scored.levels,
        )

    def input(self, x: Tensor, generator: torch.Generator | None = None, fresh: bool = False) -> Tensor:
        """The float images (N, C, H, W) to score; draws use `generator`: `fresh` ones in training, seeded ones in
        evaluation (see `bernoulli_draw`)."""
        eight_bit = x.dtype == torch.uint8
        values = to_float(x)
        if self.binarize:  # a draw of 0/1 pixels is itself 8-bit data: 0 or 255
            values = bernoulli_draw(values, generator, fresh)
            if eight_bit and self.dequantize:
                x = values.mul(255).to(torch.uint8)
        if eight_bit and self.dequantize:
            noise = torch.rand(x.shape, generator=generator, dtype=torch.float32, device=x.device)
            return (x.float() + noise) / 256
        return values

    def offset(self, x: Tensor) -> float:
        """Per-image constant added to log p(x|z): −D·log 256 for dequantized 8-bit images, else 0."""
        return -math.prod(x.shape[1:]) * LOG_256 if self.dequantize and x.dtype == torch.uint8 else 0.0

    def describe(self, x: Tensor) -> str:
        """One line saying what was scored, for reports."""
        if self.dequantize:
            return "uniformly dequantized 8-bit pixels, − D·log 256" if x.dtype == torch.uint8 else "continuous values"
        if self.levels:
            return "8-bit pixel values: the exact probability of each of the 256 levels"
        if self.binarize or is_binary(x):
            return "fixed-seed binarized images"
        return "grey values as Bernoulli targets (not a normalized density)"


def is_binary(x: Tensor) -> bool:
    """Whether stored images hold only black and white pixels (0 and 255, or 0 and 1 as floats)."""
    top = 255 if x.dtype == torch.uint8 else 1
    return bool(((x == 0) | (x == top)).all())


def bernoulli_draw(p: Tensor, generator: torch.Generator | None, fresh: bool) -> Tensor:
    """0/1 pixels, each 1 with probability p. A `fresh` draw (training's: any draw will do) compares uniforms with p,
    2–3 times faster than torch.bernoulli on CPU; a seeded one keeps torch.bernoulli's stream, so that a seed still
    picks the binarized test set, and so the score, that earlier runs measured."""
    if not fresh:
        return torch.bernoulli(p, generator=generator)
    uniforms = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=p.device)
    return (uniforms < p).to(p.dtype)  # P(u < p) = p for u ~ U[0, 1): exactly 0 at p = 0, exactly 1 at p = 1
