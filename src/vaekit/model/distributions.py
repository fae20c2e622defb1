"""The reparameterization trick and the likelihoods, as small distribution objects (pure tensor math, no state).

The encoder returns a `DiagonalGaussian` q(z|x) (a `RelaxedCategorical` for discrete latents, a `PointMass` for the
plain autoencoder); the decoder returns a `Bernoulli` or `Gaussian` p(x|z). Nobody outside this module touches a
log-variance. All log-densities are in nats, summed over event dimensions, one value
per example: reductions over the batch happen at the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.errors import VaekitError

# exp(logvar) for logvar in [-30, 20] stays within float32 (σ from 3e-7 to 2e4). The encoder's raw output is
# clamped rather than squashed through softplus so the usual "logvar head" keeps its meaning; gradients outside the
# range are zero, which only matters for a network that has already diverged.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
# The floor of a learned Gaussian likelihood's σ. Uniformly dequantized 8-bit pixels never support a σ below the bin's
# own spread, 1/(256·√12) ≈ 1.1e-3, so the floor binds only where a density would otherwise run off to infinity:
# constant pixels of continuous data, or a decoder that matches grey values exactly.
LOG_SCALE_MIN = math.log(1e-3)
LOG_2PI = math.log(2 * math.pi)


def sum_event(t: Tensor, event_ndim: int) -> Tensor:
    """Sum the last `event_ndim` dimensions: one number per example (and per sample, if sampled)."""
    return t.flatten(-event_ndim).sum(-1) if event_ndim > 0 else t


@dataclass(frozen=True)
class BatchSlice:
    """Randomness for rows [start, stop) of a batch of `total`: every draw is made for the whole batch and sliced.

    Processes that train on slices of one global batch each pass their own slice of one shared generator; all of them
    draw the same numbers and keep their rows, so the noise an example gets does not depend on how many processes
    there are, and every process ends each step with the same generator state.
    """

    generator: torch.Generator
    start: int
    stop: int
    total: int


Randomness = torch.Generator | BatchSlice | None


def draw(
    sampler: Callable[..., Tensor], shape: Sequence[int], source: Randomness, like: Tensor, batch_dim: int
) -> Tensor:
    """`sampler(shape)` (torch.randn, torch.rand) with `like`'s dtype and device, from a generator or a BatchSlice
    whose batch is dimension `batch_dim` of `shape`."""
    if not isinstance(source, BatchSlice):
        return sampler(tuple(shape), generator=source, dtype=like.dtype, device=like.device)
    full = list(shape)
    full[batch_dim] = source.total
    whole = sampler(tuple(full), generator=source.generator, dtype=like.dtype, device=like.device)
    return whole.narrow(batch_dim, source.start, source.stop - source.start)


class DiagonalGaussian:
    """N(mu, diag(sigma²)) over the last dimension, batched over the others.

    rsample draws z = mu + sigma * eps with eps ~ N(0, I): z is then a differentiable function of (mu, logvar), which
    is what lets the gradient of the ELBO reach the encoder (Kingma & Welling 2014, section 2.4).
    """

    relaxed = False  # rsample draws exact samples of q

    def __init__(self, mu: Tensor, logvar: Tensor) -> None:
        self.mu = mu
        self.logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @classmethod
    def standard(cls, shape: tuple[int, ...], device: torch.device | str = "cpu") -> DiagonalGaussian:
        """The prior p(z) = N(0, I)."""
        zeros = torch.zeros(shape, device=device)
        return cls(zeros, zeros)

    @property
    def mean(self) -> Tensor:
        return self.mu

    @property
    def stddev(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.logvar)

    def rsample(self, n_samples: int | None = None, eps: Tensor | None = None, generator: Randomness = None) -> Tensor:
        """Reparameterized draw: (..., D), or (n_samples, ..., D). Pass `eps` to fix the noise."""
        if eps is None:
            shape = self.mu.shape if n_samples is None else (n_samples, *self.mu.shape)
            eps = draw(torch.randn, shape, generator, self.mu, batch_dim=-2)  # latents are (..., N, D)
        return self.mu + self.stddev * eps

    def sample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        """A draw with no path back to mu or sigma: what a VAE without the trick would have to work with."""
        with torch.no_grad():
            return self.rsample(n_samples, generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) = -½ Σ_d [log 2π + logvar_d + (z_d - mu_d)² / sigma_d²]."""
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mu) ** 2 * torch.exp(-self.logvar)).sum(-1)

    def kl(self, other: DiagonalGaussian | None = None) -> Tensor:
        """KL(self ‖ other) in closed form; `other=None` means the prior N(0, I).

        KL(N(m, s²) ‖ N(0, 1)) = ½ Σ_d (s_d² + m_d² − 1 − log s_d²)   (Kingma & Welling 2014, appendix B)
        KL(N(m, s²) ‖ N(m', s'²)) = ½ Σ_d (log s'_d² − log s_d² + (s_d² + (m_d − m'_d)²) / s'_d² − 1)
        """
        return self.kl_per_dim(other).sum(-1)

    @property
    def mode(self) -> Tensor:
        return self.mu

    @staticmethod
    def aggregate_kl(mean: Tensor, variance: Tensor, categories: int = 1) -> Tensor:
        """KL(N(mean, diag variance) ‖ N(0, I)): the moment-matched aggregate posterior against the prior."""
        return 0.5 * (variance + mean**2 - 1 - variance.log()).sum()

    def kl_per_dim(self, other: DiagonalGaussian | None = None) -> Tensor:
        """The terms of `kl` before the sum over dimensions, (..., D): how many nats each latent dimension uses."""
        if other is None:
            return 0.5 * (self.variance + self.mu**2 - 1.0 - self.logvar)
        ratio = torch.exp(self.logvar - other.logvar)
        return 0.5 * (other.logvar - self.logvar + ratio + (self.mu - other.mu) ** 2 * torch.exp(-other.logvar) - 1.0)


