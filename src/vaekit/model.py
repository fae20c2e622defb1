"""`VAE`: an encoder that returns q(z|x), a decoder that returns p(x|z), and the few things one does with them."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.distributions import Bernoulli, DiagonalGaussian, Gaussian, Likelihood
from vaekit.networks import NETWORKS
from vaekit.objectives import ElboTerms, elbo


class VAE(nn.Module):
    """A VAE built from a `ModelConfig` alone, so that a run folder's config.json is enough to rebuild it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = tuple(config.input_shape)
        self.latent_dim = config.latent_dim
        self.deterministic = config.kind == "ae"  # the plain-autoencoder baseline: the code is the mean, no noise
        build_encoder, build_decoder = NETWORKS[config.network]
        outputs = config.latent_dim if self.deterministic else 2 * config.latent_dim
        self.encoder = build_encoder(self.input_shape, config.hidden, outputs)
        self.decoder = build_decoder(self.input_shape, config.hidden, config.latent_dim)
        log_scale = torch.tensor(math.log(config.gaussian_scale))
        if config.likelihood == "gaussian-learned":  # one σ for every pixel, learned
            self.log_scale = nn.Parameter(log_scale)
        elif config.likelihood == "gaussian-pixel":  # one σ per pixel, learned, shared across images
            self.log_scale = nn.Parameter(log_scale.expand(self.input_shape).clone())
        else:  # a constant; a buffer so it travels with .to(device) and the weights file
            self.register_buffer("log_scale", log_scale)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) for images (N, C, H, W) in [0, 1]; for the autoencoder baseline, a point mass at its code."""
        if self.deterministic:
            return DiagonalGaussian.point(self.encoder(x))
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return DiagonalGaussian(mu, logvar)

    def decode(self, z: Tensor) -> Likelihood:
        """p(x|z) for latents (..., D); leading sample dimensions are kept."""
        leading = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim)).reshape(*leading, *self.input_shape)
        if self.config.likelihood == "bernoulli":
            return Bernoulli(out, event_ndim=len(self.input_shape))
        return Gaussian(torch.sigmoid(out), self.log_scale, event_ndim=len(self.input_shape))

    def elbo(
        self, x: Tensor, generator: torch.Generator | None = None, estimator: str = "reparam", samples: int = 1
    ) -> ElboTerms:
        """Per-example ELBO and its terms (see `vaekit.objectives.elbo`)."""
        return elbo(self, x, generator, estimator, samples)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n draws from the prior N(0, I); returns the likelihood means (N, C, H, W), as pictures do."""
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        return self.decode(z).mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mean of each input: the deterministic reconstruction shown in pictures."""
        return self.decode(self.encode(x).mean).mean
