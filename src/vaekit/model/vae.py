"""`VAE`: the parts wired together — encoder network → posterior family → codes → decoder network → likelihood head,
with a prior over the codes. Which parts a config names is decided here once; nothing else asks."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.model.heads import Likelihood, build_head
from vaekit.model.networks import NETWORKS
from vaekit.model.objectives import ElboTerms, elbo
from vaekit.model.posteriors import Posterior, posterior_family
from vaekit.model.priors import build_prior
from vaekit.model.randomness import Randomness


class VAE(nn.Module):
    """A VAE built from a `ModelConfig` alone, so that a run folder's config.json is enough to rebuild it.

    Parts, in the order their parameters are registered (which the optimizer state follows): the posterior family,
    the encoder and decoder networks, the likelihood head (a learned σ lives there), the prior (learned priors)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.input_shape = tuple(config.input_shape)
        self.posterior = posterior_family(config)
        self.latent_dim = self.posterior.latent_dim
        build_encoder, build_decoder = NETWORKS[config.network]
        head = build_head(config)
        channels, height, width = self.input_shape
        self.output_shape = (channels * head.channels, height, width)
        self.encoder = build_encoder(self.input_shape, config.hidden, self.posterior.features, config.activation)
        self.decoder = build_decoder(self.output_shape, config.hidden, self.posterior.decoded_dim, config.activation)
        self.likelihood = head
        self.prior = build_prior(config, self.posterior, self.encode)

    def encode(self, x: Tensor) -> Posterior:
        """q(z|x) for images (N, C, H, W) in [0, 1]."""
        posterior: Posterior = self.posterior(self.encoder(x))
        return posterior

    def decode(self, z: Tensor) -> Likelihood:
        """p(x|z) for latents (..., D); leading sample dimensions are kept."""
        leading = z.shape[:-1]
        z = z[..., : self.posterior.decoded_dim]  # the decoder reads z1 of a two-layer code
        out = self.decoder(z.reshape(-1, z.shape[-1])).reshape(*leading, *self.output_shape)
        likelihood: Likelihood = self.likelihood(out)
        return likelihood

    def elbo(self, x: Tensor, generator: Randomness = None, estimator: str = "reparam", samples: int = 1) -> ElboTerms:
        """Per-example ELBO and its terms (see `vaekit.model.objectives.elbo`)."""
        return elbo(self, x, generator, estimator, samples)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n codes from p(z), on the model's device."""
        return self.prior.sample(n, generator)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return self.prior.log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n draws from the prior; returns the likelihood means (N, C, H, W), as pictures do."""
        return self.decode(self.prior_sample(n, generator)).mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Decode the posterior mode of each input (the mean, for a Gaussian): the reconstruction pictures show."""
        return self.decode(self.encode(x).mode).mean


def stored_names(names: Iterable[str], model: VAE) -> dict[str, str]:
    """For each name a weights file holds, the model's name for it. Files written before the likelihood became a
    part (format_version 1) kept σ as `log_scale` on the model itself; it now lives in the likelihood head, and a
    Bernoulli head has none (the old file's unused constant is left out)."""
    expected = model.state_dict()
    renamed = {"log_scale": "likelihood.log_scale"}
    found = {renamed.get(name, name): name for name in names}
    return {ours: theirs for ours, theirs in found.items() if ours in expected or theirs == ours}