class PointMass:
    """q(z|x) = δ(z − code): the plain autoencoder's encoder output, a "posterior" with no noise (σ = 0).

    rsample and sample return the code itself, and the KL term is 0 by definition, as in diffusers' `deterministic`
    Gaussian: the autoencoder's objective is log p(x|code) alone. (The true KL of a point mass to N(0, I) is infinite
    and a point mass has no density, which is why an autoencoder has no ELBO and no likelihood bound.)
    """

    relaxed = False

    def __init__(self, code: Tensor) -> None:
        self.code = code

    @property
    def mean(self) -> Tensor:
        return self.code

    @property
    def mode(self) -> Tensor:
        return self.code

    @property
    def variance(self) -> Tensor:
        return torch.zeros_like(self.code)

    @property
    def stddev(self) -> Tensor:
        return torch.zeros_like(self.code)

    def rsample(self, n_samples: int | None = None, eps: Tensor | None = None, generator: Randomness = None) -> Tensor:
        """The code, (..., D) or (n_samples, ..., D), differentiable in the encoder's output; no noise is drawn."""
        return self.code if n_samples is None else self.code.expand(n_samples, *self.code.shape)

    def sample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        return self.rsample(n_samples).detach()

    def log_prob(self, z: Tensor) -> Tensor:
        raise VaekitError(
            "an autoencoder's code is a point mass with no density, so it has no ELBO, no likelihood bound and no "
            "score-function gradient: train a VAE (--model vae) for those, or use --estimator reparam with --model ae"
        )

    def kl(self) -> Tensor:
        return self.code.new_zeros(self.code.shape[:-1])

    def kl_per_dim(self) -> Tensor:
        return torch.zeros_like(self.code)

    @staticmethod
    def aggregate_kl(mean: Tensor, variance: Tensor, categories: int = 1) -> Tensor:
        """The spread of the codes against N(0, I), moment-matched as for a Gaussian posterior."""
        return DiagonalGaussian.aggregate_kl(mean, variance)


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


def gumbel_noise(shape: torch.Size, generator: Randomness, like: Tensor) -> Tensor:
    """g = −log(−log u), u ~ U(0, 1): argmax(logits + g) is an exact categorical sample (the Gumbel-max trick)."""
    u = draw(torch.rand, shape, generator, like, batch_dim=-3).clamp(1e-10, 1 - 1e-7)  # logits are (..., N, V, K)
    return -torch.log(-torch.log(u))


