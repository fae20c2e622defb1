"""Pictures of a run: image grids with Pillow, curves with matplotlib; every file written atomically.

The model runs on its own device (inputs move there); decoded images come back to the CPU only to be drawn."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vaekit.analysis.latent import chain, class_difference, interpolate, plane_grid, principal_plane, traversal
from vaekit.data.sources import Split, to_float
from vaekit.errors import VaekitError
from vaekit.files import atomic_write
from vaekit.model.vae import VAE

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
def sample_grid(model: VAE, n: int, seed: int, label: int | None = None) -> Image.Image:
    """Decoded prior samples: the likelihood mean of p(x|z) for z ~ p(z). A conditional model decodes p(x|z, y):
    all of class `label`, or without one a row per class, ⌈n / classes⌉ samples each."""
    generator = torch.Generator().manual_seed(seed)
    if label is not None:
        check_label(model, label)
        return image_grid(model.sample(n, generator, torch.full((n,), label)), columns=math.ceil(math.sqrt(n)))
    if not model.conditional:
        return image_grid(model.sample(n, generator), columns=math.ceil(math.sqrt(n)))
    columns = math.ceil(n / model.classes)
    labels = torch.arange(model.classes).repeat_interleave(columns)  # (classes · columns,)
    return image_grid(model.sample(len(labels), generator, labels), columns=columns)


def check_label(model: VAE, label: int) -> None:
    """A class to draw must be one the model was conditioned on."""
    if not model.conditional:
        raise VaekitError("--label needs a conditional run: train one with --condition label, or drop --label")
    if not 0 <= label < model.classes:
        raise VaekitError(f"--label {label} is out of range: this run knows classes 0 to {model.classes - 1}")


@torch.no_grad()
def reconstruction_grid(model: VAE, x: Tensor, columns: int = 8, y: Tensor | None = None) -> Image.Image:
    """Rows of inputs, each followed by a row of their reconstructions (decoded posterior means; given the labels
    `y`, for a conditional model)."""
    x = to_float(x).to(model.device)
    recon = model.reconstruct(x, y)
    rows = []
    for start in range(0, len(x), columns):
        rows += [x[start : start + columns], recon[start : start + columns]]
    return image_grid(torch.cat(rows), columns=columns)


@torch.no_grad()
def interpolation_frames(
    model: VAE, x_a: Tensor, x_b: Tensor, steps: int = 10, extend: float = 0.5, method: str = "linear"
) -> Tensor:
    """Decoded path between the posterior means of paired inputs, (pairs, steps, C, H, W)."""
    x_a, x_b = to_float(x_a).to(model.device), to_float(x_b).to(model.device)
    path = interpolate(model.encode(x_a).mean, model.encode(x_b).mean, steps, extend, method)  # (pairs, steps, D)
    return model.decode(path).mean


def interpolation_grid(
    model: VAE, x_a: Tensor, x_b: Tensor, steps: int = 10, extend: float = 0.5, method: str = "linear"
) -> Image.Image:
    """One row per pair: input a, the decoded path from a to b (past both ends by `extend`), input b."""
    decoded = interpolation_frames(model, x_a, x_b, steps, extend, method)
    x_a, x_b = to_float(x_a).to(decoded.device), to_float(x_b).to(decoded.device)
    rows = torch.cat([x_a.unsqueeze(1), decoded, x_b.unsqueeze(1)], dim=1)
    return image_grid(rows.flatten(0, 1), columns=steps + 2)


@torch.no_grad()
def chain_frames(model: VAE, x: Tensor, steps_per_segment: int, method: str = "linear") -> Tensor:
    """Decoded path through the posterior means of several inputs in order, (points, C, H, W)."""
    codes = model.encode(to_float(x).to(model.device)).mean
    return model.decode(chain(codes, steps_per_segment, method)).mean


@torch.no_grad()
def traversal_grid(model: VAE, x: Tensor, dims: list[int], steps: int = 11) -> Image.Image:
    """One row per dimension in `dims`: that coordinate of x's posterior mean moved over ±3 prior σ, others fixed."""
    z = model.encode(to_float(x[:1]).to(model.device)).mean[0]
    return image_grid(model.decode(traversal(z, dims, steps)).mean.flatten(0, 1), columns=steps)


@torch.no_grad()
def manifold_grid(model: VAE, x: Tensor, n: int = 15) -> Image.Image:
    """Decoded n×n grid at prior quantiles: over the two latent axes when D = 2 (the classic figure), else over the
    top-2 principal directions of the posterior means of `x`, scaled by their spread."""
    if model.latent_dim == 2:
        centre, directions, scales = torch.zeros(2), torch.eye(2), torch.ones(2)
    else:
        centre, directions, scales = principal_plane(model.encode(to_float(x).to(model.device)).mean.cpu())
    grid = plane_grid(centre, directions, scales, n).to(model.device)
    return image_grid(model.decode(grid).mean.flatten(0, 1), columns=n)


@torch.no_grad()
def arithmetic_grid(model: VAE, x: Tensor, labels: Tensor, source: int, target: int, n: int = 8) -> Image.Image:
    """Rows: inputs of class `source`, their reconstructions, and the same codes plus mean(target) − mean(source)."""
    means = model.encode(to_float(x).to(model.device)).mean
    shift = class_difference(means.cpu(), labels, target, source).to(means)
    chosen = (labels == source).nonzero().flatten()[:n]
    inputs, codes = to_float(x[chosen]).to(means.device), means[chosen.to(means.device)]
    rows = [inputs, model.decode(codes).mean, model.decode(codes + shift).mean]
    return image_grid(torch.cat(rows), columns=len(chosen))


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


