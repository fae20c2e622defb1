"""Ex-post density estimation: a Gaussian mixture fitted to the aggregate posterior, sampled instead of the prior.

An autoencoder's codes do not fill N(0, I) (nothing in its objective asks them to), and a VAE's aggregate posterior
q(z) = E_x q(z|x) rarely matches its prior either. Fitting p(z) = Σ_k π_k N(z; μ_k, Σ_k) by EM to the posterior means
of the training images, then decoding draws from it, turns any trained encoder/decoder pair into a generator: the
"regularized autoencoder" sampler of Ghosh et al. 2020 ("From Variational to Deterministic Autoencoders", sec. 4).

The fit is cached in the run folder as JSON (never a pickle), keyed by its settings, the data config and the SHA-256
of the weights file, so a run trained further, other data or other settings fit again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaekit.analysis.plots import image_grid
from vaekit.analysis.samplers import Sampler, setting
from vaekit.data.scoring import Scoring
from vaekit.data.sources import load_dataset, split_off
from vaekit.devices import accumulate_dtype, generator_on
from vaekit.errors import VaekitError
from vaekit.files import atomic_write_json
from vaekit.model.posteriors import LOG_2PI, need_continuous
from vaekit.model.vae import VAE
from vaekit.parts import SAMPLERS, Part
from vaekit.small_files import read_json
from vaekit.training.runs import WEIGHTS, Run

CACHE = "aggregate_gmm.json"
FORMAT_VERSION = 1
COMPONENTS, FIT_IMAGES = 10, 10_000
REG_COVAR = 1e-6  # added to every covariance's diagonal by EM, so that collapsed latent dimensions stay invertible
MAX_ITER = 200
ENCODE_CHUNK = 2000  # images per encoder call: bounds memory whatever --fit-images is


@dataclass
class AggregateGMM:
    """p(z) = Σ_k π_k N(z; μ_k, Σ_k) over the latent space; parameters float64 on the CPU, moved where they are used."""

    weights: Tensor  # (K,) mixing proportions π, summing to 1
    means: Tensor  # (K, D)
    covariances: Tensor  # (K, D, D), full
    key: dict[str, Any]  # the settings and the weights' identity this fit belongs to
    images: int  # codes the mixture was fitted to
    converged: bool  # whether EM met its tolerance within MAX_ITER iterations
    cached: bool = False  # read back from the run folder rather than fitted now

    def __post_init__(self) -> None:
        self.scale_tril = torch.linalg.cholesky(self.covariances)  # Σ_k = L_k L_kᵀ; raises if one is not positive

    @property
    def components(self) -> int:
        return len(self.weights)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n codes (n, D) float32 on the generator's device: k ~ Categorical(π), then z = μ_k + L_k ε, ε ~ N(0, I).

        The noise is drawn in two calls before any component is applied, so the codes depend on the generator's seed
        and the parameters alone, not on how the draws fall among the components. `vaekit sample` passes a CPU
        generator, so its pictures are the same on every device, as the prior's are."""
        device = generator.device
        dtype = accumulate_dtype(device)
        weights, means, tril = (t.to(device, dtype) for t in (self.weights, self.means, self.scale_tril))
        which = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, means.shape[1], generator=generator, device=device, dtype=dtype)  # (n, D)
        z = torch.empty_like(eps)
        for k in range(self.components):  # one matmul per component: no (n, D, D) gather of the factors
            rows = which == k
            z[rows] = means[k] + eps[rows] @ tril[k].T
        return z.float()

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) per code (...,) for codes (..., D), on z's device:
        log Σ_k π_k N(z; μ_k, Σ_k), with log N = −½ (D log 2π + log|Σ_k| + ‖L_k⁻¹ (z − μ_k)‖²)."""
        dtype = accumulate_dtype(z.device)
        flat = z.reshape(-1, z.shape[-1]).to(dtype)  # (N, D)
        weights, means, tril = (t.to(z.device, dtype) for t in (self.weights, self.means, self.scale_tril))
        terms = []
        for k in range(self.components):
            white = torch.linalg.solve_triangular(tril[k], (flat - means[k]).T, upper=False)  # (D, N)
            log_det = 2 * tril[k].diagonal().log().sum()
            terms.append(weights[k].log() - 0.5 * (flat.shape[1] * LOG_2PI + log_det + white.pow(2).sum(0)))
        return torch.logsumexp(torch.stack(terms, dim=-1), dim=-1).reshape(z.shape[:-1])

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "key": self.key,
            "images": self.images,
            "converged": self.converged,
            "weights": self.weights.tolist(),  # float64 → Python float → JSON repr: exact both ways
            "means": self.means.tolist(),
            "covariances": self.covariances.tolist(),
        }

    @classmethod
    def from_json(cls, data: Any, key: dict[str, Any], latent_dim: int) -> AggregateGMM | None:
        """The cached fit if `data` holds one for `key`, whole and usable; else None: a stale or damaged cache is
        fitted again, never trusted."""
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION or data.get("key") != key:
            return None
        k, d = key["components"], latent_dim
        try:
            weights, means, covariances = (
                torch.tensor(data[name], dtype=torch.float64) for name in ("weights", "means", "covariances")
            )
            if (weights.shape, means.shape, covariances.shape) != ((k,), (k, d), (k, d, d)):
                return None
            finite = all(bool(t.isfinite().all()) for t in (weights, means, covariances))
            proportions = bool((weights > 0).all()) and abs(float(weights.sum()) - 1) < 1e-9
            if not (finite and proportions and type(data["images"]) is int):
                return None
            return cls(weights, means, covariances, key, data["images"], data["converged"] is True, cached=True)
        except (KeyError, TypeError, ValueError, RuntimeError):  # a ragged list, or a covariance that is not positive
            return None


def check_gaussian_codes(model: VAE) -> None:
    """The one place that asks whether a mixture of Gaussians can model this run's codes."""
    need_continuous(model.posterior, "--sampler gmm (Gaussians fitted to the codes)", "use --sampler prior, or ")


