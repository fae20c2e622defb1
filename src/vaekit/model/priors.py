"""Priors p(z): the standard normal, the uniform categorical, and learned ones (a mixture of Gaussians, the
VampPrior, and the two-layer p(z2)·p(z1|z2)). Each gives `log_prob(z)`, `sample(n)` and the KL from a posterior, in
closed form where one exists (registered below for a pair of types) and by Monte Carlo at the posterior's own
samples otherwise; the prior decides, not the caller.
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
from vaekit.model.posteriors import (
    LOG_2PI,
    PATHWISE,
    CategoricalSettings,
    DiagonalGaussian,
    Family,
    PointMass,
    Posterior,
    RelaxedCategorical,
)
from vaekit.parts import PRIORS, Part, Requirement

ClosedForm = Callable[[Any, Any], Tensor]
CLOSED_FORMS: dict[tuple[type, type], ClosedForm] = {}  # (prior type, posterior type) -> KL per latent unit


def closed_form(prior: type, posterior: type) -> Callable[[ClosedForm], ClosedForm]:
    """Register KL(posterior ‖ prior) per latent unit, (..., units), for a pair of types (as torch.distributions'
    register_kl does); subclasses of `prior` inherit it."""

    def register(rule: ClosedForm) -> ClosedForm:
        CLOSED_FORMS[prior, posterior] = rule
        return rule

    return register


class Prior(nn.Module):
    """p(z) over codes (..., D)."""

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def kl_per_unit(self, posterior: Posterior, z: Tensor | None = None) -> Tensor | None:
        """KL(q ‖ p) per latent unit, (..., units), where a closed form exists; else None. `z`, the posterior samples
        (samples, ..., D) the objective drew, serves a prior whose closed form holds given some of the code (a
        hierarchy's, layer by layer given the layers above)."""
        for kind in type(self).__mro__:
            rule = CLOSED_FORMS.get((kind, type(posterior)))
            if rule is not None:
                return rule(self, posterior)
        return None

    def kl(self, posterior: Posterior, z: Tensor | None = None) -> Tensor:
        """KL(q(z|x) ‖ p(z)) per example: exact where a closed form exists, else the Monte Carlo estimate
        mean_s [log q(z_s|x) − log p(z_s)] at the posterior samples `z` (samples, ..., D) the objective already drew."""
        per_unit = self.kl_per_unit(posterior, z)
        if per_unit is not None:
            return per_unit.sum(-1)
        if z is None:
            raise VaekitError(f"the KL to {self.describe()} has no closed form and needs posterior samples")
        if z.dim() != posterior.mean.dim() + 1:
            raise VaekitError("the Monte Carlo KL needs posterior samples (samples, ..., D)")
        return (posterior.log_prob(z) - self.log_prob(z)).mean(0)

    def aggregate_kl(self, mean: Tensor, variance: Tensor) -> Tensor | None:
        """KL of the moment-matched aggregate posterior to the prior, where the prior has a closed form for it."""
        return None

    def _device(self) -> torch.device:
        anchor = next(iter(self.buffers()), None)
        anchor = anchor if anchor is not None else next(self.parameters())
        return anchor.device


class StandardNormal(Prior):
    """N(0, I), the VAE's fixed prior."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # follows .to(device)

    def log_prob(self, z: Tensor) -> Tensor:
        return self.log_density(z)

    @staticmethod
    def log_density(z: Tensor) -> Tensor:
        """log N(z; 0, I) = −½ Σ (log 2π + z²)."""
        return -0.5 * (LOG_2PI + z**2).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self._device())

    def describe(self) -> str:
        return "N(0, I)"

    def aggregate_kl(self, mean: Tensor, variance: Tensor) -> Tensor:
        """KL(N(mean, diag variance) ‖ N(0, I))."""
        return 0.5 * (variance + mean**2 - 1 - variance.log()).sum()


class UniformCategorical(Prior):
    """V independent uniform categoricals over K classes, as flattened one-hot codes (..., V·K)."""

    def __init__(self, latent_vars: int, categories: int) -> None:
        super().__init__()
        self.latent_vars, self.categories = latent_vars, categories
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """−V·log K for every one-hot code."""
        return torch.full(z.shape[:-1], -self.latent_vars * math.log(self.categories), device=z.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        classes = torch.randint(self.categories, (n, self.latent_vars), generator=generator)
        return F.one_hot(classes, self.categories).float().flatten(-2).to(self._device())

    def describe(self) -> str:
        return f"Uniform({self.categories}) per variable"

    def aggregate_kl(self, mean: Tensor, variance: Tensor) -> Tensor:
        """KL(E_x q(z_v|x) ‖ Uniform(K)) summed over variables: how far the aggregate posterior is from the prior."""
        p = mean.view(-1, self.categories).clamp_min(1e-12)
        return (p * torch.log(p * self.categories)).sum()


class MixtureOfGaussians(Prior):
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²), all learned: a prior that can follow a clustered aggregate posterior."""

    def __init__(self, latent_dim: int, components: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(components, latent_dim, generator=torch.Generator().manual_seed(0)))
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components))

    def components(self) -> tuple[Tensor, DiagonalGaussian]:
        return torch.log_softmax(self.logits, -1), DiagonalGaussian(self.means, self.logvars)

    def log_prob(self, z: Tensor) -> Tensor:
        log_weights, gaussians = self.components()
        return mixture_log_prob(z, log_weights, gaussians)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        log_weights, gaussians = self.components()
        return mixture_sample(n, log_weights, gaussians, generator)

    def describe(self) -> str:
        return f"a learned mixture of {len(self.logits)} Gaussians"


