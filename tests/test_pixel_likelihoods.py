"""The pixel likelihoods against numerical integrals, torch.distributions, and their own samples."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import ContinuousBernoulli as TorchContinuousBernoulli

from vaekit.errors import VaekitError
from vaekit.model.pixel_likelihoods import ContinuousBernoulli, DiscretizedLogisticMixture

F64 = torch.float64
EXTREME_LOGITS = [-50.0, -1e-6, 0.0, 1e-6, 50.0]


def simpson(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """∫ values d(grid) over the first dimension by Simpson's rule (an odd number of equally spaced points)."""
    h = grid[1] - grid[0]
    weights = torch.ones(len(grid), dtype=F64)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return h / 3 * torch.tensordot(weights, values, dims=([0], [0]))


def unit_grid(points: int = 2**14 + 1) -> torch.Tensor:
    return torch.linspace(0, 1, points, dtype=F64)


def logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


# ---------------------------------------------------------------- continuous Bernoulli


def test_log_normalizer_matches_numerical_integral() -> None:
    """log C(λ) = −log ∫₀¹ λ^x (1−λ)^(1−x) dx, in float64 and float32, including λ within 1e-4 of ½."""
    lam = torch.tensor(
        [0.001, 0.01, 0.1, 0.3, 0.4999, 0.49995, 0.49999, 0.5, 0.50001, 0.50005, 0.5001, 0.7, 0.9, 0.99, 0.999],
        dtype=F64,
    )
    x = unit_grid(4001)[:, None]
    integral = simpson(torch.exp(x * torch.log(lam) + (1 - x) * torch.log1p(-lam)), x[:, 0])
    expected = -torch.log(integral)
    logits = logit(lam)
    torch.testing.assert_close(ContinuousBernoulli(logits, 0).log_normalizer, expected, atol=1e-10, rtol=0)
    single = ContinuousBernoulli(logits.float(), 0).log_normalizer
    torch.testing.assert_close(single.double(), expected, atol=2e-6, rtol=0)


def test_log_prob_matches_torch_distributions_with_sample_dims() -> None:
    """Params (k, N, C, H, W) against x (N, C, H, W) give (k, N) equal to torch's summed log-densities."""
    g = torch.Generator().manual_seed(0)
    logits = torch.rand(3, 4, 2, 5, 5, generator=g, dtype=F64) * 10 - 5
    logits[0, 0, 0, 0, :3] = torch.tensor([0.0, 1e-4, -2e-3], dtype=F64)  # inside torch's Taylor window
    x = torch.rand(4, 2, 5, 5, generator=g, dtype=F64)
    ours = ContinuousBernoulli(logits).log_prob(x)
    expected = TorchContinuousBernoulli(logits=logits).log_prob(x.expand_as(logits)).sum((-3, -2, -1))
    assert ours.shape == (3, 4)
    torch.testing.assert_close(ours, expected, atol=1e-9, rtol=1e-9)


def test_density_integrates_to_one() -> None:
    logits = torch.tensor([-50.0, -20.0, -3.0, -1e-6, 0.0, 1e-6, 0.3, 3.0, 20.0, 50.0], dtype=F64)
    x = unit_grid()
    density = ContinuousBernoulli(logits, event_ndim=0).log_prob(x[:, None]).exp()  # (G, L)
    torch.testing.assert_close(simpson(density, x), torch.ones_like(logits), atol=1e-8, rtol=0)


def test_mean_matches_torch_distributions_and_the_integral() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.cat([torch.rand(50, generator=g, dtype=F64) * 10 - 5, torch.tensor([1e-3, -0.2, 0.3], dtype=F64)])
    ours = ContinuousBernoulli(logits, 0).mean
    torch.testing.assert_close(ours, TorchContinuousBernoulli(logits=logits).mean, atol=1e-9, rtol=0)
    extreme = torch.tensor([*EXTREME_LOGITS, -0.25, 0.25, 1.0], dtype=F64)
    x = unit_grid()
    density = ContinuousBernoulli(extreme, event_ndim=0).log_prob(x[:, None]).exp()
    integral = simpson(x[:, None] * density, x)
    torch.testing.assert_close(ContinuousBernoulli(extreme, 0).mean, integral, atol=1e-9, rtol=0)
    assert ContinuousBernoulli(torch.zeros(1), 0).mean.item() == 0.5