def check_settings(components: int, fit_images: int) -> None:
    if components < 1:
        raise VaekitError(f"--components {components}: a mixture needs at least one component; use e.g. --components 5")
    if fit_images < components:
        raise VaekitError(
            f"--fit-images {fit_images} is fewer than --components {components}: fit on at least one image per "
            f"component (e.g. --fit-images {FIT_IMAGES})"
        )


def fit_aggregate_gmm(
    run: Run, components: int = COMPONENTS, fit_images: int = FIT_IMAGES, seed: int = 0, cache: bool = True
) -> AggregateGMM:
    """A full-covariance Gaussian mixture fitted to the posterior means of at most `fit_images` training images
    (a seeded subset), reusing the run folder's cache when it holds this very fit and writing it there otherwise."""
    check_settings(components, fit_images)
    check_gaussian_codes(run.model)
    path = run.path / CACHE
    key = cache_key(run, components, fit_images, seed)
    if cache and path.is_file():
        try:
            cached = AggregateGMM.from_json(read_json(path, ""), key, run.model.latent_dim)
        except VaekitError:
            cached = None
        if cached is not None:
            return cached
    codes = aggregate_codes(run, fit_images, seed)
    if len(codes) < components:
        raise VaekitError(
            f"--components {components} exceeds the {len(codes)} training images of {run.config.data.dataset}: "
            f"use at most --components {len(codes)}"
        )
    gmm = fit_mixture(codes, components, seed, key)
    if cache:
        try:
            atomic_write_json(path, gmm.to_json())
        except OSError as error:
            raise VaekitError(
                f"cannot write {path} ({error.strerror}): make the run folder writable to keep the fit"
            ) from None
    return gmm


