"""The objectives, written once: the ELBO and its terms per example, in nats; bits per dimension.

Every function returns one value per example (shape (N,)); callers average over the batch at the very end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from vaekit.model import VAE


@dataclass
class ElboTerms:
    """log p(x|z) and KL(q(z|x) ‖ p(z)) per example; the ELBO is their difference."""

    log_px: Tensor  # (N,) reconstruction term E_q[log p(x|z)], one-sample Monte Carlo estimate
    kl: Tensor  # (N,) closed form

    @property
    def elbo(self) -> Tensor:
        return self.log_px - self.kl

    def objective(self, beta: float = 1.0) -> Tensor:
        """log p(x|z) − β·KL: the β-VAE objective (Higgins et al. 2017); β = 1 is the ELBO, β < 1 during warm-up."""
        return self.log_px - beta * self.kl


def elbo(model: VAE, x: Tensor, generator: torch.Generator | None = None) -> ElboTerms:
    """ELBO(x) = E_{q(z|x)}[log p(x|z)] − KL(q(z|x) ‖ N(0, I))   (Kingma & Welling 2014, eq. 10).

    One reparameterized sample z = mu + sigma·eps estimates the expectation; the KL is exact, which is lower variance
    than sampling it too.
    """
    posterior = model.encode(x)
    z = posterior.rsample(generator=generator)
    likelihood = model.decode(z)
    return ElboTerms(log_px=likelihood.log_prob(x), kl=posterior.kl())


def bits_per_dim(nats_per_example: Tensor | float, dims: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per dimension: nats / (dims · ln 2)."""
    return nats_per_example / (dims * math.log(2))
