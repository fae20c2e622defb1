"""A top-down hierarchical VAE: L stochastic layers z1 … zL (`--latent hierarchy --layers L`), the Ladder VAE of
Sønderby et al. (2016) whose top-down inference BIVA (Maaløe et al. 2019) and Havtorn et al. (2021) build on.

    generative  p(zL) = N(0, I),  p(z_l | z_{l+1}) a diagonal Gaussian from an MLP,  p(x | z1) the likelihood head
    inference   a deterministic bottom-up pass d1 = encoder(x), d_{l+1} = up_l(d_l), each d_l read out as a Gaussian
                N(m̂_l, ŝ_l²); then top-down, sharing the generative networks:
                q(zL | x) = N(m̂_L, ŝ_L²),  q(z_l | z_{l+1}, x) = the precision-weighted product of N(m̂_l, ŝ_l²) and
                p(z_l | z_{l+1})

Codes are [z1, …, zL], of which the decoder reads z1; each layer is half the size of the one below (z1 is
`--latent-dim`). With `--z1-channels C` and `--network ladder`, z1 is instead C feature maps at half the image's
resolution (read out and predicted by convolutions, so it keeps what is local: edges and strokes), z2 is
`--latent-dim`, and the decoder, shallow, reads z1 beside the maps p(z1 | z2) comes from: Havtorn et al.'s HVAE in
small, the shape in which the layers above z1 carry what an image is of and LLR>1 tells the two apart.

Given the layers above it, each layer's KL is a closed form between two Gaussians, so the KL term is that sum at the
sampled codes (an unbiased estimate with no sampled log-density ratio), and free bits floor it per unit. Because
inference runs top-down, the k lowest layers can be drawn from their conditional prior instead of q:
`log_weights_above` gives the importance weights of that bound, L>k, whose gap to the full bound is the likelihood
ratio LLR>k that Havtorn et al. (2021) use to tell inputs unlike the training data from the rest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import MAX_LAYERS, MAX_WIDTH, ModelConfig, TrainConfig, options_of, setting
from vaekit.model.networks import ACTIVATIONS, MapConditional, MapReadout, Residual, half_grid, mlp
from vaekit.model.posteriors import PATHWISE, DiagonalGaussian, GaussianFamily
from vaekit.model.priors import Prior, StandardNormal
from vaekit.model.randomness import Randomness
from vaekit.parts import POSTERIORS, Exported, Part, Requirement

MAX_MAP_CHANNELS = 256


@dataclass(frozen=True)
class HierarchySettings:
    """The hierarchy's own settings."""

    layers: int = setting(
        3, "Stochastic layers of a --latent hierarchy (z1 is --latent-dim, each above half).", bounds=(2, MAX_LAYERS)
    )
    ladder_width: int = setting(
        256, "Width of the hierarchy's networks between stochastic layers.", bounds=(1, MAX_WIDTH)
    )
    z1_channels: int = setting(
        0,
        "z1 as this many feature maps at half the image's resolution, with --network ladder (--latent-dim then sizes "
        "z2); 0: a flat z1 of --latent-dim.",
        bounds=(0, MAX_MAP_CHANNELS),
    )


