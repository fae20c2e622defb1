"""Posterior families q(z|x): the distribution objects, and the small modules that turn encoder features into them.

A family module says what the rest of the model needs to know about its codes, so that nobody asks which kind it is:
`features` (encoder outputs), `latent_dim` (the size of a code), `decoder_input` and its size `decoded_dim` (what
of a code the decoder reads: all of it, but z1 of a two-layer code), `unit_size` (entries per latent unit: 1, or K
for a one-hot categorical variable), `has_density` (an autoencoder's point mass has none, hence no ELBO),
`continuous` (whether paths and sliders through the codes make sense) and `relaxes` (whether training codes are a
relaxation rather than samples of q). `at_step` lets a family follow a schedule
(the Gumbel-softmax temperature); `record` says what of it belongs in the training metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import MAX_WIDTH, ModelConfig, TrainConfig, options_of, setting
from vaekit.errors import VaekitError
from vaekit.model.networks import mlp
from vaekit.model.randomness import Randomness, draw
from vaekit.parts import KINDS, POSTERIORS, Exported, Part, Requirement

# exp(logvar) for logvar in [-30, 20] stays within float32 (σ from 3e-7 to 2e4). The encoder's raw output is
# clamped rather than squashed through softplus so the usual "logvar head" keeps its meaning; gradients outside the
# range are zero, which only matters for a network that has already diverged.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
LOG_2PI = math.log(2 * math.pi)


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

    def detached(self) -> DiagonalGaussian:
        """The same distribution with its parameters cut from the graph (samples keep their own path)."""
        return DiagonalGaussian(self.mu.detach(), self.logvar.detach())

    @property
    def stddev(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def variance(self) -> Tensor:
        return torch.exp(self.logvar)

    def rsample(self, n_samples: int | None = None, eps: Tensor | None = None, generator: Randomness = None) -> Tensor:
        """Reparameterized draw: (..., D), or (n_samples, ..., D). Pass `eps` to fix the noise."""
        if eps is None:
            # One sample is drawn at mu's shape and given its sample axis after: the same numbers as a (1, ..., D)
            # draw, and a backward pass with no sum over a broadcast axis.
            shape = self.mu.shape if n_samples in (None, 1) else (n_samples, *self.mu.shape)
            eps = draw(torch.randn, shape, generator, self.mu, batch_dim=-2)  # latents are (..., N, D)
        z = self.mu + self.stddev * eps
        return z.unsqueeze(0) if n_samples == 1 and z.dim() == self.mu.dim() else z

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

    def kl_per_dim(self, other: DiagonalGaussian | None = None) -> Tensor:
        """The terms of `kl` before the sum over dimensions, (..., D): how many nats each latent dimension uses."""
        if other is None:
            return 0.5 * (self.variance + self.mu**2 - 1.0 - self.logvar)
        ratio = torch.exp(self.logvar - other.logvar)
        return 0.5 * (other.logvar - self.logvar + ratio + (self.mu - other.mu) ** 2 * torch.exp(-other.logvar) - 1.0)


class PointMass:
    """q(z|x) = δ(z − code): the plain autoencoder's encoder output, a "posterior" with no noise (σ = 0).

    rsample and sample return the code itself, and no prior regularizes it (`vaekit.model.priors` gives it a KL term
    of 0, as diffusers' `deterministic` Gaussian does): the autoencoder's objective is log p(x|code) alone. (The
    true KL of a point mass to N(0, I) is infinite and a point mass has no density, which is why an autoencoder has
    no ELBO and no likelihood bound.)"""

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

    def detached(self) -> Posterior:
        """No doubly reparameterized gradient here: it needs a reparameterized density."""
        raise VaekitError("the doubly reparameterized estimator needs a Gaussian posterior: use --estimator reparam")

    def log_prob(self, z: Tensor) -> Tensor:
        raise VaekitError(
            "an autoencoder's code is a point mass with no density, so it has no ELBO, no likelihood bound and no "
            "score-function gradient: train a VAE (--model vae) for those, or use --estimator reparam with --model ae"
        )


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

    def detached(self) -> Posterior:
        """No doubly reparameterized gradient here: it needs a reparameterized density."""
        raise VaekitError("the doubly reparameterized estimator needs a Gaussian posterior: use --estimator reparam")

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z) for one-hot codes z (..., V·K): Σ_v log softmax(logits_v)[z_v]."""
        log_p = torch.log_softmax(self.logits, -1)
        codes = z.reshape(*z.shape[:-1], *self.logits.shape[-2:])
        log_q: Tensor = (codes * log_p).sum((-2, -1))
        return log_q

    def kl_per_dim(self) -> Tensor:
        """KL(q(z_v|x) ‖ Uniform(K)) = Σ_k q_k log q_k + log K, per variable (..., V)."""
        log_p = torch.log_softmax(self.logits, -1)
        return (log_p.exp() * log_p).sum(-1) + math.log(self.logits.shape[-1])


class TwoLayerGaussian:
    """q(z1, z2|x) = q(z1|x) q(z2|z1), both diagonal Gaussians: the posterior of a VAE with two stochastic layers
    (Burda, Grosse & Salakhutdinov 2016, section 5), over codes z = [z1, z2] (..., D1 + D2).

    rsample draws z1 = mu1 + sigma1·eps1, then z2 = mu2(z1) + sigma2(z1)·eps2: both reparameterized, so the gradient
    reaches the encoder through z1 and the q(z2|z1) network through z2. log q(z) = log q(z1|x) + log q(z2|z1).
    """

    export: Exported = (
        "ONNX export covers one stochastic layer and this run has two (--second-layer): its q(z2|z1) and p(z1|z2) "
        "networks have no place in encoder.onnx and decoder.onnx; export a run trained without --second-layer"
    )

    relaxed = False

    def __init__(self, lower: DiagonalGaussian, upper: nn.Module, frozen: bool = False) -> None:
        self.lower = lower  # q(z1|x)
        self.upper = upper  # z1 (..., D1) -> features (..., 2·D2) of q(z2|z1)
        self.frozen = frozen  # evaluate `upper` with its parameters cut from the graph (see `detached`)

    def conditional(self, z1: Tensor) -> DiagonalGaussian:
        """q(z2|z1) for first-layer codes z1 (..., D1)."""
        if self.frozen:  # the parameters held fixed, the path through z1 kept
            params = {name: p.detach() for name, p in self.upper.named_parameters()}
            features = torch.func.functional_call(self.upper, params, (z1,))
        else:
            features = self.upper(z1)
        mu, logvar = features.chunk(2, dim=-1)
        return DiagonalGaussian(mu, logvar)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(z1, z2) from codes (..., D1 + D2)."""
        d1 = self.lower.mu.shape[-1]
        return z[..., :d1], z[..., d1:]

    def detached(self) -> TwoLayerGaussian:
        """The same distribution with q's parameters (both layers') held fixed; samples keep their own path."""
        return TwoLayerGaussian(self.lower.detached(), self.upper, frozen=True)

    def _at_mean(self) -> DiagonalGaussian:
        return self.conditional(self.lower.mu)

    @property
    def mean(self) -> Tensor:
        """[mu1, mu2(mu1)]: the code along the mean path (pictures and latent paths use it; E[z2] has no closed
        form)."""
        return torch.cat([self.lower.mu, self._at_mean().mu], -1)

    @property
    def mode(self) -> Tensor:
        return self.mean

    @property
    def variance(self) -> Tensor:
        """Per-dimension variances: q(z1|x)'s, and q(z2|z1)'s at z1 = mu1."""
        return torch.cat([self.lower.variance, self._at_mean().variance], -1)

    def rsample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        """Reparameterized draw of [z1, z2]: (..., D1 + D2), or (n_samples, ..., D1 + D2)."""
        z1 = self.lower.rsample(n_samples, generator=generator)
        return torch.cat([z1, self.conditional(z1).rsample(generator=generator)], -1)

    def sample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        with torch.no_grad():
            return self.rsample(n_samples, generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z1|x) + log q(z2|z1)."""
        z1, z2 = self.split(z)
        return self.lower.log_prob(z1) + self.conditional(z1).log_prob(z2)

    def kl_per_dim(self) -> Tensor:
        """Each dimension's KL to N(0, 1), (..., D1 + D2): exact for z1; for z2, q(z2|z1)'s at z1 = mu1 (the marginal
        q(z2|x) has no closed form). A per-unit picture for reports, not a term of the ELBO."""
        return torch.cat([self.lower.kl_per_dim(), self._at_mean().kl_per_dim()], -1)