class RelaxedCategorical:
    """q(z|x) = Π_v Categorical(z_v; softmax(logits_v)) for V variables of K categories; z is a one-hot (V, K) code,
    flattened to V·K numbers for the decoder.

    rsample is the Gumbel-softmax / Concrete reparameterization (Jang et al. 2017; Maddison et al. 2017):
    y = softmax((logits + g) / τ) with Gumbel noise g. It is differentiable in the logits and approaches a one-hot
    sample as τ → 0. With `straight_through`, the forward pass uses the hard one-hot and the backward pass the relaxed
    gradient. With `hard` (evaluation), rsample returns exact discrete samples, as generation uses.
    """

    def __init__(self, logits: Tensor, temperature: float, straight_through: bool = False, hard: bool = False) -> None:
        self.logits = logits  # (..., V, K)
        self.temperature = temperature
        self.straight_through = straight_through
        self.hard = hard

    @property
    def relaxed(self) -> bool:
        """Whether rsample returns relaxed codes rather than samples of q (so log p(x|z) at them is no ELBO term).
        Straight-through codes are exact: their forward value is the Gumbel-max one-hot."""
        return not (self.hard or self.straight_through)

    @property
    def probs(self) -> Tensor:
        return torch.softmax(self.logits, dim=-1)

    @property
    def mean(self) -> Tensor:
        """E[z]: the category probabilities, flattened (..., V·K)."""
        return self.probs.flatten(-2)

    @property
    def variance(self) -> Tensor:
        p = self.mean
        return p * (1 - p)

    @property
    def mode(self) -> Tensor:
        return F.one_hot(self.logits.argmax(-1), self.logits.shape[-1]).to(self.logits).flatten(-2)

    def _shape(self, n_samples: int | None) -> torch.Size:
        return self.logits.shape if n_samples is None else torch.Size((n_samples, *self.logits.shape))

    def rsample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        if self.hard:
            return self.sample(n_samples, generator)
        relaxed = torch.softmax(
            (self.logits + gumbel_noise(self._shape(n_samples), generator, self.logits)) / self.temperature, -1
        )
        if self.straight_through:
            hard = F.one_hot(relaxed.argmax(-1), relaxed.shape[-1]).to(relaxed)
            relaxed = hard - relaxed.detach() + relaxed  # one-hot forward, relaxed gradient backward
        return relaxed.flatten(-2)

    def sample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        """Exact one-hot samples (Gumbel-max), with no gradient."""
        with torch.no_grad():
            noisy = self.logits + gumbel_noise(self._shape(n_samples), generator, self.logits)
            return F.one_hot(noisy.argmax(-1), self.logits.shape[-1]).to(self.logits).flatten(-2)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) for one-hot codes z (..., V·K): Σ_v log softmax(logits_v)[z_v]."""
        log_p = torch.log_softmax(self.logits, -1)
        codes = z.reshape(*z.shape[:-1], *self.logits.shape[-2:])
        log_q: Tensor = (codes * log_p).sum((-2, -1))
        return log_q

    def kl(self) -> Tensor:
        return self.kl_per_dim().sum(-1)

    def kl_per_dim(self) -> Tensor:
        """KL(q(z_v|x) ‖ Uniform(K)) = Σ_k q_k log q_k + log K, per variable (..., V)."""
        log_p = torch.log_softmax(self.logits, -1)
        return (log_p.exp() * log_p).sum(-1) + math.log(self.logits.shape[-1])

    @staticmethod
    def aggregate_kl(mean: Tensor, variance: Tensor, categories: int) -> Tensor:
        """KL(E_x q(z_v|x) ‖ Uniform(K)) summed over variables: how far the aggregate posterior is from the prior."""
        p = mean.view(-1, categories).clamp_min(1e-12)
        return (p * torch.log(p * categories)).sum()


Posterior = DiagonalGaussian | RelaxedCategorical | PointMass
