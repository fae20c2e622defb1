"""Paths through the latent space. The VAE's noise makes neighbouring latents decode to similar images, so a straight
line between two posterior means (and past its ends) decodes to a meaningful sequence of images."""

from __future__ import annotations

import torch
from torch import Tensor


def interpolation_weights(steps: int, extend: float = 0.0) -> Tensor:
    """t in [−extend, 1 + extend], `steps` values: t = 0 and t = 1 are the endpoints, the rest extrapolates."""
    return torch.linspace(-extend, 1.0 + extend, steps)


def interpolate(z_a: Tensor, z_b: Tensor, steps: int, extend: float = 0.0) -> Tensor:
    """Linear path z(t) = (1 − t)·z_a + t·z_b for each t; (D,) endpoints give (steps, D), (N, D) give (N, steps, D)."""
    t = interpolation_weights(steps, extend).to(z_a)
    return torch.lerp(z_a.unsqueeze(-2), z_b.unsqueeze(-2), t.unsqueeze(-1))