def layer_sizes(config: ModelConfig) -> list[int]:
    """[D1, …, DL]: z1 is `latent_dim`, or with `z1_channels` that many maps on the ladder's half-resolution grid and
    z2 `latent_dim`; each layer above half the one below, at least 1."""
    settings = options_of(config, HierarchySettings)
    sizes = [config.latent_dim]
    if settings.z1_channels:
        grid_h, grid_w = half_grid(config.input_shape)
        sizes.insert(0, settings.z1_channels * grid_h * grid_w)
    while len(sizes) < settings.layers:
        sizes.append(max(1, sizes[-1] // 2))
    return sizes


def precision_weighted(bottom_up: DiagonalGaussian, top_down: DiagonalGaussian) -> DiagonalGaussian:
    """The normalized product N(m̂, ŝ²)·N(μp, σp²): precision 1/ŝ² + 1/σp², mean the precision-weighted average
    (Sønderby et al. 2016, eq. 19). Written in log-variances, so that neither precision overflows."""
    logvar = -torch.logaddexp(-bottom_up.logvar, -top_down.logvar)
    weight = torch.exp(logvar - bottom_up.logvar)  # ŝ⁻² / (ŝ⁻² + σp⁻²), in [0, 1]
    return DiagonalGaussian(weight * bottom_up.mu + (1 - weight) * top_down.mu, logvar)


class TopDown(nn.Module):
    """The generative networks z_{l+1} → p(z_l | z_{l+1}), l = 1 … L−1, which the prior and the posterior share."""

    def __init__(self, sizes: list[int], width: int, activation: str, bottom: nn.Module | None = None) -> None:
        super().__init__()
        self.sizes = sizes
        # p(z1 | z2) is `bottom` where given (on a grid: `MapConditional`), like every layer above an MLP otherwise
        self.nets = nn.ModuleList(
            bottom if layer == 0 and bottom is not None else mlp(above, [width, width], 2 * below, activation)
            for layer, (below, above) in enumerate(itertools.pairwise(sizes))
        )

    def conditional(self, layer: int, above: Tensor, frozen: bool = False) -> DiagonalGaussian:
        """p(z_layer | z_{layer+1}) (0-based `layer`) for codes of the layer above; `frozen` evaluates the network with
        its parameters cut from the graph and the path through `above` kept (see `TopDownGaussian.detached`)."""
        net = self.nets[layer]
        if frozen:
            params = {name: p.detach() for name, p in net.named_parameters()}
            features = torch.func.functional_call(net, params, (above,))
        else:
            features = net(above)
        mu, logvar = features.chunk(2, dim=-1)
        return DiagonalGaussian(mu, logvar)

    def split(self, z: Tensor) -> list[Tensor]:
        """[z1, …, zL] from codes (..., D1 + … + DL)."""
        return list(torch.split(z, self.sizes, dim=-1))


class TopDownGaussian:
    """q(z1 … zL | x) = q(zL | x) Π_l q(z_l | z_{l+1}, x): the hierarchy's posterior, over codes [z1, …, zL].

    Every layer is reparameterized, so the gradient reaches the encoder through each z_l and the generative networks
    through the top-down pass they share with the prior."""

    export: Exported = (
        "ONNX export covers one stochastic layer and this run has a hierarchy of them: its top-down networks have no "
        "place in encoder.onnx and decoder.onnx; export a run trained with --latent gaussian"
    )

    relaxed = False

    def __init__(self, bottom_up: list[DiagonalGaussian], top_down: TopDown, frozen: bool = False) -> None:
        self.bottom_up = bottom_up  # N(m̂_l, ŝ_l²) per layer, (N, D_l) each
        self.top_down = top_down
        self.frozen = frozen  # q's parameters held fixed (DReG); the prior's own use of the networks is unaffected

    @property
    def layers(self) -> int:
        return len(self.bottom_up)

    def _q(self, layer: int, above: Tensor | None) -> tuple[DiagonalGaussian, DiagonalGaussian | None]:
        """(q(z_layer | z_{layer+1}, x), p(z_layer | z_{layer+1})); the top layer has no conditional prior."""
        if above is None:
            return self.bottom_up[layer], None
        prior = self.top_down.conditional(layer, above, self.frozen)
        return precision_weighted(self.bottom_up[layer], prior), prior

    def pairs(self, z: Tensor) -> list[tuple[DiagonalGaussian, DiagonalGaussian | None]]:
        """Each layer's q and conditional prior at the codes `z` (..., Σ D_l), bottom layer first."""
        codes = self.top_down.split(z)
        return [self._q(layer, codes[layer + 1] if layer + 1 < self.layers else None) for layer in range(self.layers)]

    def draw(
        self, n_samples: int | None = None, generator: Randomness = None, prior_below: int = 0, at_mean: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized codes [z1, …, zL] drawn top-down, the lowest `prior_below` layers from their conditional
        prior p(z_l | z_{l+1}) instead of q (`at_mean`: set to its mean), and Σ_{l > prior_below}
        [log p(z_l | z_{l+1}) − log q(z_l | …)] over the layers drawn from q (the top layer's prior being N(0, I)):
        with log p(x | z), the log importance weight of the bound L>k. `prior_below = 0` is an ordinary draw of q and
        its log p(z) − log q(z)."""
        top = self.bottom_up[-1]
        codes = [top.rsample(n_samples, generator=generator)]
        log_ratio = StandardNormal.log_density(codes[0]) - top.log_prob(codes[0])
        for layer in reversed(range(self.layers - 1)):
            q, prior = self._q(layer, codes[0])
            assert prior is not None
            if layer < prior_below:
                codes.insert(0, prior.mu if at_mean else prior.rsample(generator=generator))
            else:
                codes.insert(0, q.rsample(generator=generator))
                log_ratio = log_ratio + prior.log_prob(codes[0]) - q.log_prob(codes[0])
        return torch.cat(codes, -1), log_ratio

    def rsample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        """Reparameterized draw: (..., Σ D_l), or (n_samples, ..., Σ D_l)."""
        return self.draw(n_samples, generator)[0]

    def sample(self, n_samples: int | None = None, generator: Randomness = None) -> Tensor:
        with torch.no_grad():
            return self.rsample(n_samples, generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """Σ_l log q(z_l | z_{l+1}, x)."""
        codes = self.top_down.split(z)
        return sum((q.log_prob(code) for (q, _), code in zip(self.pairs(z), codes, strict=True)), torch.zeros(()))

    def kl_at(self, z: Tensor) -> Tensor:
        """Each dimension's KL(q(z_l | z_{l+1}, x) ‖ p(z_l | z_{l+1})) given the layers above as in `z`, (..., Σ D_l);
        the top layer's against N(0, I). Summed, and averaged over draws of z, it is the ELBO's KL term."""
        per_layer = [q.kl_per_dim(prior) for q, prior in self.pairs(z)]
        return torch.cat([kl.expand(*z.shape[:-1], -1) for kl in per_layer], -1)  # the top's has no sample axis

    def detached(self) -> TopDownGaussian:
        """The same distribution with q's parameters (the bottom-up readouts' and, inside q, the shared networks')
        held fixed; samples keep their own path."""
        return TopDownGaussian([layer.detached() for layer in self.bottom_up], self.top_down, frozen=True)

    @property
    def mean(self) -> Tensor:
        """The code along the mean path: each layer's q mean given the means above (E[z] has no closed form)."""
        codes = [self.bottom_up[-1].mu]
        for layer in reversed(range(self.layers - 1)):
            codes.insert(0, self._q(layer, codes[0])[0].mu)
        return torch.cat(codes, -1)

    @property
    def mode(self) -> Tensor:
        return self.mean

    @property
    def variance(self) -> Tensor:
        """Each layer's q variances given the mean path above."""
        return torch.cat([q.variance for q, _ in self.pairs(self.mean)], -1)

    def kl_per_dim(self) -> Tensor:
        """`kl_at` the mean path: a per-unit picture for reports."""
        return self.kl_at(self.mean)


class TopDownPrior(Prior):
    """p(z1 … zL) = N(zL; 0, I) Π_l p(z_l | z_{l+1}), over codes [z1, …, zL]; its networks are the posterior's
    (`TopDown`), registered there once."""

    def __init__(self, top_down: TopDown) -> None:
        super().__init__()
        self._shared = (top_down,)  # a tuple, so that the networks are not registered twice
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    @property
    def top_down(self) -> TopDown:
        return self._shared[0]

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(zL; 0, I) + Σ_l log p(z_l | z_{l+1})."""
        codes = self.top_down.split(z)
        total = StandardNormal.log_density(codes[-1])
        for layer in range(len(codes) - 1):
            total = total + self.top_down.conditional(layer, codes[layer + 1]).log_prob(codes[layer])
        return total

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral: zL ~ N(0, I), then each z_l ~ p(z_l | z_{l+1}); the noise is drawn on the CPU, as N(0, I)'s."""
        like = next(self.top_down.parameters())
        codes = [torch.randn(n, self.top_down.sizes[-1], generator=generator).to(like)]
        for layer in reversed(range(len(self.top_down.sizes) - 1)):
            prior = self.top_down.conditional(layer, codes[0])
            eps = torch.randn(n, self.top_down.sizes[layer], generator=generator).to(like)
            codes.insert(0, prior.mu + prior.stddev * eps)
        return torch.cat(codes, -1)

    def kl_per_unit(self, posterior: Any, z: Tensor | None = None) -> Tensor | None:
        """Each dimension's KL given the layers above: at the codes `z` (samples, ..., D) the objective drew,
        averaged over the samples, or along the posterior's mean path without them."""
        if not isinstance(posterior, TopDownGaussian):
            return None
        if z is None:
            return posterior.kl_per_dim()
        per_dim = posterior.kl_at(z)
        return per_dim.mean(0) if z.dim() == posterior.bottom_up[0].mu.dim() + 1 else per_dim

    def describe(self) -> str:
        sizes = " → ".join(str(size) for size in reversed(self.top_down.sizes))
        return f"a top-down hierarchy N(zL; 0, I)·Π p(z_l|z_l+1), layers {sizes}"


class HierarchyFamily(GaussianFamily):
    """Encoder features d1 (..., width) → the bottom-up pass and its Gaussian readouts, and the shared top-down
    networks; `own_prior` is the standard prior of such codes."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config.latent_dim)
        settings = options_of(config, HierarchySettings)
        self.sizes = layer_sizes(config)
        width = settings.ladder_width
        self.features, self.latent_dim, self.decoded_dim = width, sum(self.sizes), self.sizes[0]
        act = ACTIVATIONS[config.activation]
        self.spatial = settings.z1_channels > 0  # z1 on the ladder network's half-resolution grid
        first_up: nn.Module
        first_readout: nn.Module
        bottom: nn.Module | None = None
        if self.spatial:
            maps, grid = config.hidden[0], half_grid(config.input_shape)
            quarter = (grid[0] // 2) * (grid[1] // 2)
            self.features = maps * grid[0] * grid[1]
            self.decoded_dim = (settings.z1_channels + maps) * grid[0] * grid[1]
            first_up = nn.Sequential(
                nn.Unflatten(1, (maps, *grid)),
                act(),
                nn.Conv2d(maps, maps, 4, stride=2, padding=1),
                Residual(maps, config.activation),
                act(),
                nn.Flatten(),
                nn.Linear(maps * quarter, width),
            )
            first_readout = MapReadout(maps, settings.z1_channels, grid, config.activation)
            bottom = MapConditional(self.sizes[1], width, maps, settings.z1_channels, grid, config.activation)
        else:  # in the order a flat hierarchy always built them, so that a seed gives the same weights as before
            first_up = nn.Sequential(act(), nn.Linear(width, width))
        self.up = nn.ModuleList([first_up, *(nn.Sequential(act(), nn.Linear(width, width)) for _ in self.sizes[2:])])
        if not self.spatial:
            first_readout = nn.Sequential(act(), nn.Linear(width, 2 * self.sizes[0]))
        rest = (nn.Sequential(act(), nn.Linear(width, 2 * size)) for size in self.sizes[1:])
        self.readouts = nn.ModuleList([first_readout, *rest])
        self.top_down = TopDown(self.sizes, width, config.activation, bottom)

    def forward(self, features: Tensor) -> TopDownGaussian:  # type: ignore[override]  # one more posterior kind
        bottom_up, d = [], features
        for layer, readout in enumerate(self.readouts):
            if layer:
                d = self.up[layer - 1](d)
            mu, logvar = readout(d).chunk(2, dim=-1)
            bottom_up.append(DiagonalGaussian(mu, logvar))
        return TopDownGaussian(bottom_up, self.top_down)

    def own_prior(self) -> Prior:
        return TopDownPrior(self.top_down)

    def decoder_input(self, z: Tensor) -> Tensor:
        """z1, and with a spatial z1 the maps p(z1 | z2) is read from beside it (the skip connection)."""
        if not self.spatial:
            return z[..., : self.decoded_dim]
        codes, bottom = self.top_down.split(z), self.top_down.nets[0]
        assert isinstance(bottom, MapConditional)
        return torch.cat([codes[0], bottom.features(codes[1])], -1)


def log_weights_above(
    model: Any, x: Tensor, prior_below: int, k: int, generator: Randomness = None, at_mean: bool = False
) -> Tensor:
    """log w_i of the bound L>k (k = `prior_below`): z_i drawn top-down with the k lowest layers from their
    conditional prior, log w_i = log p(x | z_i) + Σ_{l > k} [log p(z_l,i | z_l+1,i) − log q(z_l,i | …)]; shape
    (k samples, N). `prior_below = 0` gives the ordinary importance weights.

    `at_mean` sets the k lowest layers to their conditional prior's mean instead of drawing them, as Havtorn et al.'s
    reference code does: no longer a bound on log p(x), but the score that separates. The draw's noise over a large
    spatial z1 buries what the layers above say (a pilot HVAE on Fashion-MNIST's validation split against MNIST
    training images: LLR>1's AUROC 0.80 drawn and 0.93 at the mean after one epoch, 0.51 and 0.84 after three)."""
    posterior = model.encode(x)
    z, log_ratio = posterior.draw(k, generator, prior_below, at_mean)
    weights: Tensor = model.decode(z).log_prob(x) + log_ratio
    return weights


def hierarchy_settings(layers: int, z1_channels: int = 0) -> dict[str, Any]:
    """The `ModelConfig` fields that make a model a hierarchy of `layers` layers (z1 `z1_channels` maps on the ladder
    network's grid, when given), for code that builds configs (the Detector) without naming the part itself."""
    if z1_channels:
        return {"latent": "hierarchy", "network": "ladder", "options": {"layers": layers, "z1_channels": z1_channels}}
    return {"latent": "hierarchy", "options": {"layers": layers}}


def layer_sizes_of(model: Any) -> list[int]:
    """[D1, …, DL] when the model's codes are a top-down hierarchy (which LLR>k needs), else []."""
    family = model.posterior
    return list(family.sizes) if isinstance(family, HierarchyFamily) else []


def _one_layer_of_its_own(config: TrainConfig) -> bool:
    return not config.model.second_layer


POSTERIORS.register(
    Part(
        "hierarchy",
        "top-down hierarchy",
        doc="`--layers L` diagonal Gaussian layers with top-down inference (the Ladder VAE, Sønderby et al. 2016): "
        "z1 of `--latent-dim`, each layer above half the one below; what `vaekit score` needs for LLR>k",
        requires=(
            Requirement(lambda c: c.model.kind == "vae", "a hierarchy is of Gaussian layers: use it with --model vae"),
            Requirement(
                lambda c: c.model.prior == "standard",
                lambda c: f"a hierarchy brings its own prior N(zL; 0, I)·Π p(z_l|z_l+1): drop --prior {c.model.prior}",
            ),
            Requirement(
                lambda c: c.estimator in PATHWISE,
                "the hierarchy's KL is taken at samples of q, which needs their path: use --estimator reparam",
            ),
            Requirement(
                _one_layer_of_its_own, "--second-layer is a two-layer model of its own: drop it, or use --layers 2"
            ),
            Requirement(
                lambda c: c.model.network == "ladder" or not options_of(c.model, HierarchySettings).z1_channels,
                "a spatial z1 is read from the ladder network's half-resolution maps: add --network ladder",
            ),
        ),
        settings=HierarchySettings,
        impl=HierarchyFamily,
    )
)
