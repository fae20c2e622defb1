"""`VAE`: an encoder that returns q(z|x), a decoder that returns p(x|z), and the few things one does with them."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.model.distributions import (
    LOG_2PI,
    LOG_SCALE_MIN,
    Bernoulli,
    DiagonalGaussian,
    Gaussian,
    Likelihood,
    PointMass,
    Posterior,
    Randomness,
    RelaxedCategorical,
)
from vaekit.model.networks import NETWORKS
from vaekit.model.objectives import ElboTerms, elbo


class VAE(nn.Module):
    """A VAE built from a `ModelConfig` alone, so that a run folder's config.json is enough to rebuild it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = tuple(config.input_shape)
        self.latent_dim = config.latent_dim
        self.deterministic = config.kind == "ae"  # the plain-autoencoder baseline: the code is the mean, no noise
        self.categorical = config.latent == "categorical"
        self.temperature = config.temperature_min  # the trainer anneals it; evaluation draws exact discrete codes
        build_encoder, build_decoder = NETWORKS[config.network]
        outputs = config.latent_dim if self.deterministic or self.categorical else 2 * config.latent_dim
        self.encoder = build_encoder(self.input_shape, config.hidden, outputs)
        self.decoder = build_decoder(self.input_shape, config.hidden, config.latent_dim)
        log_scale = torch.tensor(math.log(config.gaussian_scale))
        if config.likelihood == "gaussian-learned":  # one σ for every pixel, learned
            self.log_scale = nn.Parameter(log_scale)
        elif config.likelihood == "gaussian-pixel":  # one σ per pixel, learned, shared across images
            self.log_scale = nn.Parameter(log_scale.expand(self.input_shape).clone())
        else:  # a constant; a buffer so it travels with .to(device) and the weights file
            self.register_buffer("log_scale", log_scale)

    def encode(self, x: Tensor) -> Posterior:
        """q(z|x) for images (N, C, H, W) in [0, 1]; for the autoencoder baseline, a point mass at its code."""
        if self.categorical:
            logits = self.encoder(x).unflatten(-1, (self.config.latent_vars, self.config.categories))
            return RelaxedCategorical(logits, self.temperature, self.config.straight_through, hard=not self.training)
        if self.deterministic:
            return PointMass(self.encoder(x))
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: Tensor) -> Likelihood:
        """p(x|z) for latents (..., D); leading sample dimensions are kept."""
        leading = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim)).reshape(*leading, *self.input_shape)
        if self.config.likelihood == "bernoulli":
            return Bernoulli(out, event_ndim=len(self.input_shape))
        log_scale: Tensor = self.log_scale
        if self.config.likelihood != "gaussian":  # a learned σ gets a floor; a fixed one is what the user chose
            log_scale = log_scale.clamp_min(LOG_SCALE_MIN)
        return Gaussian(torch.sigmoid(out), log_scale, event_ndim=len(self.input_shape))

    def elbo(self, x: Tensor, generator: Randomness = None, estimator: str = "reparam", samples: int = 1) -> ElboTerms:
        """Per-example ELBO and its terms (see `vaekit.model.objectives.elbo`)."""
        return elbo(self, x, generator, estimator, samples)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n codes from p(z): N(0, I), or uniform one-hot codes for categorical latents."""
        if self.categorical:
            classes = torch.randint(self.config.categories, (n, self.config.latent_vars), generator=generator)
            return torch.nn.functional.one_hot(classes, self.config.categories).float().flatten(-2).to(self.device)
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) per code: −½ Σ (log 2π + z²), or −V·log K for one-hot codes under the uniform prior."""
        if self.categorical:
            return torch.full(
                z.shape[:-1], -self.config.latent_vars * math.log(self.config.categories), device=z.device
            )
        return -0.5 * (LOG_2PI + z**2).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n draws from the prior; returns the likelihood means (N, C, H, W), as pictures do."""
        return self.decode(self.prior_sample(n, generator)).mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mode of each input (the mean, for a Gaussian): the reconstruction pictures show."""
        return self.decode(self.encode(x).mode).mean
