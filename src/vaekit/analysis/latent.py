"""Paths and pictures in the latent space.

The reparameterization noise is what makes a VAE's latent space continuous: during training every code is decoded
from a whole neighbourhood around its posterior mean, so nearby points decode to similar images and a line between
two codes (or past them) decodes to a meaningful sequence. These functions build such paths and grids; they take
and return latents (N, D) and leave decoding and drawing to the caller.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit.devices import accumulate_dtype

PRIOR_SPAN = 3.0  # traversals and grids reach ±3 prior standard deviations (0.13% and 99.87% quantiles)


def interpolation_weights(steps: int, extend: float = 0.0) -> Tensor:
    """t in [−extend, 1 + extend], `steps` values: t = 0 and t = 1 are the endpoints, the rest extrapolates."""
    return torch.linspace(-extend, 1.0 + extend, steps)


def interpolate(z_a: Tensor, z_b: Tensor, steps: int, extend: float = 0.0, method: str = "linear") -> Tensor:
    """Points along the path from z_a to z_b: (D,) endpoints give (steps, D); (N, D) give (N, steps, D).

    linear: z(t) = (1 − t)·z_a + t·z_b.
    slerp: the great-circle path (Shoemake 1985; White 2016 for generative models) for the direction, with the norm
           interpolated linearly: z(t) = ((1 − t)·|z_a| + t·|z_b|) · (cos(tΩ)·ẑ_a + sin(tΩ)·ê), where Ω is the angle
           between the codes and ê the unit vector in their plane orthogonal to ẑ_a. Under a Gaussian prior most mass
           sits near a shell of radius √D, which a straight line between two codes cuts through; slerp stays nearer it.
    """
    t = interpolation_weights(steps, extend).to(z_a)
    a, b, t = z_a.unsqueeze(-2), z_b.unsqueeze(-2), t.unsqueeze(-1)
    if method == "linear":
        return torch.lerp(a, b, t)
    if method != "slerp":
        raise ValueError(f"unknown interpolation method {method!r}: use linear or slerp")
    return _slerp(a, b, t)


def _slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Great-circle direction times a linearly interpolated norm; the straight line where no great circle is defined.

    The angle is atan2(sin Ω, cos Ω) in float64 (float32 on MPS, which has no float64), sin Ω being the length of
    ẑ_b's component orthogonal to ẑ_a: arccos of a float32 dot product cannot resolve angles within ~5e-4 rad of 0
    or π, and the textbook formula's division by sin Ω then throws nearly opposite codes of unequal norm thousands of
    times too far out. A zero code, or codes (anti)parallel within the rounding of their dtype, leave the plane of
    rotation undefined: the straight line.
    """
    wide = accumulate_dtype(a.device)
    a_w, b_w, t_w, tiny = a.to(wide), b.to(wide), t.to(wide), torch.finfo(wide).tiny
    norm_a, norm_b = a_w.norm(dim=-1, keepdim=True), b_w.norm(dim=-1, keepdim=True)
    u, v = a_w / norm_a.clamp_min(tiny), b_w / norm_b.clamp_min(tiny)
    cos = (u * v).sum(-1, keepdim=True)
    orthogonal = v - cos * u  # (…, 1, D) in the plane of the two codes, length sin Ω
    sin = orthogonal.norm(dim=-1, keepdim=True)
    omega = torch.atan2(sin, cos)
    direction = torch.cos(t_w * omega) * u + torch.sin(t_w * omega) * orthogonal / sin.clamp_min(tiny)
    slerped = torch.lerp(norm_a, norm_b, t_w) * direction
    undefined = (sin < 10 * torch.finfo(a.dtype).eps) | (norm_a == 0) | (norm_b == 0)
    return torch.where(undefined, torch.lerp(a_w, b_w, t_w), slerped).to(a.dtype)


def chain(zs: Tensor, steps_per_segment: int, method: str = "linear") -> Tensor:
    """A path through several codes in order, (M, D) → ((M − 1)·steps_per_segment + 1, D); no point repeats."""
    segments = [interpolate(zs[i], zs[i + 1], steps_per_segment + 1, 0.0, method)[:-1] for i in range(len(zs) - 1)]
    return torch.cat([*segments, zs[-1:]])


def prior_offsets(steps: int, span: float = PRIOR_SPAN) -> Tensor:
    """`steps` values evenly spaced in *probability* between the prior's Φ(−span) and Φ(+span) quantiles, mapped back
    through the inverse normal CDF: dense near 0, where the prior puts its mass, sparse in the tails."""
    low = 0.5 * math.erfc(span / math.sqrt(2))
    offsets: Tensor = torch.special.ndtri(torch.linspace(low, 1 - low, steps, dtype=torch.float64))
    return offsets.float()


def traversal(z: Tensor, dims: list[int], steps: int, span: float = PRIOR_SPAN) -> Tensor:
    """For each d in `dims`, `steps` copies of z with z_d moved by the prior quantile offsets: (len(dims), steps, D)."""
    offsets = prior_offsets(steps, span).to(z)
    grid = z.expand(len(dims), steps, -1).clone()
    for row, d in enumerate(dims):
        grid[row, :, d] += offsets
    return grid


def principal_plane(means: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Centre, the top-2 principal directions (2, D), and the standard deviation along each (2,) of a set of codes."""
    centre = means.mean(0)
    _, singular, directions = torch.linalg.svd(means - centre, full_matrices=False)
    return centre, directions[:2], singular[:2] / math.sqrt(max(1, len(means) - 1))


def plane_grid(centre: Tensor, directions: Tensor, scales: Tensor, n: int, span: float = PRIOR_SPAN) -> Tensor:
    """An n×n grid of codes at prior quantiles along two directions: (n, n, D), rows along the second direction.

    With centre 0, unit axes and scales 1 this is the classic 2-d VAE manifold figure (Kingma & Welling 2014, fig. 4).
    """
    q = prior_offsets(n, span).to(centre)
    u = q.view(1, n, 1) * scales[0] * directions[0]
    v = q.flip(0).view(n, 1, 1) * scales[1] * directions[1]  # top row = largest value, as on a plot
    return centre + u + v


def class_difference(means: Tensor, labels: Tensor, a: int, b: int) -> Tensor:
    """mean posterior code of class a minus that of class b: added to a code of class b, it moves it towards a."""
    if not (labels == a).any() or not (labels == b).any():
        raise ValueError(f"classes {a} and {b} must both occur in the labels")
    return means[labels == a].mean(0) - means[labels == b].mean(0)


def embed_2d(means: Tensor, method: str = "pca", seed: int = 0) -> tuple[Tensor, str]:
    """2-d coordinates of codes for a scatter plot: the codes themselves when D = 2, else PCA or t-SNE."""
    if means.shape[1] == 2:
        return means, "latent dimensions 1 and 2"
    if method == "pca":
        centre, directions, _ = principal_plane(means)
        return (means - centre) @ directions.T, "PCA of the posterior means"
    if method == "tsne":
        from sklearn.manifold import TSNE

        points = TSNE(n_components=2, init="pca", random_state=seed).fit_transform(means.detach().cpu().numpy())
        return torch.from_numpy(points).float().to(means.device), "t-SNE of the posterior means"
    raise ValueError(f"unknown embedding method {method!r}: use pca or tsne")
