"""The reparameterization core against torch.distributions, Monte Carlo, and gradients known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.errors import VaekitError
from vaekit.model.likelihoods import Bernoulli, Gaussian
from vaekit.model.posteriors import DiagonalGaussian, PointMass
from vaekit.model.priors import StandardNormal


def random_gaussian(n: int = 32, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64) * 2


def oracle(mu: torch.Tensor, logvar: torch.Tensor) -> Independent:
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def test_log_prob_matches_torch_distributions() -> None:
    mu, logvar = random_gaussian()
    z = torch.randn_like(mu) * 3
    ours = DiagonalGaussian(mu, logvar).log_prob(z)
    torch.testing.assert_close(ours, oracle(mu, logvar).log_prob(z), atol=1e-5, rtol=1e-5)


def test_kl_to_prior_matches_torch_distributions() -> None:
    mu, logvar = random_gaussian()
    prior = oracle(torch.zeros_like(mu), torch.zeros_like(logvar))
    torch.testing.assert_close(
        DiagonalGaussian(mu, logvar).kl(), kl_divergence(oracle(mu, logvar), prior), atol=1e-5, rtol=1e-5
    )


def test_kl_between_two_gaussians_matches_torch_distributions() -> None:
    mu_p, logvar_p = random_gaussian(seed=1)
    mu_q, logvar_q = random_gaussian(seed=2)
    ours = DiagonalGaussian(mu_p, logvar_p).kl(DiagonalGaussian(mu_q, logvar_q))
    expected = kl_divergence(oracle(mu_p, logvar_p), oracle(mu_q, logvar_q))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_monte_carlo_kl_over_rsample_converges_to_closed_form() -> None:
    """E_q[log q(z) − log p(z)] over reparameterized samples approaches the exact KL at the 1/√S rate."""
    mu, logvar = random_gaussian(n=4, d=3)
    q = DiagonalGaussian(mu, logvar.clamp(-2, 2))
    prior = DiagonalGaussian.standard(mu.shape)
    z = q.rsample(200_000, generator=torch.Generator().manual_seed(0))
    log_ratio = q.log_prob(z) - prior.log_prob(z)  # (S, N)
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    assert torch.all((estimate - q.kl()).abs() < 4 * stderr)


def test_rsample_is_mu_plus_sigma_times_given_eps() -> None:
    mu, logvar = random_gaussian(n=5, d=4)
    eps = torch.randn_like(mu)
    torch.testing.assert_close(DiagonalGaussian(mu, logvar).rsample(eps=eps), mu + torch.exp(0.5 * logvar) * eps)


def test_rsample_with_several_samples_adds_a_leading_dimension() -> None:
    mu, logvar = random_gaussian(n=5, d=4)
    assert DiagonalGaussian(mu, logvar).rsample(7).shape == (7, 5, 4)


def test_gradients_through_rsample_match_the_analytic_gradient() -> None:
    """For L = Σ z² with z = mu + sigma·eps: dL/dmu = 2z and dL/dlogvar = z · eps · sigma (chain rule by hand)."""
    mu, logvar = random_gaussian(n=8, d=3)
    mu.requires_grad_(True)
    logvar = logvar.clamp(-3, 3).requires_grad_(True)
    eps = torch.randn_like(mu)
    z = DiagonalGaussian(mu, logvar).rsample(eps=eps)
    (z**2).sum().backward()
    sigma = torch.exp(0.5 * logvar.detach())
    z_value = mu.detach() + sigma * eps
    torch.testing.assert_close(mu.grad, 2 * z_value)
    torch.testing.assert_close(logvar.grad, z_value * eps * sigma)


def test_expected_gradient_of_the_mean_square_is_two_mu() -> None:
    """E[z²] = mu² + sigma²: the Monte Carlo pathwise gradient averages to 2·mu and 2·sigma."""
    mu = torch.tensor([0.7, -1.3], dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor([-0.2, 0.4], dtype=torch.float64, requires_grad=True)
    z = DiagonalGaussian(mu, 2 * log_sigma).rsample(100_000, generator=torch.Generator().manual_seed(1))
    (z**2).mean(0).sum().backward()
    torch.testing.assert_close(mu.grad, 2 * mu.detach(), atol=0.03, rtol=0)
    sigma_grad = log_sigma.grad / torch.exp(log_sigma.detach())  # d/dsigma = d/dlog_sigma / sigma
    torch.testing.assert_close(sigma_grad, 2 * torch.exp(log_sigma.detach()), atol=0.03, rtol=0)


def test_sample_without_reparameterization_gives_no_gradient() -> None:
    """The point of the trick: a sample drawn outside the graph leaves the encoder outputs without any gradient."""
    mu = torch.zeros(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    z = DiagonalGaussian(mu, logvar).sample()
    assert not z.requires_grad
    with pytest.raises(RuntimeError):
        (z**2).sum().backward()
    z = DiagonalGaussian(mu, logvar).rsample()
    (z**2).sum().backward()
    assert mu.grad is not None and mu.grad.abs().sum() > 0
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_extreme_log_variances_stay_finite() -> None:
    mu = torch.zeros(2, 3)
    logvar = torch.tensor([[-1e4, 0.0, 1e4], [500.0, -500.0, 80.0]])
    q = DiagonalGaussian(mu, logvar)
    for value in (q.rsample(), q.log_prob(torch.ones(2, 3)), q.kl(), q.kl(DiagonalGaussian(mu + 1, -logvar))):
        assert torch.isfinite(value).all()


def test_a_point_mass_draws_its_code_with_gradient_and_has_no_kl_or_density() -> None:
    code = torch.randn(3, 4, requires_grad=True)
    q = PointMass(code)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(q.rsample(generator=g), code) and torch.equal(q.mode, code)
    assert torch.equal(q.rsample(5, generator=g), code.expand(5, 3, 4))
    prior = StandardNormal(4)  # any prior: the autoencoder's code is not regularized
    assert torch.equal(prior.kl(q), torch.zeros(3)) and torch.equal(prior.kl_per_unit(q), torch.zeros(3, 4))
    assert torch.equal(q.stddev, torch.zeros(3, 4))
    q.rsample(2).sum().backward()
    assert code.grad is not None and torch.equal(code.grad, torch.full((3, 4), 2.0))
    with pytest.raises(VaekitError, match="no ELBO, no likelihood bound"):
        q.log_prob(code)


def test_bernoulli_log_prob_matches_torch_on_binary_targets() -> None:
    logits = torch.randn(5, 1, 4, 4) * 4
    x = torch.bernoulli(torch.full_like(logits, 0.5))
    expected = Independent(torch.distributions.Bernoulli(logits=logits), 3).log_prob(x)
    torch.testing.assert_close(Bernoulli(logits).log_prob(x), expected, atol=1e-5, rtol=1e-5)


def test_bernoulli_log_prob_on_grey_targets_is_negative_cross_entropy() -> None:
    logits = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum((1, 2, 3))
    torch.testing.assert_close(Bernoulli(logits).log_prob(x), expected)


def test_bernoulli_broadcasts_over_sample_dimensions() -> None:
    logits = torch.randn(7, 3, 1, 4, 4)
    x = torch.rand(3, 1, 4, 4)
    assert Bernoulli(logits).log_prob(x).shape == (7, 3)


def test_bernoulli_one_code_per_image_and_many_agree_in_value_and_gradient() -> None:
    """One code per image takes the fused cross-entropy, several codes the dot product: the same function."""
    logits = (torch.randn(1, 3, 1, 4, 4, dtype=torch.float64) * 4).requires_grad_()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    one = Bernoulli(logits).log_prob(x)  # (1, 3)
    many = Bernoulli(logits.expand(2, -1, -1, -1, -1)).log_prob(x)  # (2, 3), both rows the same codes
    torch.testing.assert_close(many, one.expand(2, -1))
    (grad_one,) = torch.autograd.grad(one.sum(), logits)
    (grad_many,) = torch.autograd.grad(many.sum() / 2, logits)
    torch.testing.assert_close(grad_one, grad_many)
    torch.testing.assert_close(grad_one, x - torch.sigmoid(logits.detach()))  # d/dl [x·l − softplus(l)]


def test_one_sample_is_the_same_draw_as_a_sample_axis_of_one() -> None:
    mu, logvar = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3)
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample(1, generator=torch.Generator().manual_seed(4))
    eps = torch.randn(1, 5, 3, generator=torch.Generator().manual_seed(4))
    assert z.shape == (1, 5, 3)
    torch.testing.assert_close(z, q.rsample(eps=eps))
    (grad,) = torch.autograd.grad(z.sum(), mu)
    torch.testing.assert_close(grad, torch.ones(5, 3))


@pytest.mark.parametrize("log_scale_shape", [(), (1, 4, 4)])
def test_gaussian_log_prob_matches_torch(log_scale_shape: tuple[int, ...]) -> None:
    loc = torch.rand(5, 1, 4, 4)
    log_scale = torch.randn(log_scale_shape) * 0.5
    x = torch.rand(5, 1, 4, 4)
    expected = Independent(Normal(loc, torch.exp(log_scale).expand_as(loc)), 3).log_prob(x)
    torch.testing.assert_close(Gaussian(loc, log_scale).log_prob(x), expected, atol=1e-4, rtol=1e-5)
