"""Likelihoods p(x|z) for binary and continuous values: Bernoulli and Gaussian (see `pixel_likelihoods` for the
continuous Bernoulli and the discretized logistic mixture, and `heads` for the modules that build them).

All log-densities are in nats, summed over the event dimensions (C, H, W): one value per example (and per sample).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.model.posteriors import LOG_2PI
from vaekit.parts import Exported, Output

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

    export: Exported = (
        Output(
            "logits",
            "logits",
            "Bernoulli logits per pixel: p = sigmoid(logits), in [0, 1], is the picture; x ~ Bernoulli(p) a binary "
            "sample",
        ),
    )

    def __init__(self, logits: Tensor, event_ndim: int = 3) -> None:
        self.logits = logits
        self.event_ndim = event_ndim

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, x: Tensor) -> Tensor:
        """Σ_j x_j log p_j + (1 − x_j) log(1 − p_j) = Σ_j x_j·l_j − softplus(l_j) for logits l (stable for any l).

        One code per image (training): PyTorch's fused binary cross-entropy, one pass forward and one backward. Many
        codes sharing one x (importance-weighted bounds): a dot product and one softplus pass, twice as fast there,
        since x is never expanded.
        """
        logits, target = self.logits.flatten(-self.event_ndim), x.flatten(-self.event_ndim)
        if logits.numel() == target.numel():
            bce = F.binary_cross_entropy_with_logits(logits, target.reshape(logits.shape), reduction="none")
            return -bce.sum(-1)
        linear: Tensor = torch.linalg.vecdot(logits, target)
        return linear - F.softplus(logits).sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean, generator=generator)


class Gaussian:
    """p(x|z) = N(x; loc, diag(exp(log_scale)²)); log_scale broadcasts (a constant, one learned scalar, or a learned
    value per pixel)."""

    export: Exported = (
        Output("mean", "loc", "Gaussian mean per pixel, in [0, 1] (the sigmoid is applied): the picture"),
        Output("log_scale", "log_scale", "log sigma per pixel: a sample is mean + exp(log_scale) * eps, eps ~ N(0, 1)"),
    )

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
