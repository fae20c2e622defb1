"""Distances between sets of images or features: nearest neighbours, Fréchet distance, precision and recall.

All pairwise work is chunked so memory stays bounded (chunk × reference-set size floats) for any set size, and runs
on the device its inputs are on, in float64 where the device has it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from vaekit.devices import accumulate_dtype

CHUNK = 1024


def squared_distance_blocks(queries: Tensor, references: Tensor) -> Iterator[Tensor]:
    """‖q − r‖² for every query and reference, CHUNK queries at a time: (≤ CHUNK, R) blocks, rows flattened."""
    wide = accumulate_dtype(queries.device)
    q, r = queries.flatten(1).to(wide), references.flatten(1).to(wide)
    r_sq = (r**2).sum(1)
    for start in range(0, len(q), CHUNK):
        block = q[start : start + CHUNK]
        yield ((block**2).sum(1, keepdim=True) + r_sq - 2 * block @ r.T).clamp_min(0)  # ‖a‖² + ‖b‖² − 2a·b


def nearest(queries: Tensor, references: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
    """Euclidean distances and indices of each query's k nearest references: (Q, k) each. Rows are flattened."""
    dists, idxs = [], []
    for squared in squared_distance_blocks(queries, references):
        d, i = squared.topk(k, dim=1, largest=False)
        dists.append(d.sqrt())
        idxs.append(i)
    return torch.cat(dists).float(), torch.cat(idxs)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """‖μa − μb‖² + Tr(Σa + Σb − 2(Σa Σb)^½) between Gaussians fitted to two feature sets (Heusel et al. 2017).

    Tr((Σa Σb)^½) is computed as Σ √λ of the symmetric PSD matrix Σa^½ Σb Σa^½, which has the same eigenvalues and
    avoids the non-symmetric matrix square root.
    """
    x, y = a.detach().cpu().double().numpy(), b.detach().cpu().double().numpy()
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    evals, evecs = np.linalg.eigh(cov_x)
    root_x = (evecs * np.sqrt(evals.clip(min=0))) @ evecs.T
    cross = np.linalg.eigvalsh(root_x @ cov_y @ root_x).clip(min=0)
    return float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2 * np.sqrt(cross).sum())


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Each set's manifold is the union of balls around its points, of radius the distance to the k-th nearest
    neighbour within the set. Precision: the fraction of fake points inside the real manifold (are samples
    realistic?); recall: the fraction of real points inside the fake manifold (is the data covered?).
    """
    return _coverage(fake, real, k), _coverage(real, fake, k)


def _coverage(points: Tensor, manifold: Tensor, k: int) -> float:
    return float(inside_manifold(points, manifold, k).double().mean())


def inside_manifold(points: Tensor, manifold: Tensor, k: int = 3) -> Tensor:
    """For each of `points`, whether it lies in the union of balls around the `manifold` points, each of radius the
    distance to its k-th nearest neighbour within the manifold: (n,) booleans on the CPU."""
    radii = nearest(manifold, manifold, k + 1)[0][:, k]  # k+1: each point is its own nearest neighbour
    radii = radii.to(accumulate_dtype(manifold.device))
    blocks = [(squared.sqrt() <= radii).any(1).cpu() for squared in squared_distance_blocks(points, manifold)]
    return torch.cat(blocks) if blocks else torch.zeros(0, dtype=torch.bool)


def inception_fid(real: Tensor, fake: Tensor) -> tuple[float | None, str]:
    """FID with Inception features through torch-fidelity, where it and its weights can be had; else one line why."""
    try:
        import torch_fidelity  # type: ignore[import-not-found]
    except ImportError:
        return None, "Inception FID skipped: install the optional extra (pip install 'vaekit[fid]') to compute it"

    def as_rgb_uint8(x: Tensor) -> Tensor:
        x = (x.float() * 255).round().clamp(0, 255).to(torch.uint8) if x.dtype != torch.uint8 else x
        x = x.cpu()  # torch-fidelity reads the images from a CPU dataset
        return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x

    try:
        metrics = torch_fidelity.calculate_metrics(
            input1=_TensorImages(as_rgb_uint8(fake)), input2=_TensorImages(as_rgb_uint8(real)), fid=True, verbose=False
        )
    except Exception as error:  # most often: the Inception weights cannot be downloaded on this machine
        return None, f"Inception FID skipped: torch-fidelity could not run ({str(error).splitlines()[0][:100]})"
    return float(metrics["frechet_inception_distance"]), "Inception FID via torch-fidelity"


class _TensorImages(torch.utils.data.Dataset[Tensor]):
    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]
