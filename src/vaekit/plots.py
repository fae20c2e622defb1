"""Pictures of a run: image grids with Pillow, curves with matplotlib; every file written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaekit.data import to_float
from vaekit.latent import interpolate
from vaekit.model import VAE
from vaekit.runs import atomic_write

MIN_TILE_PX = 56  # small images (8x8 digits) are enlarged so a grid is readable


def image_grid(images: Tensor, columns: int, pad: int = 2) -> Image.Image:
    """Tile (N, C, H, W) images in [0, 1] row by row on a white background."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, channels, height, width = images.shape
    scale = max(1, math.ceil(MIN_TILE_PX / max(height, width)))
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (height + pad) + pad, columns * (width + pad) + pad, channels), dtype=np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (height + pad), pad + (i % columns) * (width + pad)
        canvas[top : top + height, left : left + width] = image.permute(1, 2, 0).numpy()
    pixels = (canvas * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def save_image(picture: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    atomic_write(path, buffer.getvalue())


@torch.no_grad()
def sample_grid(model: VAE, n: int, seed: int) -> Image.Image:
    """Decoded prior samples: the likelihood mean of p(x|z) for z ~ N(0, I)."""
    samples = model.sample(n, generator=torch.Generator().manual_seed(seed))
    return image_grid(samples, columns=math.ceil(math.sqrt(n)))


@torch.no_grad()
def reconstruction_grid(model: VAE, x: Tensor, columns: int = 8) -> Image.Image:
    """Rows of inputs, each followed by a row of their reconstructions (decoded posterior means)."""
    x = to_float(x).to(model.device)
    recon = model.reconstruct(x)
    rows = []
    for start in range(0, len(x), columns):
        rows += [x[start : start + columns], recon[start : start + columns]]
    return image_grid(torch.cat(rows), columns=columns)


@torch.no_grad()
def interpolation_grid(model: VAE, x_a: Tensor, x_b: Tensor, steps: int = 10, extend: float = 0.5) -> Image.Image:
    """One row per pair: input a, the decoded path from a to b (past both ends by `extend`), input b."""
    x_a, x_b = to_float(x_a).to(model.device), to_float(x_b).to(model.device)
    path = interpolate(model.encode(x_a).mean, model.encode(x_b).mean, steps, extend)  # (pairs, steps, D)
    decoded = model.decode(path).mean  # (pairs, steps, C, H, W)
    rows = torch.cat([x_a.unsqueeze(1), decoded, x_b.unsqueeze(1)], dim=1)
    return image_grid(rows.flatten(0, 1), columns=steps + 2)


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


def curves_figure(history: list[dict[str, Any]]) -> bytes:
    """Negative ELBO (train and validation) and KL per epoch, as PNG bytes."""
    plt = _pyplot()

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_kl) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split, style in (("train", "-o"), ("val", "--s")):
        rows = [r for r in history if r.get(split)]
        ax_loss.plot([r["epoch"] for r in rows], [-r[split]["elbo"] for r in rows], style, label=split, ms=3)
        ax_kl.plot([r["epoch"] for r in rows], [r[split]["kl"] for r in rows], style, label=split, ms=3)
    ax_loss.set(xlabel="epoch", ylabel="negative ELBO (nats / image)", title="loss")
    ax_kl.set(xlabel="epoch", ylabel="KL(q(z|x) ‖ p(z)) (nats)", title="KL term")
    for ax in (ax_loss, ax_kl):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
    return _png(fig)


def kl_per_dim_figure(kl_per_dim: list[float], activity: list[float], threshold: float) -> bytes:
    """KL per latent dimension, largest first, next to each dimension's activity Cov_x(E_q[z_d])."""
    plt = _pyplot()
    order = sorted(range(len(kl_per_dim)), key=lambda d: -kl_per_dim[d])
    active = ["tab:blue" if activity[d] > threshold else "tab:gray" for d in order]
    labels = [str(d) for d in order]
    fig, (ax_kl, ax_act) = plt.subplots(1, 2, figsize=(10, 3.4))
    ax_kl.bar(labels, [kl_per_dim[d] for d in order], color=active)
    ax_kl.set(xlabel="latent dimension (by KL)", ylabel="mean KL (nats)", title="KL(q(z_d|x) ‖ N(0, 1)) per dimension")
    ax_act.bar(labels, [max(activity[d], 1e-6) for d in order], color=active)
    ax_act.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"active if > {threshold:g}")
    ax_act.set(yscale="log", xlabel="latent dimension (by KL)", ylabel="Cov_x(E_q[z_d])", title="activity")
    ax_act.legend()
    for ax in (ax_kl, ax_act):
        ax.tick_params(axis="x", labelsize=7)
    return _png(fig)


def write_run_pictures(run_dir: Path, model: VAE, test_x: Tensor, history: list[dict[str, Any]], seed: int) -> None:
    model.eval()
    save_image(sample_grid(model, 64, seed), run_dir / "samples.png")
    save_image(reconstruction_grid(model, test_x[:32]), run_dir / "reconstructions.png")
    pairs = min(4, len(test_x) // 2)
    save_image(interpolation_grid(model, test_x[:pairs], test_x[pairs : 2 * pairs]), run_dir / "interpolation.png")
    atomic_write(run_dir / "curves.png", curves_figure(history))
