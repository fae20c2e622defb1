"""Claim 3: generalization, not memorization. Train and test NLL and the nearest-neighbour audit (`vaekit.analysis.
evaluate`) for the VAE and for the same VAE trained long on a few hundred images, the memorizing control."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from vaekit.analysis.evaluate import likelihood_report, neighbour_audit
from vaekit.analysis.sample_quality import nearest
from vaekit.analysis.why import figures, verdicts
from vaekit.analysis.why.base import Context, Section, Table, fmt, missing, subset
from vaekit.analysis.why.runs import MEMORIZE, VAE
from vaekit.data.sources import load_dataset, to_float
from vaekit.training.runs import Run

SHOWN, NEIGHBOURS = 6, 3  # samples in the neighbours figure, and training images beside each


def generalization(ctx: Context) -> Section:
    section = Section.start("generalization")
    measured, neighbours = {}, {}
    measured[VAE], neighbours[VAE] = _generalization(ctx, ctx.vae)
    if MEMORIZE in ctx.runs:
        measured[MEMORIZE], neighbours[MEMORIZE] = _generalization(ctx, ctx.runs[MEMORIZE])
    else:
        section.missing.append(missing(MEMORIZE, "nothing shows what memorization looks like"))
    section.tables.append(
        Table(
            f"NLL (importance-weighted bound, k = {ctx.settings.k}); neighbour audit of {ctx.settings.samples} samples",
            ["run", "train NLL", "test NLL", "gap", "audit ratio (features)", "audit ratio (pixels)"],
            [
                [
                    role,
                    fmt(m["train_nll"]),
                    fmt(m["test_nll"]),
                    fmt(m["gap"]),
                    f"{m['ratio']:.3f}",
                    f"{m['ratio_pixels']:.3f}",
                ]
                for role, m in measured.items()
            ],
        )
    )
    vae, control = measured[VAE], measured.get(MEMORIZE)
    section.headline = f"{vae['gap']:.2f} nats"
    section.confirmed, section.verdict = verdicts.generalization_verdict(
        (vae["gap"], vae["ratio"]), None if control is None else (control["gap"], control["ratio"])
    )
    bars = {role: (m["train_nll"], m["test_nll"], m["ratio"]) for role, m in measured.items()}
    section.figures.append(
        (
            "train and test NLL, and the nearest-neighbour audit, for the VAE and the memorizing control",
            figures.generalization_figure(bars),
        )
    )
    section.figures.append(
        ("samples and their nearest training images (pixels), for the VAE and the memorizing control",
         figures.neighbours_figure(neighbours))
    )  # fmt: skip
    section.numbers = measured
    return section


def _generalization(ctx: Context, run: Run) -> tuple[dict[str, Any], Tensor]:
    """NLL on train and test images and the neighbour audit (features and pixels), for one run; and a few samples,
    each followed by its nearest training images, (rows, 1 + NEIGHBOURS, C, H, W)."""
    s, model = ctx.settings, run.model
    data = load_dataset(run.config.data)
    grey = load_dataset(dataclasses.replace(run.config.data, binarize="none"))
    test_x = data.test.x[: s.images]
    train_x = subset(data.train, len(test_x)).x
    test = likelihood_report(model, test_x, "test", s.k, s.seed, run.config.data)
    train = likelihood_report(model, train_x, "train", s.k, s.seed, run.config.data)
    size = min(len(grey.train), len(grey.test), s.images)
    train_ref, test_ref = subset(grey.train, size).x, grey.test.x[:size]
    samples = model.sample(s.samples, generator=torch.Generator().manual_seed(s.seed))
    features = neighbour_audit(
        ctx.space.embed(samples), ctx.space.embed(train_ref), ctx.space.embed(test_ref), "classifier features"
    )
    pixels = neighbour_audit(samples, to_float(train_ref), to_float(test_ref), "pixels")
    gap = None if test.nll is None or train.nll is None else test.nll - train.nll
    shown, references = samples[:SHOWN].cpu(), to_float(train_ref)
    index = nearest(shown, references, k=NEIGHBOURS)[1]
    closest = torch.cat([shown.unsqueeze(1), references[index]], dim=1)
    return {
        "train_nll": train.nll, "test_nll": test.nll, "gap": gap, "ratio": features.ratio, "ratio_pixels": pixels.ratio,
        "train": dataclasses.asdict(train), "test": dataclasses.asdict(test),
        "audits": [dataclasses.asdict(features), dataclasses.asdict(pixels)], "reference_images": size,
    }, closest  # fmt: skip