def cache_key(run: Run, components: int, fit_images: int, seed: int) -> dict[str, Any]:
    """What a cached fit must match: the settings, the data it encoded, and the weights file's content."""
    weights = run.path / WEIGHTS
    try:
        with weights.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise VaekitError(f"cannot read {weights} ({error.strerror}): restore it or train the run again") from None
    return {
        "components": components,
        "fit_images": fit_images,
        "seed": seed,
        "covariance": "full",
        "reg_covar": REG_COVAR,
        "data": dataclasses.asdict(run.config.data),
        "weights_sha256": digest,
    }


@torch.inference_mode()
def aggregate_codes(run: Run, fit_images: int, seed: int) -> Tensor:
    """Posterior means (N, D) float64 on the CPU of at most `fit_images` training images, chosen by `seed`, scored as
    the run trains on them (a dynamically binarized run sees one seeded draw)."""
    train = load_dataset(run.config.data).train
    if fit_images < len(train):
        train = split_off(train, fit_images, seed)[1]
    model = run.model
    scoring, generator = Scoring.of(model.config, run.config.data), generator_on(model.device, seed)
    codes = []
    for start in range(0, len(train), ENCODE_CHUNK):
        x = scoring.input(train.x[start : start + ENCODE_CHUNK].to(model.device), generator)
        codes.append(model.encode(x).mean.cpu().double())  # to the CPU first: MPS has no float64
    return torch.cat(codes)


def fit_mixture(codes: Tensor, components: int, seed: int, key: dict[str, Any]) -> AggregateGMM:
    """EM with k-means initialisation (scikit-learn), seeded; float64 throughout."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture

    if not bool(codes.isfinite().all()):
        raise VaekitError("the encoder gives non-finite codes for some training images: retrain the run (lower --lr)")
    mixture = GaussianMixture(
        components, covariance_type="full", reg_covar=REG_COVAR, max_iter=MAX_ITER, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported through `converged` instead
        try:
            mixture.fit(codes.numpy())
        except ValueError as error:  # a component with an ill-defined covariance, e.g. on many identical codes
            raise VaekitError(f"the Gaussian mixture could not be fitted ({error}): use fewer --components") from None
    weights, means, covariances = (
        torch.from_numpy(np.asarray(a, dtype=np.float64)).clone()
        for a in (mixture.weights_, mixture.means_, mixture.covariances_)
    )
    return AggregateGMM(weights, means, covariances, key, len(codes), bool(mixture.converged_))


@torch.no_grad()
def gmm_sample_grid(model: VAE, gmm: AggregateGMM, n: int, seed: int) -> Image.Image:
    """Decoded mixture samples, drawn and tiled as `vaekit.analysis.plots.sample_grid` does for the prior."""
    z = gmm.sample(n, torch.Generator().manual_seed(seed)).to(model.device)
    return image_grid(model.decode(z).mean, columns=math.ceil(math.sqrt(n)))


@dataclass(frozen=True)
class GmmSettings:
    components: int = setting(COMPONENTS, "Mixture components.")
    fit_images: int = setting(FIT_IMAGES, "Training images encoded for the fit.")


def draw_gmm(run: Run, n: int, seed: int, settings: GmmSettings) -> tuple[Image.Image, str | None]:
    """Decoded draws of the mixture fitted to the run's codes (or read from its cache), and a line on the fit."""
    if run.model.conditional:
        raise VaekitError("--sampler gmm fits codes of every class together: use --sampler prior with --label K")
    gmm = fit_aggregate_gmm(run, settings.components, settings.fit_images, seed)
    how = "cached" if gmm.cached else "fitted" + ("" if gmm.converged else " (EM did not converge)")
    return gmm_sample_grid(
        run.model, gmm, n, seed
    ), f"{how}: {gmm.components}-component mixture of {gmm.images} training codes"


SAMPLERS.register(
    Part(
        "gmm",
        "a Gaussian mixture fitted to the training codes (cached)",
        doc="a full-covariance Gaussian mixture fitted by EM to the training codes, cached in the run folder (Ghosh "
        "et al. 2020)",
        impl=Sampler(GmmSettings, draw_gmm),
    )
)
