"""Claim 3: generalization, not memorization. Train and test NLL, image by image, and the copying audit against the
whole training set (`vaekit.analysis.copying`) for the VAE and for the same VAE trained long on a few hundred images,
the memorizing control (it calibrates the audit: it shows what copying looks like)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vaekit.analysis.copying import copying_audit
from vaekit.analysis.evaluate import likelihood_scores
from vaekit.analysis.intervals import bootstrap, weighted_mean
from vaekit.analysis.sample_quality import nearest
from vaekit.analysis.why import figures, verdicts
from vaekit.analysis.why.base import Context, Section, Table, fmt, missing, subset
from vaekit.analysis.why.evidence import Evidence
from vaekit.analysis.why.runs import MEMORIZE, VAE
from vaekit.data.sources import load_dataset, to_float
from vaekit.training.runs import Run

SHOWN, NEIGHBOURS = 6, 3  # samples in the neighbours figure, and training images beside each


def generalization(ctx: Context) -> Section:
    section = Section.start("generalization")
    measured, neighbours, per_image = {}, {}, {}
    measured[VAE], neighbours[VAE], per_image[VAE] = _generalization(ctx, ctx.vae)
    if MEMORIZE in ctx.runs:
        measured[MEMORIZE], neighbours[MEMORIZE], per_image[MEMORIZE] = _generalization(ctx, ctx.runs[MEMORIZE])
    else:
        section.missing.append(missing(MEMORIZE, "nothing shows what memorization looks like"))
    section.tables.append(
        Table(
            f"NLL (importance-weighted bound, k = {ctx.settings.k}); copying audit of {ctx.settings.samples} samples "
            "against the whole training set: how often a sample is farther from it than a held-out image (50% like "
            "unseen images, well below: copies)",
            ["run", "train NLL", "test NLL", "gap", "farther (features)", "farther (pixels)"],
            [
                [
                    role,
                    fmt(m["train_nll"]),
                    fmt(m["test_nll"]),
                    fmt(m["gap"]),
                    _share(m["audits"][0]),
                    _share(m["audits"][1]),
                ]
                for role, m in measured.items()
            ],
        )
    )
    vae = measured[VAE]
    section.headline = f"{vae['gap']:.2f} nats"
    vae_images, control_images = per_image[VAE], per_image.get(MEMORIZE)
    if vae_images is not None and control_images is not None:
        groups = [*vae_images, *control_images]  # VAE train, VAE test, control train, control test
        section.evidence = Evidence(
            "the memorizing control's test − train NLL gap minus the VAE's, in nats",
            measured[MEMORIZE]["gap"] - vae["gap"],
            bootstrap(_gap_difference(*groups), groups, seed=ctx.settings.seed),
            null=0.0, side="above", n=min(len(g) for g in groups), unit="images per split and run",
        )  # fmt: skip
        section.confirmed = section.evidence.confirmed
    audit = vae["audits"][0]
    section.verdict = verdicts.generalization_verdict(
        section.evidence, vae["gap"], (audit["farther"], *audit["farther_interval"])
    )
    bars = {role: (m["train_nll"], m["test_nll"], m["audits"][0]["ratio"]) for role, m in measured.items()}
    section.figures.append(
        (
            "train and test NLL, and the copying audit's distance ratio, for the VAE and the memorizing control",
            figures.generalization_figure(bars),
        )
    )
    section.figures.append(
        ("samples and their nearest training images (pixels), for the VAE and the memorizing control",
         figures.neighbours_figure(neighbours))
    )  # fmt: skip
    section.numbers = measured
    return section


def _share(audit: dict[str, Any]) -> str:
    low, high = audit["farther_interval"]
    return f"{audit['farther']:.0%} ({low:.0%}–{high:.0%})"


def _gap_difference(vae_train: Tensor, vae_test: Tensor, ctl_train: Tensor, ctl_test: Tensor) -> Callable[..., Tensor]:
    """The resampled statistic: (control test − train mean NLL) − (VAE test − train mean NLL)."""

    def statistic(w1: Tensor, w2: Tensor, w3: Tensor, w4: Tensor) -> Tensor:
        control = weighted_mean(w4, ctl_test) - weighted_mean(w3, ctl_train)
        return control - (weighted_mean(w2, vae_test) - weighted_mean(w1, vae_train))

    return statistic


def _generalization(ctx: Context, run: Run) -> tuple[dict[str, Any], Tensor, tuple[Tensor, Tensor] | None]:
    """NLL on train and test images and the copying audit (features and pixels) for one run; a few samples, each
    followed by its nearest training images, (rows, 1 + NEIGHBOURS, C, H, W); and each image's NLL, (train, test)."""
    s, model = ctx.settings, run.model
    data = load_dataset(run.config.data)
    grey = load_dataset(dataclasses.replace(run.config.data, binarize="none"))
    test_x = data.test.x[: s.images]
    train_x = subset(data.train, len(test_x)).x
    test, test_nll = likelihood_scores(model, test_x, "test", s.k, s.seed, run.config.data)
    train, train_nll = likelihood_scores(model, train_x, "train", s.k, s.seed, run.config.data)
    samples = model.sample(s.samples, generator=torch.Generator().manual_seed(s.seed))
    every_train, held_out = grey.train.x, grey.test.x[: s.images]
    features = copying_audit(
        ctx.space.embed(samples), ctx.space.embed(every_train), ctx.space.embed(held_out), "classifier features", s.seed
    )
    pixels = copying_audit(samples, to_float(every_train), to_float(held_out), "pixels", s.seed)
    gap = None if test.nll is None or train.nll is None else test.nll - train.nll
    shown, references = samples[:SHOWN].cpu(), to_float(every_train)
    index = nearest(shown, references, k=NEIGHBOURS)[1]
    closest = torch.cat([shown.unsqueeze(1), references[index]], dim=1)
    scores = None if test_nll is None or train_nll is None else (train_nll, test_nll)
    return {
        "train_nll": train.nll, "test_nll": test.nll, "gap": gap,
        "train": dataclasses.asdict(train), "test": dataclasses.asdict(test),
        "audits": [dataclasses.asdict(features), dataclasses.asdict(pixels)], "training_images": len(every_train),
    }, closest, scores  # fmt: skip
