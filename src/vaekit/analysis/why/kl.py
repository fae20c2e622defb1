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
from vaekit.analysis.intervals import bootstrap, weighted_mean
from vaekit.analysis.plots import kl_per_dim_figure
from vaekit.analysis.sample_quality import frechet_distance, precision_recall
from vaekit.analysis.why import figures, verdicts
from vaekit.analysis.why.base import Context, Section, Table, final_loss, fmt, missing, subset
from vaekit.analysis.why.evidence import Evidence
from vaekit.analysis.why.figures import curves_figure
from vaekit.analysis.why.measures import MAX_MMD_POINTS, resampled_mmd, whitened
from vaekit.analysis.why.runs import AE, MC_KL, VAE
from vaekit.data.scoring import Scoring
from vaekit.devices import generator_on
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
    closed_form, monte_carlo = kl_check(ctx.vae, test_x[:MC_IMAGES], s.seed)
    discrepancy: dict[str, float] = {}
    if AE in ctx.runs:
        posterior_draws = _posterior_draws(ctx.vae, test_x[:MAX_MMD_POINTS], s.seed)
        train_x = subset(ctx.data.train, MAX_MMD_POINTS).x
        ae_codes = whitened(_codes(ctx.runs[AE], test_x[:MAX_MMD_POINTS]), _codes(ctx.runs[AE], train_x))
        gauss = torch.randn(len(ae_codes), ae_codes.shape[1], generator=torch.Generator().manual_seed(s.seed + 1))
        vae_mmd, ae_mmd = resampled_mmd(posterior_draws, gauss), resampled_mmd(ae_codes, gauss)
        ones = torch.ones(1, len(gauss), dtype=torch.float64)
        discrepancy = {
            "vae_posterior_draws": float(vae_mmd(ones, ones)[0]),
            "ae_whitened_codes": float(ae_mmd(ones, ones)[0]),
        }
        section.evidence = Evidence(
            "MMD² to N(0, I) of the autoencoder's test codes, whitened as its training codes are, minus that of the "
            "VAE's aggregate posterior (a draw z ~ q(z|x) per test image)",
            discrepancy["ae_whitened_codes"] - discrepancy["vae_posterior_draws"],
            bootstrap(lambda v, a, g: ae_mmd(a, g) - vae_mmd(v, g), [posterior_draws, ae_codes, gauss], seed=s.seed),
            null=0.0, side="above", n=len(gauss), unit="images and prior draws",
        )  # fmt: skip
        section.confirmed = section.evidence.confirmed
        section.tables.append(
            Table(
                "the aggregate posterior against N(0, I), on samples (MMD², Gaussian kernel, median bandwidth)",
                ["codes", "MMD² to N(0, I)"],
                [
                    ["VAE: one draw z ~ q(z|x) per test image", f"{discrepancy['vae_posterior_draws']:.4f}"],
                    ["AE: test codes, whitened as its training codes", f"{discrepancy['ae_whitened_codes']:.4f}"],
                ],
            )
        )
    section.verdict = verdicts.kl_verdict(section.evidence, closed_form, monte_carlo)
    if MC_KL in ctx.runs:
        histories = {"closed-form KL": ctx.vae.history, "Monte Carlo KL": ctx.runs[MC_KL].history}
        section.figures.append(("the VAE trained with its KL in closed form and sampled", curves_figure(histories)))
        section.verdict += (
            f"; trained for the same time with the KL sampled instead, the validation −ELBO is "
            f"{final_loss(ctx.runs[MC_KL]):.2f} nats against {final_loss(ctx.vae):.2f} in closed form (one seed "
            "each: a learning curve, not evidence)"
        )
    else:
        section.missing.append(missing(MC_KL, "no run trained with a sampled KL to set the closed form beside"))
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
    section.numbers = {
        "vae": dataclasses.asdict(report), "ae_aggregate_kl": _finite(ae_kl), "sweep": rows, "mmd": discrepancy,
        "closed_form_kl": closed_form, "monte_carlo_kl": list(monte_carlo),
    }  # fmt: skip
    return section


MC_IMAGES, MC_DRAWS = 500, 200  # the Monte Carlo check of the closed-form KL: images, and draws z ~ q(z|x) per image


@torch.no_grad()
def kl_check(run: Run, x: Tensor, seed: int) -> tuple[float, tuple[float, float, float]]:
    """The closed-form KL(q(z|x) ‖ p(z)) averaged over `x`, and a Monte Carlo estimate of the same average,
    mean over images of mean over MC_DRAWS draws of log q(z|x) − log p(z), with its bootstrap interval over images."""
    model = run.model
    posterior = model.encode(Scoring.of(model.config).input(x.to(model.device), generator_on(model.device, seed)))
    z = posterior.sample(MC_DRAWS, generator_on(model.device, seed + 2))  # (draws, N, D)
    closed = model.prior.kl(posterior, z).double().cpu()  # exact where a closed form exists
    per_image = (posterior.log_prob(z) - model.prior.log_prob(z)).double().mean(0).cpu()
    interval = bootstrap(lambda w: weighted_mean(w, per_image), [per_image], seed=seed)
    return float(closed.mean()), (float(per_image.mean()), *interval)


@torch.no_grad()
def _posterior_draws(run: Run, x: Tensor, seed: int) -> Tensor:
    """One draw z ~ q(z|x) per image: samples of the aggregate posterior q(z) = E_x q(z|x)."""
    device = run.model.device
    posterior = run.model.encode(Scoring.of(run.model.config).input(x.to(device), generator_on(device, seed)))
    return posterior.sample(generator=generator_on(device, seed + 1)).cpu()


@torch.no_grad()
def _codes(run: Run, x: Tensor) -> Tensor:
    """Posterior means (an autoencoder's codes) of the images."""
    device = run.model.device
    return run.model.encode(Scoring.of(run.model.config).input(x.to(device), generator_on(device, 0))).mean.cpu()


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
