"""The measures `vaekit why` adds to the existing ones: length and realism of paths between prior samples, the prior's
holes, and an MMD between a model's codes and N(0, I).

Everything is measured in the evaluation classifier's feature space (`vaekit.analysis.classifier`), the yardstick the
rest of vaekit already uses for sample quality, so "realistic" means the same thing in every section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vaekit.analysis.classifier import FeatureSpace
from vaekit.analysis.latent import _slerp, interpolate
from vaekit.analysis.sample_quality import inside_manifold, precision_recall
from vaekit.model.vae import VAE

PPL_EPSILON = 1e-4  # StyleGAN's ε: the path length is a derivative, taken over a tiny step
OUTLIER_QUANTILES = (0.01, 0.99)  # StyleGAN drops what lies outside the 1st to 99th percentiles before averaging
MAX_MMD_POINTS = 2000  # per side: the kernel matrices grow with the square of the points
Sampler = Callable[[int, torch.Generator], Tensor]  # n codes (n, D) drawn with a seeded CPU generator


@dataclass
class PathRealism:
    sampler: str  # where the path endpoints come from, in words
    ppl: float  # perceptual path length in classifier features, outliers dropped
    confidence: float  # mean top-class probability of the classifier over every point of every path
    off_manifold: float  # share of the paths' inner points (endpoints excluded) outside every real image's k-NN ball
    prior_holes: float  # share of fresh sampler draws whose decoded image lies off the manifold
    paths: int
    steps: int
    off_by_t: list[float] = field(default_factory=list)  # the share off the manifold at each t = 0, 1/S, …, 1
    off_by_path: list[float] = field(default_factory=list)  # each path's share of inner points off it: the units


def trimmed_mean(values: Tensor) -> float:
    """The mean of the values between the 1st and 99th percentiles, inclusive."""
    low, high = (float(values.quantile(q)) for q in OUTLIER_QUANTILES)
    return float(values[(values >= low) & (values <= high)].mean())


@torch.no_grad()
def perceptual_path_length(
    model: VAE, space: FeatureSpace, z_a: Tensor, z_b: Tensor, generator: torch.Generator
) -> float:
    """E_t[‖f(g(slerp(z_a, z_b; t))) − f(g(slerp(z_a, z_b; t + ε)))‖² / ε²], t ~ U(0, 1 − ε) (Karras et al. 2019,
    sec. 3.2), with the classifier's features f in place of VGG's and g the decoder's mean; one t per pair."""
    t = (torch.rand(len(z_a), 1, generator=generator, dtype=torch.float64) * (1 - PPL_EPSILON)).to(z_a)
    a, b = z_a.to(t), z_b.to(t)
    features = [space.embed(model.decode(_slerp(a, b, s).float().to(model.device)).mean) for s in (t, t + PPL_EPSILON)]
    lengths = (features[1] - features[0]).double().pow(2).sum(1) / PPL_EPSILON**2
    return trimmed_mean(lengths.cpu())


@torch.no_grad()
def path_realism(
    model: VAE,
    space: FeatureSpace,
    sampler: Sampler,
    name: str,
    real: Tensor,
    paths: int = 200,
    steps: int = 16,
    holes: int = 1000,
    seed: int = 0,
) -> tuple[PathRealism, Tensor]:
    """Decode slerp paths between pairs of sampler draws and score every point against the real images' features
    `real` (k-NN balls, Kynkäänniemi et al. 2019); returns the scores and the decoded paths (M, S + 1, C, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    z_a, z_b = sampler(paths, generator).cpu(), sampler(paths, generator).cpu()
    latent = interpolate(z_a, z_b, steps + 1, 0.0, "slerp")  # (M, S + 1, D)
    images = model.decode(latent.to(model.device)).mean  # (M, S + 1, C, H, W)
    features = space.embed(images.flatten(0, 1))
    confidence = float(space.model.head(features).softmax(-1).max(-1).values.mean())
    off = (~inside_manifold(features, real)).double().reshape(paths, steps + 1)  # (M, S + 1)
    inner = off[:, 1:-1]  # the endpoints are sampler draws, which the holes below already score
    ppl = perceptual_path_length(model, space, z_a, z_b, generator)
    draws = space.embed(model.decode(sampler(holes, generator).to(model.device)).mean)
    holes_share = 1.0 - precision_recall(real, draws)[0]
    measured = PathRealism(
        name, ppl, confidence, float(inner.mean()), holes_share, paths, steps,
        off_by_t=off.mean(0).tolist(), off_by_path=inner.mean(1).tolist(),
    )  # fmt: skip
    return measured, images.cpu()


def held_out_off_manifold(real: Tensor, held_out: Tensor) -> float:
    """The share of real images outside the manifold of other real images: what the off-manifold measure reads
    for data itself, the floor a model's paths are judged against."""
    return float((~inside_manifold(held_out, real)).double().mean())


def kernels(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The Gaussian kernel exp(−‖a − b‖² / 2h²) within x, within y and between them (float64, CPU), h the median
    distance between distinct points of the pooled sample (the median heuristic); at most MAX_MMD_POINTS a side."""
    x, y = x[:MAX_MMD_POINTS].double().cpu(), y[:MAX_MMD_POINTS].double().cpu()
    pooled = torch.cat([x.flatten(1), y.flatten(1)])
    squared = torch.cdist(pooled, pooled).pow(2)
    n, m = len(x), len(y)
    off_diagonal = ~torch.eye(n + m, dtype=torch.bool)
    bandwidth = squared[off_diagonal].sqrt().median().clamp_min(1e-12)
    kernel = torch.exp(-squared / (2 * bandwidth**2))
    return kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]


def mmd(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD² (Gretton et al. 2012) with the Gaussian kernel of `kernels`: about 0 when x and y share a law."""
    k_xx, k_yy, k_xy = kernels(x, y)
    n, m = len(k_xx), len(k_yy)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


def resampled_mmd(x: Tensor, y: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """MMD² between x and y as a statistic of resampling counts (B, n) and (B, m): the V-statistic of each resample
    (the resampled points, repeats included), with the bandwidth of the full sample. All ones give the plain
    V-statistic."""
    k_xx, k_yy, k_xy = kernels(x, y)

    def statistic(wx: Tensor, wy: Tensor) -> Tensor:
        nx, ny = wx.sum(1), wy.sum(1)
        within_x = ((wx @ k_xx) * wx).sum(1) / nx**2
        within_y = ((wy @ k_yy) * wy).sum(1) / ny**2
        return within_x + within_y - 2 * ((wx @ k_xy) * wy).sum(1) / (nx * ny)

    return statistic


def whitened(codes: Tensor, fitted_on: Tensor) -> Tensor:
    """`codes` mapped by the affine map that gives `fitted_on` mean 0 and identity covariance (Cholesky whitening).
    Fitted on other codes (the training images'), it is a control given the prior's first two moments the way a
    model would be, not by construction on the very codes it is judged on."""
    reference = fitted_on.double()
    mean = reference.mean(0)
    centred = reference - mean
    covariance = centred.T @ centred / (len(reference) - 1) + 1e-9 * torch.eye(reference.shape[1], dtype=torch.float64)
    factor = torch.linalg.cholesky(covariance)
    white: Tensor = torch.linalg.solve_triangular(factor, (codes.double() - mean).T, upper=False).T
    return white.float()