def curves_figure(history: list[dict[str, Any]], selected: int | None = None) -> bytes:
    """Negative ELBO (train and validation) and KL per epoch, as PNG bytes; a dotted line marks the `selected` epoch,
    whose weights the run keeps, where that is not the last."""
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
        if selected is not None and selected != len(history):
            ax.axvline(selected, color="tab:gray", ls=":", lw=1, label=f"weights kept: epoch {selected}")
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


def write_run_pictures(
    run_dir: Path, model: VAE, test: Split, history: list[dict[str, Any]], seed: int, selected: int | None = None
) -> None:
    """samples.png, reconstructions.png, interpolation.png and curves.png, of `model` (the weights of epoch
    `selected`, which curves.png marks). A conditional model has no interpolation.png: the two ends of a path carry
    different labels, and the decoder reads one."""
    model.eval()
    test_x, test_y = test.x, test.y
    save_image(sample_grid(model, 64, seed), run_dir / "samples.png")
    y = None if test_y is None else test_y[:32]
    save_image(reconstruction_grid(model, test_x[:32], y=y), run_dir / "reconstructions.png")
    pairs = min(4, len(test_x) // 2)
    if not model.conditional:
        pictures = interpolation_grid(model, test_x[:pairs], test_x[pairs : 2 * pairs])
        save_image(pictures, run_dir / "interpolation.png")
    atomic_write(run_dir / "curves.png", curves_figure(history, selected))


def save_gif(frames: Tensor, path: Path, frame_ms: int = 120) -> None:
    """An animated GIF (looping, there and back) of (N, C, H, W) frames in [0, 1]."""
    pictures = [image_grid(frame.unsqueeze(0), columns=1, pad=0) for frame in frames]
    sequence = pictures + pictures[-2:0:-1]
    buffer = io.BytesIO()
    sequence[0].save(buffer, format="GIF", save_all=True, append_images=sequence[1:], duration=frame_ms, loop=0)
    atomic_write(path, buffer.getvalue())


def embedding_figure(points: Tensor, labels: Tensor | None, title: str, class_names: list[str] | None = None) -> bytes:
    """2-d scatter of posterior means, coloured by label where there are labels."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    xy = points.detach().cpu().numpy()
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.6)
    else:
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=labels.cpu().numpy(), cmap="tab10", s=3, alpha=0.7)
        handles, names = scatter.legend_elements()
        ax.legend(handles, class_names or names, title="label", fontsize=7, markerscale=0.8, loc="best")
    ax.set(title=title, xlabel="component 1", ylabel="component 2")
    ax.grid(alpha=0.3)
    return _png(fig)


def gradient_variance_figure(stats: list[Any], estimators: tuple[str, ...]) -> bytes:
    """Total gradient variance per encoder parameter tensor, one bar per estimator, on a log scale."""
    plt = _pyplot()
    names = [s.parameter for s in stats if s.estimator == estimators[0]]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(names)), 3.8))
    width = 0.8 / len(estimators)
    for i, estimator in enumerate(estimators):
        values = {s.parameter: s.variance for s in stats if s.estimator == estimator}
        ax.bar(
            [j + i * width for j in range(len(names))], [max(values[n], 1e-12) for n in names], width, label=estimator
        )
    ax.set_xticks([j + width * (len(estimators) - 1) / 2 for j in range(len(names))], names, fontsize=8)
    ax.set(yscale="log", ylabel="trace of gradient covariance", title="Variance of the encoder gradient, per tensor")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _png(fig)


def separation_figure(
    scores: dict[str, tuple[np.ndarray, np.ndarray]], aurocs: dict[str, float], inside: str, outside: str
) -> bytes:
    """For each score (higher: more unlike the run's data), the histograms of its values on the in- and the
    out-of-distribution images; and every score's ROC curve, the out-of-distribution images the positives."""
    from sklearn.metrics import roc_curve

    plt = _pyplot()
    names = list(scores)
    columns = min(4, len(names) + 1)
    rows = math.ceil((len(names) + 1) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.7 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, name in zip(flat, names, strict=False):
        values_in, values_out = scores[name]
        finite = np.concatenate([values_in, values_out])
        low, high = np.percentile(finite, [0.5, 99.5])
        edges = np.linspace(low, high if high > low else low + 1, 50)
        ax.hist(values_in, edges, alpha=0.6, density=True, label=inside, color="tab:blue")
        ax.hist(values_out, edges, alpha=0.6, density=True, label=outside, color="tab:orange")
        ax.set_title(f"{name}  (AUROC {aurocs[name]:.3f})", fontsize=9)
        ax.tick_params(labelsize=7)
    flat[0].legend(fontsize=7)
    roc = flat[len(names)]
    for name in names:
        values_in, values_out = scores[name]
        truth = np.concatenate([np.zeros(len(values_in)), np.ones(len(values_out))])
        fpr, tpr, _ = roc_curve(truth, np.concatenate([values_in, values_out]))
        roc.plot(fpr, tpr, label=name, lw=1)
    roc.plot([0, 1], [0, 1], color="tab:gray", ls=":", lw=1)
    roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC")
    roc.legend(fontsize=6)
    for ax in flat[len(names) + 1 :]:
        ax.axis("off")
    return _png(fig)