class VampPrior(Prior):
    """p(z) = (1/K) Σ_k q(z | u_k), the posterior at K learned pseudo-inputs (Tomczak & Welling 2018).

    `encode` is the model's own encoder (not registered here: the weights belong to the model once). Pseudo-inputs
    are kept in [0, 1] with a hard clamp, as the paper's hardtanh does."""

    def __init__(self, components: int, input_shape: tuple[int, ...], encode: Callable[[Tensor], Posterior]) -> None:
        super().__init__()
        start = 0.5 + 0.01 * torch.randn(components, *input_shape, generator=torch.Generator().manual_seed(0))
        self.pseudo_inputs = nn.Parameter(start)
        self.encode = encode

    def components(self) -> tuple[Tensor, DiagonalGaussian]:
        posterior = self.encode(self.pseudo_inputs.clamp(0, 1))
        if not isinstance(posterior, DiagonalGaussian):
            raise VaekitError("the VampPrior mixes Gaussian posteriors: use it with a Gaussian latent")
        k = len(self.pseudo_inputs)
        return torch.full((k,), -math.log(k), device=posterior.mu.device), posterior

    def log_prob(self, z: Tensor) -> Tensor:
        log_weights, gaussians = self.components()
        return mixture_log_prob(z, log_weights, gaussians)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            log_weights, gaussians = self.components()
            return mixture_sample(n, log_weights, gaussians, generator)

    def describe(self) -> str:
        return f"a VampPrior of {len(self.pseudo_inputs)} pseudo-inputs"


