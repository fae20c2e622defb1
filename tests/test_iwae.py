"""The importance-weighted bound against an exact log-likelihood no one here wrote: probabilistic PCA.

A VAE whose decoder is linear-Gaussian, p(x|z) = N(Wz + b, σ²I) with p(z) = N(0, I), has the exact marginal
p(x) = N(b, WWᵀ + σ²I) (Tipping & Bishop 1999), evaluated here by torch.distributions.MultivariateNormal. Its
encoder is the exact posterior mean with the *diagonal* of the exact posterior covariance, so the ELBO is strictly
below log p(x) and the importance-weighted bound must close the gap as k grows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from vaekit import VAE, ModelConfig
from vaekit.model.heads import Likelihood
from vaekit.model.likelihoods import Gaussian
from vaekit.model.objectives import iwae_bound, log_importance_weights

P, D, SIGMA = 6, 2, 0.3


class LinearGaussianVAE(VAE):
    """The same VAE class with the sigmoid on the Gaussian mean removed: a linear decoder."""

    def decode(self, z: Tensor, y: Tensor | None = None) -> Likelihood:  # an unconditional oracle: y is None
        leading = z.shape[:-1]
        loc = self.decoder(z.reshape(-1, self.latent_dim)).reshape(*leading, *self.input_shape)
        return Gaussian(loc, self.likelihood.log_scale, event_ndim=3)


@pytest.fixture(scope="module")
def ppca() -> tuple[LinearGaussianVAE, Tensor, Tensor]:
    """The model, 300 images drawn from it, and their exact log p(x)."""
    g = torch.Generator().manual_seed(0)
    config = ModelConfig(
        hidden=[], latent_dim=D, likelihood="gaussian", options={"gaussian_scale": SIGMA}, input_shape=[1, 1, P]
    )
    model = LinearGaussianVAE(config).double()
    w = torch.randn(P, D, generator=g, dtype=torch.float64)
    w[:, 1] += 0.8 * w[:, 0]  # correlated columns: a posterior far from diagonal
    b = torch.randn(P, generator=g, dtype=torch.float64) * 0.5
    m_inv = torch.linalg.inv(w.T @ w + SIGMA**2 * torch.eye(D, dtype=torch.float64))
    with torch.no_grad():
        decoder, encoder = model.decoder[0], model.encoder[1]
        decoder.weight.copy_(w)
        decoder.bias.copy_(b)
        encoder.weight.zero_()
        encoder.weight[:D] = m_inv @ w.T  # E[z|x] = M⁻¹Wᵀ(x − b)
        encoder.bias[:D] = -(m_inv @ w.T @ b)
        encoder.bias[D:] = torch.log(SIGMA**2 * torch.diagonal(m_inv))  # diagonal of Cov[z|x] = σ²M⁻¹
    marginal = MultivariateNormal(b, w @ w.T + SIGMA**2 * torch.eye(P, dtype=torch.float64))
    x = marginal.sample((300,)).view(300, 1, 1, P)
    return model, x, marginal.log_prob(x.view(300, P))


@torch.no_grad()
def test_bound_converges_to_the_exact_log_likelihood(ppca: tuple[LinearGaussianVAE, Tensor, Tensor]) -> None:
    model, x, exact = ppca
    g = torch.Generator().manual_seed(1)
    elbo = model.elbo(x, g).elbo.mean()
    gaps = {k: float((exact - iwae_bound(model, x, k, g)).mean()) for k in (1, 10, 100, 5000)}
    assert float(elbo) < float(exact.mean()) - 0.05  # the diagonal posterior leaves a real gap to close
    assert gaps[1] > gaps[10] > gaps[100] > gaps[5000] >= -0.01  # tighter with k, never above log p(x) on average
    bound = iwae_bound(model, x, 5000, g)
    diff = bound - exact
    stderr = float(diff.std() / math.sqrt(len(diff)))
    assert abs(float(diff.mean())) < 3 * stderr + 1e-3
    assert float(elbo) <= float(bound.mean()) <= float(exact.mean()) + 3 * stderr


@torch.no_grad()
def test_one_sample_bound_is_the_elbo_on_average(ppca: tuple[LinearGaussianVAE, Tensor, Tensor]) -> None:
    model, x, _ = ppca
    x = x[:20]
    g = torch.Generator().manual_seed(2)
    log_w = log_importance_weights(model, x, 20000, g)  # k = 1 bounds, 20000 independent draws each
    repeated = x.expand(20000, *x.shape).reshape(-1, *x.shape[1:])  # each image 20000 times, in one call
    analytic_kl_elbo = model.elbo(repeated, g).elbo.view(20000, len(x))  # one-sample ELBOs, the KL in closed form
    difference = log_w.mean(0) - analytic_kl_elbo.mean(0)
    stderr = (log_w.var(0) / 20000 + analytic_kl_elbo.var(0) / 20000).sqrt()
    assert (difference.abs() < 4 * stderr).all()


@torch.no_grad()
def test_chunking_does_not_change_the_bound(ppca: tuple[LinearGaussianVAE, Tensor, Tensor]) -> None:
    """The same noise stream in one chunk or eight: the float64 log-sum-exp over chunks gives the same bound."""
    model, x, _ = ppca
    whole = iwae_bound(model, x[:8], 64, torch.Generator().manual_seed(3), max_rows=8 * 64)
    chunked = iwae_bound(model, x[:8], 64, torch.Generator().manual_seed(3), max_rows=8 * 8)
    torch.testing.assert_close(whole, chunked, rtol=0, atol=1e-9)
