"""The report's figures as PNG bytes: one per claim (two for the KL), drawn with matplotlib on the Agg backend."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from vaekit.analysis.plots import _png, _pyplot, image_grid


def curves_figure(histories: dict[str, list[dict[str, Any]]]) -> bytes:
    """Validation (else training) −ELBO of each run against epochs and against training seconds."""
    plt = _pyplot()
    fig, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, history in histories.items():
        split = "val" if all(r.get("val") for r in history) else "train"
        loss = [-r[split]["elbo"] for r in history]
        by_epoch.plot([r["epoch"] for r in history], loss, "-o", ms=3, label=f"{name} ({split})")
        by_time.plot(np.cumsum([r.get("seconds", 0.0) for r in history]), loss, "-o", ms=3, label=name)
    by_epoch.set(xlabel="epoch", ylabel="−ELBO (nats / image)", title="learning curves")
    by_time.set(xlabel="training seconds", title="the same, against time")
    for ax in (by_epoch, by_time):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


def paths_figure(rows: dict[str, Tensor], per_row: int = 3) -> bytes:
    """The first `per_row` decoded paths (M, S + 1, C, H, W) of each sampler, one panel per sampler."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.3 * per_row * len(rows)), squeeze=False)
    for ax, (name, paths) in zip(axes[:, 0], rows.items(), strict=True):
        shown = paths[:per_row]
        ax.imshow(image_grid(shown.flatten(0, 1), columns=shown.shape[1]), cmap="gray")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return _png(fig)


def neighbours_figure(rows: dict[str, Tensor]) -> bytes:
    """Per run, samples (first column) each followed by their nearest training images: a run that memorized shows
    copies."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 4.5), squeeze=False)
    for ax, (name, shown) in zip(axes[0], rows.items(), strict=True):
        ax.imshow(image_grid(shown.flatten(0, 1), columns=shown.shape[1]), cmap="gray")
        ax.set_title(f"{name}: sample | nearest training images", fontsize=9)
        ax.axis("off")
    return _png(fig)


def generalization_figure(rows: dict[str, tuple[float | None, float | None, float]]) -> bytes:
    """Train and test NLL per run, and its nearest-neighbour ratio (train/test distance, features)."""
    plt = _pyplot()
    fig, (nll, audit) = plt.subplots(1, 2, figsize=(9, 3.2))
    names = list(rows)
    x = np.arange(len(names))
    for offset, index, label in ((-0.2, 0, "train"), (0.2, 1, "test")):
        nll.bar(x + offset, [rows[n][index] or 0.0 for n in names], 0.4, label=label)
    nll.set(xticks=x, xticklabels=names, ylabel="NLL (nats / image)", title="train vs test likelihood")
    nll.legend()
    audit.bar(x, [rows[n][2] for n in names], 0.5, color="tab:green")
    audit.axhline(1.0, color="black", lw=0.8, ls="--")
    audit.set(xticks=x, xticklabels=names, ylabel="to train / to test", title="nearest-neighbour audit (features)")
    for ax in (nll, audit):
        ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def sweep_figure(
    betas: list[float], kl: list[float], active: list[int], precision: list[float], recall: list[float]
) -> bytes:
    """Total KL, active units and precision/recall of the samples against β (log scale)."""
    plt = _pyplot()
    fig, (ax_kl, ax_units, ax_quality) = plt.subplots(1, 3, figsize=(10, 3.0))
    ax_kl.plot(betas, kl, "-o")
    ax_kl.set(ylabel="KL (nats / image)", title="KL term")
    ax_units.plot(betas, active, "-o", color="tab:orange")
    ax_units.set(ylabel="active units", title="active units")
    ax_quality.plot(betas, precision, "-o", label="precision")
    ax_quality.plot(betas, recall, "-s", label="recall")
    ax_quality.set(ylabel="share", ylim=(0, 1.05), title="samples")
    ax_quality.legend(fontsize=8)
    for ax in (ax_kl, ax_units, ax_quality):
        ax.set(xscale="log", xlabel="β")
        ax.set_xticks(betas, [f"{beta:g}" for beta in betas], minor=False)
        ax.set_xticks([], minor=True)  # the log axis's minor labels would crowd a three-point sweep
        ax.grid(alpha=0.3)
    return _png(fig)