class TwoLayerPrior(Prior):
    """p(z1, z2) = N(z2; 0, I) p(z1|z2), p(z1|z2) a diagonal Gaussian from an MLP: the generative side of a VAE
    with two stochastic layers (Burda, Grosse & Salakhutdinov 2016, section 5), over codes [z1, z2]. No closed-form
    KL from the two-layer posterior exists, so the KL is the Monte Carlo one at the posterior's samples."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        *widths, second = config.second_layer
        self.first, self.second, self.widths = config.latent_dim, second, widths
        self.lower = mlp(second, widths, 2 * config.latent_dim, config.activation)  # z2 -> (mu1, logvar1)
        self.top = StandardNormal(second)

    def conditional(self, z2: Tensor) -> DiagonalGaussian:
        """p(z1|z2) for second-layer codes z2 (..., D2)."""
        mu, logvar = self.lower(z2).chunk(2, dim=-1)
        return DiagonalGaussian(mu, logvar)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z2; 0, I) + log p(z1|z2)."""
        z1, z2 = z[..., : self.first], z[..., self.first :]
        return self.top.log_prob(z2) + self.conditional(z2).log_prob(z1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z2 ~ N(0, I), then z1 ~ p(z1|z2); codes [z1, z2] (n, D1 + D2)."""
        like = next(self.lower.parameters())  # drawn on the CPU like N(0, I)'s, then to the network's device and dtype
        z2 = torch.randn(n, self.second, generator=generator).to(like)
        p_z1 = self.conditional(z2)
        eps = torch.randn(n, self.first, generator=generator).to(like)
        return torch.cat([p_z1.mu + p_z1.stddev * eps, z2], -1)

    def describe(self) -> str:
        return f"a two-layer prior N(z2; 0, I)·p(z1|z2), z2 of {self.second}, z1 of {self.first} through {self.widths}"


def mixture_log_prob(z: Tensor, log_weights: Tensor, gaussians: DiagonalGaussian) -> Tensor:
    """log Σ_k π_k N(z; μ_k, σ_k²) for codes (..., D) against K components (K, D), via log-sum-exp."""
    per_component = gaussians.log_prob(z.unsqueeze(-2))  # (..., K)
    return torch.logsumexp(per_component + log_weights, dim=-1)


def mixture_sample(
    n: int, log_weights: Tensor, gaussians: DiagonalGaussian, generator: torch.Generator | None
) -> Tensor:
    device = log_weights.device
    which = torch.multinomial(log_weights.exp().cpu(), n, replacement=True, generator=generator).to(device)
    eps = torch.randn(n, gaussians.mu.shape[-1], generator=generator).to(device)
    return gaussians.mu[which] + gaussians.stddev[which] * eps


@closed_form(StandardNormal, DiagonalGaussian)
def _gaussian_to_standard(prior: StandardNormal, posterior: DiagonalGaussian) -> Tensor:
    return posterior.kl_per_dim()


@closed_form(UniformCategorical, RelaxedCategorical)
def _categorical_to_uniform(prior: UniformCategorical, posterior: RelaxedCategorical) -> Tensor:
    return posterior.kl_per_dim()


@closed_form(Prior, PointMass)
def _point_mass(prior: Prior, posterior: PointMass) -> Tensor:
    """An autoencoder's code is not regularized: its KL term is 0 by definition (it has no ELBO)."""
    return torch.zeros_like(posterior.code)


Encode = Callable[[Tensor], Posterior]


def build_prior(config: ModelConfig, family: Family, encode: Encode) -> Prior:
    """The prior a config names, built by its registered part."""
    build: Callable[[ModelConfig, Family, Encode], Prior] = PRIORS[config.prior].impl
    return build(config, family, encode)


def _standard(config: ModelConfig, family: Family, encode: Encode) -> Prior:
    """N(0, I) for Gaussian codes, N(z2; 0, I)·p(z1|z2) with a second stochastic layer, uniform for categorical
    codes."""
    if config.latent == "categorical":
        codes = options_of(config, CategoricalSettings)
        return UniformCategorical(codes.latent_vars, codes.categories)
    if config.second_layer:
        return TwoLayerPrior(config)
    own_prior = getattr(family, "own_prior", None)  # a family whose codes have a prior of their own (a hierarchy)
    return own_prior() if own_prior is not None else StandardNormal(family.latent_dim)


def learned_prior_requirements() -> tuple[Requirement, ...]:
    """What a learned density over Gaussian codes asks of the rest: Gaussian codes, and a pathwise estimator (its KL
    is a Monte Carlo estimate at samples of q)."""
    return (
        Requirement(
            lambda c: c.model.latent == "gaussian" and c.model.kind == "vae",
            lambda c: (
                f"the {c.model.prior} prior is a density over Gaussian codes: use it with --model vae --latent gaussian"
            ),
        ),
        Requirement(
            lambda c: c.estimator in PATHWISE,
            "a learned prior's KL is estimated at samples of q, which needs their path: use --estimator reparam",
        ),
    )


@dataclass(frozen=True)
class ComponentSettings:
    """The learned priors' own setting."""

    prior_components: int = setting(
        10, "Components of a mog prior, pseudo-inputs of a vamp prior.", bounds=(1, MAX_WIDTH)
    )


def _components(config: ModelConfig) -> int:
    return options_of(config, ComponentSettings).prior_components


LEARNED_PRIOR_EXPORT = "the run's learned {name} prior, which these files do not hold: draw codes with vaekit"


def _no_label(config: TrainConfig) -> bool:
    return config.model.condition == "none"


PRIORS.register(Part("standard", "N(0, I)", impl=_standard, doc="N(0, I); uniform for categorical codes"))
PRIORS.register(
    Part(
        "mog",
        "learned mixture",
        doc="a learned mixture of `--prior-components K` Gaussians",
        requires=learned_prior_requirements(),
        export=LEARNED_PRIOR_EXPORT.format(name="mog"),
        settings=ComponentSettings,
        impl=lambda config, family, encode: MixtureOfGaussians(family.latent_dim, _components(config)),
    )
)
PRIORS.register(
    Part(
        "vamp",
        "VampPrior",
        doc="the VampPrior: the posterior's mixture at K learned pseudo-inputs (Tomczak & Welling 2018)",
        export=LEARNED_PRIOR_EXPORT.format(name="vamp"),
        requires=(
            Requirement(
                _no_label,
                "the VampPrior encodes pseudo-inputs, which have no label: use --prior standard or mog with "
                "--condition label",
            ),
            *learned_prior_requirements(),
        ),
        settings=ComponentSettings,
        impl=lambda config, family, encode: VampPrior(_components(config), tuple(config.input_shape), encode),
    )
)
