"""How smooth is the latent space? Measured along interpolation paths between test images.

Along each path the decoded image changes step by step. An even transition changes by about the same amount at
every step (max/mean ≈ 1); a latent space with holes or cliffs shows one large jump (max/mean ≫ 1), and interpolants
that look like neither endpoint. The same measurement on a plain autoencoder (`vaekit train --model ae`) shows what
the VAE's sampling noise and KL buy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.analysis.classifier import FeatureSpace
from vaekit.analysis.latent import interpolate
from vaekit.data.scoring import Scoring
from vaekit.data.sources import Split
from vaekit.devices import generator_on
from vaekit.model.vae import VAE


@dataclass
class PathStats:
    space: str  # "pixels" or "classifier features"
    mean_step: float  # mean Euclidean change between consecutive decoded images, over all steps of all paths
    p95_max_step: float  # 95th percentile over paths of the largest step on the path
    mean_max_over_mean: float  # per path: largest step / mean step (1 = perfectly even), averaged over paths
    p95_max_over_mean: float


@dataclass
class SmoothnessReport:
    paths: int
    steps: int
    method: str
    stats: list[PathStats]
    off_manifold: float | None  # fraction of interior points classified as neither endpoint's class


def path_stats(points: Tensor, space: str) -> PathStats:
    """Step statistics for paths of decoded points, (M, S + 1, ...) → S steps per path."""
    steps = (points[:, 1:] - points[:, :-1]).flatten(2).norm(dim=-1)  # (M, S)
    ratio = steps.max(1).values / steps.mean(1).clamp_min(1e-12)
    return PathStats(
        space=space,
        mean_step=float(steps.mean()),
        p95_max_step=float(steps.max(1).values.quantile(0.95)),
        mean_max_over_mean=float(ratio.mean()),
        p95_max_over_mean=float(ratio.quantile(0.95)),
    )


@torch.no_grad()
def smoothness(
    model: VAE,
    test: Split,
    space: FeatureSpace | None = None,
    paths: int = 200,
    steps: int = 16,
    seed: int = 0,
    method: str = "linear",
) -> SmoothnessReport:
    """Decode `paths` interpolations of `steps` steps between random pairs of test images' posterior means; the
    encoder sees the images as the run scores them (`vaekit.data.scoring`). The pairs are chosen on the CPU, where the
    test split is; everything after runs on the model's device, the classifier's features on the classifier's."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(len(test), (paths,), generator=g)
    b = (a + 1 + torch.randint(len(test) - 1, (paths,), generator=g)) % len(test)  # never a path from x to itself
    device = model.device
    scoring, draw = Scoring.of(model.config), generator_on(device, seed)
    z_a, z_b = (model.encode(scoring.input(test.x[ends].to(device), draw)).mean for ends in (a, b))
    latent_paths = interpolate(z_a, z_b, steps + 1, 0.0, method)  # (M, S + 1, D)
    images = model.decode(latent_paths).mean  # (M, S + 1, C, H, W)
    stats = [path_stats(images, "pixels")]
    off_manifold = None
    if space is not None and test.y is not None:
        features = space.embed(images.flatten(0, 1)).view(paths, steps + 1, -1)
        stats.append(path_stats(features, "classifier features"))
        predicted = space.model.head(features[:, 1:-1])  # interior points only
        classes = predicted.argmax(-1)
        y_a, y_b = (test.y[ends].to(classes.device).unsqueeze(1) for ends in (a, b))
        neither = (classes != y_a) & (classes != y_b)
        off_manifold = float(neither.float().mean())
    return SmoothnessReport(paths, steps, method, stats, off_manifold)
