"""`VAE`: the parts wired together — encoder network → posterior family → codes → decoder network → likelihood head,
with a prior over the codes. Which parts a config names is decided here once; nothing else asks."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import VaekitError
from vaekit.memory import layer_outputs, require
from vaekit.model.heads import Likelihood, build_head
from vaekit.model.networks import network
from vaekit.model.objectives import ElboTerms, elbo
from vaekit.model.posteriors import Posterior, posterior_family
from vaekit.model.priors import build_prior
from vaekit.model.randomness import Randomness
from vaekit.parts import CONDITIONS, Part


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
        self.network = network(config.network)
        build_encoder, build_decoder = self.network.encoder, self.network.decoder
        head = build_head(config)
        channels, height, width = self.input_shape
        self.output_shape = (channels * head.channels, height, width)
        self.classes = label_classes(config)  # 0: unconditional, and every shape below is as it always was
        self.encoder = build_encoder(self._encoder_shape(), config.hidden, self.posterior.features, config.activation)
        self.decoder = build_decoder(
            self.output_shape, config.hidden, self.posterior.decoded_dim + self.classes, config.activation
        )
        self.likelihood = head
        self.prior = build_prior(config, self.posterior, self.encode)

    @property
    def conditional(self) -> bool:
        """Whether encoder and decoder see the class label: q(z|x, y) and p(x|z, y) (Sohn et al. 2015)."""
        return self.classes > 0

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """q(z|x) for images (N, C, H, W) in [0, 1]; q(z|x, y) with labels y (N,) for a conditional model."""
        posterior: Posterior = self.posterior(self.encoder(self._with_label(x, y)))
        return posterior

    def decode(self, z: Tensor, y: Tensor | None = None) -> Likelihood:
        """p(x|z) for latents (..., D); leading sample dimensions are kept. A conditional model reads the labels y
        (N,) of the last leading dimension, and decodes [z, one-hot(y)]."""
        leading = z.shape[:-1]
        z = self.posterior.decoder_input(z)  # e.g. z1 of a two-layer code
        code = self._one_hot(y, z)
        if code is not None:
            z = torch.cat([z, code.expand(*leading, -1)], -1)
        out = self.decoder(z.reshape(-1, z.shape[-1])).reshape(*leading, *self.output_shape)
        likelihood: Likelihood = self.likelihood(out)
        return likelihood

    def elbo(
        self,
        x: Tensor,
        generator: Randomness = None,
        estimator: str = "reparam",
        samples: int = 1,
        y: Tensor | None = None,
    ) -> ElboTerms:
        """Per-example ELBO and its terms (see `vaekit.model.objectives.elbo`)."""
        return elbo(self, x, generator, estimator, samples, y=y)

    def activation_bytes(self, examples: int, samples: int = 1) -> int:
        """Bytes of the layer outputs a pass over `examples` images with `samples` codes each keeps for the backward
        pass: the encoder's once per image, the decoder's and the likelihood's (its parameters, the broadcast target
        and the log-probability of each pixel: three values each) once per code, and the inputs with their one-hot
        labels (int64, then float32)."""
        per_image, per_code = self._pass_bytes
        return examples * (per_image + samples * per_code)

    @functools.cached_property
    def _pass_bytes(self) -> tuple[int, int]:
        """Bytes per image and per code of `activation_bytes`, counted once on the meta device (the shapes are
        fixed by the config)."""
        one_hot = 12 * self.classes
        encoder = layer_outputs(self.encoder, (1, *self._encoder_shape())) + 4 * math.prod(self._encoder_shape())
        decoded = self.posterior.decoded_dim + self.classes
        decoder = layer_outputs(self.decoder, (1, decoded)) + 4 * decoded + one_hot
        likelihood = 3 * 4 * math.prod(self.output_shape)
        return encoder + one_hot, decoder + likelihood

    def _encoder_shape(self) -> tuple[int, ...]:
        """What the encoder network is built to read. A flat-input network (the MLP) gets the one-hot label as K more
        inputs beside the flattened image; a conv network gets it as K constant channels (one of them all ones)."""
        channels, height, width = self.input_shape
        if not self.conditional:
            return self.input_shape
        if self.network.flat_input:
            return (1, 1, channels * height * width + self.classes)
        return (channels + self.classes, height, width)

    def _with_label(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The encoder's input: x, or x with its one-hot label in the layout `_encoder_shape` describes."""
        code = self._one_hot(y, x)
        if code is None:
            return x
        if self.network.flat_input:
            return torch.cat([x.flatten(1), code], 1)
        return torch.cat([x, code[:, :, None, None].expand(-1, -1, *x.shape[2:])], 1)

    def _one_hot(self, y: Tensor | None, like: Tensor) -> Tensor | None:
        """one-hot(y) (N, K) in `like`'s dtype and device; None for an unconditional model, which ignores y."""
        if not self.conditional:
            return None
        if y is None:
            raise VaekitError(
                f"this model is conditioned on class labels: pass y, one label in 0..{self.classes - 1} per image"
            )
        if y.is_floating_point() or y.is_complex() or (len(y) and not 0 <= int(y.min()) <= int(y.max()) < self.classes):
            raise VaekitError(f"class labels must be integers in 0..{self.classes - 1}: fix the labels passed as y")
        return F.one_hot(y.to(like.device).long(), self.classes).to(like.dtype)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n codes from p(z), on the model's device."""
        return self.prior.sample(n, generator)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        return self.prior.log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, y: Tensor | None = None) -> Tensor:
        """Decode n draws from the prior (of class y (n,), for a conditional model); returns the likelihood means
        (N, C, H, W), as pictures do."""
        self.check_sampling(n, "ask for fewer samples")
        return self.decode(self.prior_sample(n, generator), y).mean

    def check_sampling(self, n: int, fix: str) -> None:
        """Refuse in one line, before anything is drawn, `n` samples that would not fit in the device's memory."""
        what = f"decoding {n:,} samples of {'x'.join(map(str, self.input_shape))} images"
        require(self.activation_bytes(n), what, fix, self.device)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Decode the posterior mode of each input (the mean, for a Gaussian): the reconstruction pictures show."""
        return self.decode(self.encode(x, y).mode, y).mean


def label_classes(config: ModelConfig) -> int:
    """How many classes the model is conditioned on: 0 when it is not."""
    if config.condition == "none":
        return 0
    if config.classes < 2:
        raise VaekitError(
            f"a conditional model needs at least 2 classes, this config has {config.classes}: train it with "
            "`vaekit train --condition label` on a labelled dataset, which fills them in"
        )
    return config.classes


def stored_names(names: Iterable[str], model: VAE) -> dict[str, str]:
    """For each name a weights file holds, the model's name for it. Files written before the likelihood became a
    part (format_version 1) kept σ as `log_scale` on the model itself; it now lives in the likelihood head, and a
    Bernoulli head has none (the old file's unused constant is left out)."""
    expected = model.state_dict()
    renamed = {"log_scale": "likelihood.log_scale"}
    found = {renamed.get(name, name): name for name in names}
    return {ours: theirs for ours, theirs in found.items() if ours in expected or theirs == ours}


@dataclass(frozen=True)
class Conditioning:
    """What a `--condition` part asks of training: whether it reads each image's class label (and so counts the
    classes from the data when training starts, as it reads the image shape)."""

    labels: bool


CONDITIONS.register(Part("none", doc="unconditional: q(z|x) and p(x|z)", impl=Conditioning(labels=False)))
CONDITIONS.register(
    Part(
        "label",
        "a conditional VAE: encoder and decoder see the class label",
        doc="a conditional VAE (Sohn et al. 2015): q(z|x, y) and p(x|z, y), the one-hot class label beside the image "
        "and the code; needs a labelled dataset, whose classes it counts",
        impl=Conditioning(labels=True),
    )
)