Posterior = DiagonalGaussian | RelaxedCategorical | PointMass | TwoLayerGaussian


class GaussianFamily(nn.Module):
    """Encoder features (..., 2D) → N(mu, diag exp(logvar)): the VAE's posterior."""

    has_density, continuous, unit_size, relaxes = True, True, 1, False

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim, self.features = latent_dim, 2 * latent_dim
        self.decoded_dim = latent_dim  # how much of the code the decoder reads

    def forward(self, features: Tensor) -> Posterior:
        mu, logvar = features.chunk(2, dim=-1)
        return DiagonalGaussian(mu, logvar)

    def decoder_input(self, z: Tensor) -> Tensor:
        """What of a code (..., latent_dim) the decoder reads, (..., decoded_dim)."""
        return z[..., : self.decoded_dim]

    def at_step(self, step: int) -> None:
        """No schedule."""

    def record(self) -> dict[str, Any]:
        return {}


class PointMassFamily(GaussianFamily):
    """Encoder features (..., D) → δ(z − code): the plain autoencoder, same networks, no noise."""

    has_density = False

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.features = latent_dim

    def forward(self, features: Tensor) -> Posterior:
        return PointMass(features)


class TwoLayerGaussianFamily(GaussianFamily):
    """Encoder features (..., 2·D1) → q(z1|x), and the network z1 → (mu2, logvar2) of q(z2|z1): codes are
    [z1, z2] (D1 + D2), of which the decoder reads z1. `config.second_layer` holds the network's widths, then D2."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config.latent_dim)
        *widths, second = config.second_layer
        self.upper = mlp(config.latent_dim, widths, 2 * second, config.activation)
        self.latent_dim = config.latent_dim + second

    def forward(self, features: Tensor) -> Posterior:
        mu, logvar = features.chunk(2, dim=-1)
        return TwoLayerGaussian(DiagonalGaussian(mu, logvar), self.upper)


@dataclass(frozen=True)
class CategoricalSettings:
    """The categorical codes' own settings. Gumbel-softmax τ starts at `temperature` and is annealed as
    τ0·exp(−anneal_rate·step) down to `temperature_min` (Jang et al. 2017); the default rate reaches 0.5 after about
    7,000 steps (16 Fashion-MNIST epochs at batch 128)."""

    categories: int = setting(10, "Categories per categorical variable.", bounds=(2, MAX_WIDTH))
    latent_vars: int = setting(30, "Categorical latent variables.", bounds=(1, MAX_WIDTH))
    temperature: float = setting(1.0, "Starting Gumbel-softmax temperature, annealed to --temperature-min.")
    temperature_min: float = setting(0.5, "Gumbel-softmax temperature the annealing stops at.")
    anneal_rate: float = setting(1e-4, "r in temperature × exp(−r · step), the Gumbel-softmax annealing per step.")
    straight_through: bool = setting(False, "Hard one-hot codes forward, relaxed gradient backward.", shown="")


class CategoricalFamily(nn.Module):
    """Encoder features (..., V·K) → V relaxed categorical variables of K classes, whose Gumbel-softmax temperature
    τ = max(τ_min, τ0·exp(−r·step)) (Jang et al. 2017) is a function of the step, so a resumed run anneals exactly
    as an uninterrupted one. In evaluation (`model.eval()`) codes are exact one-hot samples."""

    has_density, continuous = True, False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.codes = codes = options_of(config, CategoricalSettings)
        self.unit_size = codes.categories
        self.relaxes = not codes.straight_through  # training codes are relaxed, not samples of q
        self.latent_dim = self.features = self.decoded_dim = codes.latent_vars * codes.categories
        self.temperature = codes.temperature_min  # the trainer anneals it from codes.temperature

    def forward(self, features: Tensor) -> Posterior:
        logits = features.reshape(*features.shape[:-1], self.codes.latent_vars, self.codes.categories)
        return RelaxedCategorical(logits, self.temperature, self.codes.straight_through, hard=not self.training)

    def decoder_input(self, z: Tensor) -> Tensor:
        """The decoder reads the whole code."""
        return z

    def at_step(self, step: int) -> None:
        codes = self.codes
        self.temperature = max(codes.temperature_min, codes.temperature * math.exp(-codes.anneal_rate * step))

    def record(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


Family = GaussianFamily | CategoricalFamily


def need_continuous(family: Family, what: str, instead: str = "") -> None:
    """The one answer to "may codes be moved along paths and sliders?" and its one message: `what` needs that."""
    if not family.continuous:
        raise VaekitError(
            f"{what} needs continuous codes and this run's latents are categorical (one-hot): {instead}use a run "
            "trained with --latent gaussian"
        )


def need_density(family: Family, what: str) -> None:
    """The one answer to "has q(z|x) a density, hence a KL and an ELBO?" and its one message: `what` needs one."""
    if not family.has_density:
        raise VaekitError(
            f"{what} needs a posterior with a density and this run is an autoencoder (a point-mass code, no KL): use "
            "a run trained with --model vae"
        )


def posterior_family(config: ModelConfig) -> Family:
    """The family a config names: `latent` categorical, else `kind` ae (a point mass) or vae (a Gaussian, over two
    stochastic layers when `second_layer` is given)."""
    if config.latent == "categorical":
        return CategoricalFamily(config)
    build = POSTERIORS[config.latent].impl  # a family registered with its builder, in a module of its own
    if build is not None:
        family: Family = build(config)
        return family
    if config.second_layer:
        return TwoLayerGaussianFamily(config)
    return PointMassFamily(config.latent_dim) if config.kind == "ae" else GaussianFamily(config.latent_dim)


PATHWISE = ("reparam", "dreg")  # the estimators whose gradient follows the path of z, so a sampled KL is fine


def _categorical_codes(config: TrainConfig) -> None:
    """The decoder reads the flattened one-hot codes: latent_dim is V·K."""
    model = config.model
    codes = options_of(model, CategoricalSettings)
    model.latent_dim = codes.latent_vars * codes.categories
    if model.latent_dim > MAX_WIDTH:
        raise VaekitError(f"latent_vars × categories must be at most {MAX_WIDTH}")


def _temperatures_fall(config: TrainConfig) -> bool:
    codes = options_of(config.model, CategoricalSettings)
    return 0 < codes.temperature_min <= codes.temperature


def _one_layer(holds: Callable[[TrainConfig], bool]) -> Callable[[TrainConfig], bool]:
    """A requirement that a second stochastic layer places: it holds without one."""
    return lambda config: not config.model.second_layer or holds(config)


TWO_LAYERS_GAUSSIAN = "a second stochastic layer is Gaussian: use it with --model vae --latent gaussian"
KINDS.register(Part("vae", doc="a VAE: the posterior family `--latent` picks"))
KINDS.register(
    Part(
        "ae",
        "plain autoencoder baseline",
        requires=(
            Requirement(
                lambda c: c.free_bits == 0, "an autoencoder's code has no KL for free bits to floor: drop --free-bits"
            ),
            Requirement(lambda c: c.model.latent == "gaussian", "--model ae takes a gaussian latent"),
            Requirement(
                lambda c: c.estimator == "reparam",
                "an autoencoder's code has no density, so no score-function gradient: use --estimator reparam",
            ),
        ),
    )
)
POSTERIORS.register(
    Part(
        "gaussian",
        doc="a diagonal Gaussian; `--second-layer` adds a second stochastic layer (Burda et al. 2016)",
        requires=(
            Requirement(_one_layer(lambda c: c.model.kind == "vae"), TWO_LAYERS_GAUSSIAN),
            Requirement(
                _one_layer(lambda c: c.model.prior == "standard"),
                lambda c: (
                    f"a second stochastic layer brings its own prior N(z2; 0, I)·p(z1|z2): drop --prior {c.model.prior}"
                ),
            ),
            Requirement(
                _one_layer(lambda c: c.estimator in PATHWISE),
                "the two-layer KL is estimated at samples of q, which needs their path: use --estimator reparam",
            ),
            Requirement(
                _one_layer(lambda c: c.free_bits == 0),
                "free bits need a closed-form KL per unit, which two stochastic layers lack: drop --free-bits",
            ),
        ),
    )
)
POSTERIORS.register(
    Part(
        "categorical",
        "Gumbel-softmax",
        doc="`--latent-vars` variables of `--categories` each, relaxed by the Gumbel-softmax (Jang et al. 2017)",
        requires=(
            Requirement(lambda c: not c.model.second_layer, TWO_LAYERS_GAUSSIAN),
            Requirement(_temperatures_fall, "need 0 < temperature_min ≤ temperature: change those settings"),
            Requirement(
                lambda c: options_of(c.model, CategoricalSettings).anneal_rate >= 0,
                "anneal_rate must be zero or positive: change that setting",
            ),
        ),
        settings=CategoricalSettings,
        settle=_categorical_codes,
    )
)
