"""Claim 4: a closed-form KL keeps the latent space regular. `kl_report` on the VAE (KL per dimension, active units,
the aggregate posterior against N(0, I)) and on the autoencoder's codes, and across the β sweep: KL, active units and
sample quality against β."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from vaekit.analysis.evaluate import kl_report
from vaekit.analysis.plots import kl_per_dim_figure
from vaekit.analysis.sample_quality import frechet_distance, precision_recall
from vaekit.analysis.why import figures, verdicts
from vaekit.analysis.why.base import Context, Section, Table, fmt, missing
from vaekit.analysis.why.runs import AE, VAE
from vaekit.training.runs import Run


def kl(ctx: Context) -> Section:
    s = ctx.settings
    test_x = ctx.data.test.x[: s.images]
    report = kl_report(ctx.vae.model, test_x)
    section = Section.start("kl")
    section.headline = f"{report.active_units} of {len(report.kl_per_dim)} units active"
    ae_kl = None
    if AE in ctx.runs:
        ae_kl = kl_report(ctx.runs[AE].model, test_x).aggregate_kl
    else:
        section.missing.append(missing(AE, "no codes without a KL term to compare the aggregate posterior with"))
    sweep = sorted((run.config.beta, role) for role, run in ctx.runs.items() if role == VAE or role.startswith("beta-"))
    rows = [_sweep_point(ctx, ctx.runs[role], test_x) for _, role in sweep]
    if len(rows) < 2:
        section.missing.append(missing("beta-X", "there is no β sweep to show posterior collapse"))
    section.tables.append(
        Table(
            "the VAE's KL and its aggregate posterior q(z) = E_x q(z|x) (moment-matched) against N(0, I)",
            ["run", "KL (nats)", "active units", "aggregate KL to N(0, I) (nats)"],
            [
                [
                    "VAE",
                    f"{sum(report.kl_per_dim):.2f}",
                    f"{report.active_units} of {len(report.kl_per_dim)}",
                    fmt(report.aggregate_kl),
                ],
                ["AE (no KL term)", "n/a", "n/a", fmt(ae_kl)],
            ],
        )
    )
    section.tables.append(
        Table(
            f"the β sweep: precision/recall and Fréchet distance of {s.samples} samples in classifier features",
            ["β", "KL (nats)", "active units", "precision", "recall", "Fréchet distance"],
            [
                [
                    f"{r['beta']:g}",
                    f"{r['kl']:.2f}",
                    str(r["active_units"]),
                    f"{r['precision']:.3f}",
                    f"{r['recall']:.3f}",
                    f"{r['frechet']:.3g}",
                ]
                for r in rows
            ],
        )
    )
    section.confirmed, section.verdict = verdicts.kl_verdict(
        report.aggregate_kl or math.inf, _finite(ae_kl), [(r["beta"], r["active_units"]) for r in rows]
    )
    section.figures.append(
        (
            "KL per latent dimension of the VAE, largest first, and each dimension's activity",
            kl_per_dim_figure(report.kl_per_dim, report.activity, report.threshold),
        )
    )
    section.figures.append(
        (
            "KL, active units and sample quality against β",
            figures.sweep_figure(
                *([r[k] for r in rows] for k in ("beta", "kl", "active_units", "precision", "recall"))
            ),
        )
    )
    section.numbers = {"vae": dataclasses.asdict(report), "ae_aggregate_kl": _finite(ae_kl), "sweep": rows}
    return section


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _sweep_point(ctx: Context, run: Run, test_x: Tensor) -> dict[str, Any]:
    s = ctx.settings
    report = kl_report(run.model, test_x)
    fake = ctx.space.embed(run.model.sample(s.samples, generator=torch.Generator().manual_seed(s.seed)))
    real = ctx.real[: len(fake)]
    precision, recall = precision_recall(real, fake)
    return {
        "beta": run.config.beta, "kl": sum(report.kl_per_dim), "active_units": report.active_units,
        "precision": precision, "recall": recall, "frechet": frechet_distance(real, fake),
    }  # fmt: skip