def test_extreme_logits_give_finite_values_and_the_exponential_family_gradient() -> None:
    """The CB is an exponential family in l with statistic x, so ∂ log p / ∂l = x − E[x]: a known answer at l = 0."""
    logits = torch.tensor(EXTREME_LOGITS, requires_grad=True)
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    cb = ContinuousBernoulli(logits, event_ndim=0)
    log_p = cb.log_prob(x)
    (grad,) = torch.autograd.grad(log_p.sum(), logits)
    (mean_grad,) = torch.autograd.grad(cb.mean.sum(), logits)
    assert torch.isfinite(log_p).all() and torch.isfinite(grad).all() and torch.isfinite(mean_grad).all()
    exact = ContinuousBernoulli(logits.detach().double(), event_ndim=0)
    torch.testing.assert_close(log_p.double(), exact.log_prob(x.double()), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(grad.double(), x.double() - exact.mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(mean_grad[1:4], torch.full((3,), 1 / 12), atol=1e-6, rtol=0)  # dE[x]/dl at 0 is 1/12


def test_sample_mean_matches_mean_and_samples_follow_the_cdf() -> None:
    logits = torch.tensor([-50.0, -3.0, -1e-6, 0.0, 0.1, 2.0, 50.0], dtype=F64)
    n = 40_000
    samples = ContinuousBernoulli(logits.expand(n, -1), event_ndim=0).sample(torch.Generator().manual_seed(0))
    assert samples.min() >= 0 and samples.max() <= 1
    stderr = samples.std(0) / math.sqrt(n)
    assert torch.all((samples.mean(0) - ContinuousBernoulli(logits, 0).mean).abs() < 5 * stderr + 1e-12)
    # F(q) = expm1(l·q) / expm1(l), and q itself at l = 0
    q = torch.linspace(0.1, 0.9, 9, dtype=F64)[:, None]
    moderate = logits[1:6]
    cdf = torch.where(moderate == 0, q, torch.expm1(moderate * q) / torch.expm1(moderate))
    empirical = (samples[:, None, 1:6] <= q).double().mean(0)
    assert torch.all((empirical - cdf).abs() < 5 * torch.sqrt(cdf * (1 - cdf) / n))


def test_sample_is_reproducible_from_the_generator() -> None:
    cb = ContinuousBernoulli(torch.linspace(-4, 4, 9), 0)
    first, again = (cb.sample(torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first, again)


def test_event_ndim_beyond_the_logits_is_a_one_line_error() -> None:
    with pytest.raises(VaekitError, match="event_ndim=4"):
        ContinuousBernoulli(torch.zeros(1, 4, 4), event_ndim=4)


# ---------------------------------------------------------------- discretized logistic mixture


def layout(weights: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """Decoder output from per-component tensors (..., C, M, H, W): the documented (..., C·3·M, H, W) layout."""
    return torch.stack([weights, loc, log_scale], -4).flatten(-5, -3)


def random_params(shape: tuple[int, ...], mixtures: int, seed: int, min_log_scale: float = -7.0) -> torch.Tensor:
    """Means over [−1.3, 1.3], scales from e^min_log_scale to e^1, for images of `shape` (..., C, H, W)."""
    g = torch.Generator().manual_seed(seed)
    *lead, c, h, w = shape
    size = (*lead, c, mixtures, h, w)
    loc = torch.rand(size, generator=g, dtype=F64) * 2.6 - 1.3
    log_scale = torch.rand(size, generator=g, dtype=F64) * (1 - min_log_scale) + min_log_scale
    return layout(torch.randn(size, generator=g, dtype=F64), loc, log_scale)


def oracle_log_prob(params: torch.Tensor, mixtures: int, v: torch.Tensor) -> torch.Tensor:
    """log Σ_m π_m P_m(v) per pixel, straight from the cdf F(y) = sigmoid((y − μ)/s) in float64. Right of a
    component's centre the bin is 1 − F(lo) − (1 − F(hi)) = sigmoid((μ − lo)/s) − sigmoid((μ − hi)/s), where
    F(hi) − F(lo) would cancel. (torch's TransformedDistribution logistic clips its cdf to [tiny, 1 − eps], too coarse
    for the tails tested here.)"""
    c = params.shape[-3] // (3 * mixtures)
    weights, loc, log_scale = params.unflatten(-3, (c, 3, mixtures)).unbind(-4)
    scale = log_scale.clamp(min=-7).exp()
    centre = (2 * v / 255 - 1).unsqueeze(-3)
    hi = torch.where(v.unsqueeze(-3) == 255, math.inf, centre + 1 / 255)
    lo = torch.where(v.unsqueeze(-3) == 0, -math.inf, centre - 1 / 255)
    left = torch.sigmoid((hi - loc) / scale) - torch.sigmoid((lo - loc) / scale)
    right = torch.sigmoid((loc - lo) / scale) - torch.sigmoid((loc - hi) / scale)
    prob = torch.where(centre > loc, right, left)
    return torch.log((torch.softmax(weights, -3) * prob).sum(-3))


@pytest.mark.parametrize("mixtures", [1, 4])
def test_probabilities_of_all_256_values_sum_to_one(mixtures: int) -> None:
    params = random_params((6, 1, 1, 1), mixtures, seed=mixtures)  # 6 pixels, each its own distribution
    params[0, 2 * mixtures :], params[1, 2 * mixtures :] = -9.0, 40.0  # below the floor, and nearly flat
    params[2:4, :mixtures] *= 50  # one component all but certain
    params[4, mixtures : 2 * mixtures] = 5.0  # centres far outside [−1, 1]
    values = torch.arange(256, dtype=F64)
    x = (values / 255)[:, None, None, None, None]  # (256, 1, 1, 1, 1) against params (6, 3M, 1, 1)
    log_p = DiscretizedLogisticMixture(params, mixtures).log_prob(x)  # (256, 6)
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(6, dtype=F64), atol=1e-5, rtol=0)
    assert torch.isfinite(log_p).all()


@pytest.mark.parametrize("mixtures", [1, 3])
def test_log_prob_matches_the_logistic_cdf(mixtures: int) -> None:
    # scales above e^-4 keep every bin's probability above float64's 1e-308, where the oracle can see it
    params = random_params((2, 3, 4, 4), mixtures, seed=10 + mixtures, min_log_scale=-4.0)
    v = torch.randint(0, 256, (2, 3, 4, 4), generator=torch.Generator().manual_seed(5)).double()
    v[0, 0, 0, :2], v[1, 2, 3, 2:] = 0, 255  # the tail bins
    expected = oracle_log_prob(params, mixtures, v).sum((-3, -2, -1))
    ours = DiscretizedLogisticMixture(params, mixtures).log_prob(v / 255)
    torch.testing.assert_close(ours, expected, atol=1e-8, rtol=1e-10)


def test_far_tails_keep_their_probability_in_float32() -> None:
    """Pixels 50 to 160 scales from a narrow component: float32 CDF differences there are 0 or pure rounding."""
    loc = torch.tensor([-1.0, 1.0, -0.9, 0.8], dtype=F64)[:, None, None, None, None]  # (N, C, M, H, W), M = 1
    log_scale = torch.full_like(loc, math.log(0.01))
    params = layout(torch.zeros_like(loc), loc, log_scale)
    v = torch.tensor([200.0, 10.0, 110.0, 40.0], dtype=F64)[:, None, None, None]
    expected = oracle_log_prob(params, 1, v)[:, 0, 0, 0]
    ours = DiscretizedLogisticMixture(params.float(), 1, event_ndim=0).log_prob((v / 255).float())[:, 0, 0, 0]
    assert expected.max() < -40  # the regime where 1 − F underflows in float32
    torch.testing.assert_close(ours.double(), expected, atol=0, rtol=1e-5)


def test_extreme_params_stay_finite() -> None:
    big = [-1e4, 0.0, 1e4]
    values = torch.tensor([[w, m, s] for w in big for m in big for s in [-1e4, 0.0, 100.0, 1e4]])
    params = values.T.reshape(1, 3, -1, 1).contiguous().requires_grad_()  # 36 pixels of one component
    x = torch.tensor([0.0, 1.0, 0.5, 3 / 255]).repeat(9).reshape(1, 1, -1, 1)
    mixture = DiscretizedLogisticMixture(params, 1)
    log_p = mixture.log_prob(x)
    (grad,) = torch.autograd.grad(log_p.sum(), params)
    sample = mixture.sample(torch.Generator().manual_seed(0))
    assert torch.isfinite(log_p).all() and torch.isfinite(grad).all()
    assert torch.isfinite(mixture.mean).all() and torch.isfinite(sample).all()


def test_leading_sample_dims_broadcast_against_x() -> None:
    mixtures = 2
    params = random_params((5, 2, 3, 4, 4), mixtures, seed=3).float()  # (k, N, C·3M, H, W)
    x = torch.randint(0, 256, (2, 3, 4, 4), generator=torch.Generator().manual_seed(4)).float() / 255
    ours = DiscretizedLogisticMixture(params, mixtures).log_prob(x)
    assert ours.shape == (5, 2)
    each = torch.stack([DiscretizedLogisticMixture(p, mixtures).log_prob(x) for p in params])
    torch.testing.assert_close(ours, each)


def test_samples_lie_on_the_grid_with_the_model_frequencies() -> None:
    weights = torch.tensor([0.3, -0.2], dtype=F64)[None, :, None, None]  # (C = 1, M = 2, 1, 1)
    loc = torch.tensor([-0.2, 0.5], dtype=F64)[None, :, None, None]
    log_scale = torch.log(torch.tensor([0.05, 0.1], dtype=F64))[None, :, None, None]
    params = layout(weights, loc, log_scale)  # one pixel, (6, 1, 1)
    n = 100_000
    samples = DiscretizedLogisticMixture(params.expand(n, -1, -1, -1), 2).sample(torch.Generator().manual_seed(0))
    levels = samples * 255
    assert samples.shape == (n, 1, 1, 1) and samples.min() >= 0 and samples.max() <= 1
    assert torch.allclose(levels, levels.round(), atol=1e-9, rtol=0)
    frequency = torch.bincount(levels.round().long().flatten(), minlength=256).double() / n
    prob = DiscretizedLogisticMixture(params, 2).log_prob(torch.arange(256, dtype=F64)[:, None, None, None] / 255).exp()
    assert torch.all((frequency - prob).abs() < 5 * torch.sqrt(prob * (1 - prob) / n) + 1e-4)


def test_mean_is_the_mixture_mean_mapped_to_unit_interval() -> None:
    """Weights softmax([0, log 3]) = (¼, ¾) on centres (−½, ½): ¼ on [−1, 1], ⅝ on [0, 1]; a centre at 5 clamps."""
    weights = torch.tensor([[0.0, math.log(3)], [0.0, 0.0]])[:, :, None, None]  # (C = 2, M = 2, 1, 1)
    loc = torch.tensor([[-0.5, 0.5], [5.0, 5.0]])[:, :, None, None]
    mean = DiscretizedLogisticMixture(layout(weights, loc, torch.zeros_like(loc)), 2).mean
    assert mean.shape == (2, 1, 1)
    torch.testing.assert_close(mean.flatten(), torch.tensor([0.625, 1.0]))


def test_channels_and_a_wrong_layout_is_a_one_line_error() -> None:
    assert DiscretizedLogisticMixture.channels(5) == 15
    params = torch.zeros(2, 3 * DiscretizedLogisticMixture.channels(2), 4, 4)
    assert DiscretizedLogisticMixture(params, 2).mean.shape == (2, 3, 4, 4)
    with pytest.raises(VaekitError, match=r"channels\(2\)"):
        DiscretizedLogisticMixture(torch.zeros(2, 7, 4, 4), 2)
    with pytest.raises(VaekitError, match="mixtures=0"):
        DiscretizedLogisticMixture(torch.zeros(2, 6, 4, 4), 0)
