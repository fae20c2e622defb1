"""The objectives, written once: the ELBO and its terms per example, in nats; bits per dimension.

Every function returns one value per example (shape (N,)); callers average over the batch at the very end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from vaekit.devices import accumulate_dtype
from vaekit.model.distributions import Randomness

if TYPE_CHECKING:
    from vaekit.model.vae import VAE


@dataclass
class ElboTerms:
    """log p(x|z) and KL(q(z|x) ‖ p(z)) per example; the ELBO is their difference."""

    log_px: Tensor  # (N,) reconstruction term E_q[log p(x|z)], Monte Carlo estimate at samples of q
    kl: Tensor  # (N,) closed form
    # (N,) log p(x|z) at relaxed codes (Gumbel-softmax training): the surrogate the gradient flows through. Beside the
    # discrete KL it is not an ELBO, so `log_px` then holds the estimate at exact samples, without gradient.
    relaxed_log_px: Tensor | None = None

    @property
    def elbo(self) -> Tensor:
        return self.log_px - self.kl

    def objective(self, beta: float = 1.0) -> Tensor:
        """log p(x|z) − β·KL: the β-VAE objective (Higgins et al. 2017); β = 1 is the ELBO, β < 1 during warm-up.
        With relaxed codes, the relaxed reconstruction term stands in for log p(x|z) (Jang et al. 2017)."""
        log_px = self.log_px if self.relaxed_log_px is None else self.relaxed_log_px
        return log_px - beta * self.kl


def score_term(reward: Tensor, log_q: Tensor) -> Tensor:
    """reward · (log q − stop_gradient(log q)): zero in value, and its gradient is the score-function (REINFORCE)
    estimator reward · ∇ log q(z) (Williams 1992), unbiased because E_q[∇ log q] = 0. `reward` carries no gradient."""
    return reward.detach() * (log_q - log_q.detach())


def leave_one_out_mean(values: Tensor) -> Tensor:
    """For S samples along dim 0, each one's baseline: the mean of the other S − 1 (Kool et al. 2019, "Buy 4
    REINFORCE samples, get a baseline for free"); independent of its own sample, so the estimator stays unbiased."""
    return (values.sum(0, keepdim=True) - values) / (len(values) - 1)


def elbo(
    model: VAE, x: Tensor, generator: Randomness = None, estimator: str = "reparam", samples: int = 1
) -> ElboTerms:
    """ELBO(x) = E_{q(z|x)}[log p(x|z)] − KL(q(z|x) ‖ N(0, I))   (Kingma & Welling 2014, eq. 10).

    `samples` draws of z estimate the expectation; the KL is exact, which is lower variance than sampling it too.
    The value is the same for every `estimator`; only the gradient reaching the encoder differs:
      reparam                  z = mu + sigma·eps, so ∇ flows through z (the pathwise estimator);
      score-function           z is drawn with no path back, and log p(x|z)·∇ log q(z|x) stands in for it;
      score-function-baseline  the same with log p(x|z) minus a leave-one-out baseline (needs samples ≥ 2).
    The decoder's gradient, and the closed-form KL's, are the same in all three. For the autoencoder's point mass,
    z is the code and the KL is 0: log p(x|code) alone is its objective (and no ELBO).
    """
    posterior = model.encode(x)
    if estimator == "reparam":
        log_px = model.decode(posterior.rsample(samples, generator=generator)).log_prob(x)  # (samples, N)
    else:
        z = posterior.sample(samples, generator=generator)  # no path back to mu or sigma
        log_px = model.decode(z).log_prob(x)  # reaches the decoder only
        reward = log_px.detach()
        if estimator == "score-function-baseline":
            reward = reward - leave_one_out_mean(reward)
        log_px = log_px + score_term(reward, posterior.log_prob(z))
    if estimator == "reparam" and posterior.relaxed:  # the ELBO itself needs exact samples of q; no gradient
        with torch.no_grad():
            exact = model.decode(posterior.sample(samples, generator=generator)).log_prob(x)
        return ElboTerms(log_px=exact.mean(0), kl=posterior.kl(), relaxed_log_px=log_px.mean(0))
    return ElboTerms(log_px=log_px.mean(0), kl=posterior.kl())


def bits_per_dim(nats_per_example: Tensor | float, dims: int) -> Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per dimension: nats / (dims · ln 2).

    The one definition for training records and evaluation alike. The nats must be those of the data as stored:
    for a density on dequantized 8-bit pixels, including the −D·log 256 of `vaekit.data.scoring.Scoring.offset`.
    """
    return nats_per_example / (dims * math.log(2))


def log_importance_weights(model: VAE, x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x) for z_i ~ q(z|x), i = 1..k; shape (k, N)."""
    posterior = model.encode(x)
    z = posterior.sample(k, generator=generator)  # (k, N, D); exact one-hot codes for a categorical posterior
    return model.decode(z).log_prob(x) + model.prior_log_prob(z) - posterior.log_prob(z)


def iwae_bound(model: VAE, x: Tensor, k: int, generator: torch.Generator | None = None, max_rows: int = 4096) -> Tensor:
    """The importance-weighted bound log p(x) ≥ log (1/k) Σ_i w_i  (Burda, Grosse & Salakhutdinov 2016, eq. 8).

    k = 1 is a one-sample ELBO estimate; the bound tightens monotonically in k and reaches log p(x) as k → ∞.
    Samples are drawn in chunks of at most `max_rows` decoder evaluations (N · chunk ≤ max_rows), so memory stays
    O(max_rows · pixels) for any k; the log-sum-exp over all k weights is accumulated in float64
    (float32 on MPS). Returns (N,).
    """
    chunk = max(1, max_rows // len(x))
    partial = []  # log Σ w over each chunk, (N,) each
    for start in range(0, k, chunk):
        log_w = log_importance_weights(model, x, min(chunk, k - start), generator)
        partial.append(torch.logsumexp(log_w.to(accumulate_dtype(log_w.device)), dim=0))
    return torch.logsumexp(torch.stack(partial), dim=0) - math.log(k)
