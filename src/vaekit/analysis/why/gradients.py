"""Claim 1: gradients reach μ and σ. The gradient lab (`vaekit.analysis.estimators`) on the trained VAE and on a
fresh copy; the learning curves of the VAE and of the same VAE trained with the score-function estimator and a
baseline."""

from __future__ import annotations

import dataclasses
import math

from vaekit.analysis.estimators import GradientReport, gradient_lab
from vaekit.analysis.why import figures, verdicts
from vaekit.analysis.why.base import Context, Section, Table, final_loss, missing
from vaekit.analysis.why.evidence import Evidence
from vaekit.analysis.why.runs import SCORE_FUNCTION

BASELINE = "score-function-baseline"  # the stronger score-function estimator: the control that could win


def gradients(ctx: Context) -> Section:
    s = ctx.settings
    trained, initial = gradient_lab(ctx.vae, s.repeats, s.batch_size, 4, s.seed, at_init=True)
    ratios = {
        r.label: (r.variance_ratio("score-function"), r.variance_ratio("score-function-baseline"))
        for r in (trained, initial)
    }
    table = Table(
        "encoder gradient variance (trace of the covariance) over repeated estimates",
        ["model", "estimator", "variance", "× pathwise (95% interval)", "SNR"],
        [],
    )
    for report in (initial, trained):
        for stats in (report.overall(e) for e in ("reparam", "score-function", "score-function-baseline")):
            table.rows.append(
                [
                    report.label,
                    stats.estimator,
                    f"{stats.variance:.4g}",
                    _ratio(report, stats.estimator),
                    f"{stats.snr:.3f}",
                ]
            )
    section = Section.start("gradients")
    section.headline = f"{ratios['trained'][1]:,.1f}x"  # score-function (with baseline) variance over pathwise, trained
    section.tables.append(table)
    histories = {"pathwise": ctx.vae.history}
    curves = None
    if SCORE_FUNCTION in ctx.runs:
        histories["score-function + baseline"] = ctx.runs[SCORE_FUNCTION].history
        curves = (final_loss(ctx.vae), final_loss(ctx.runs[SCORE_FUNCTION]))
    else:
        section.missing.append(missing(SCORE_FUNCTION, "no learning curve trained with the score-function estimator"))
    low, high = trained.ratio_intervals.get(BASELINE, (math.nan, math.nan))  # none: too few draws to resample
    section.evidence = Evidence(
        "the score-function gradient's variance with a leave-one-out baseline, as a multiple of the pathwise one, "
        "on the trained VAE",
        ratios["trained"][1], (low, high), null=1.0, side="above", n=s.repeats, unit="gradient draws per estimator",
    )  # fmt: skip
    section.confirmed = section.evidence.confirmed
    section.verdict = verdicts.gradient_verdict(
        section.evidence, ratios["trained"][0], ratios["initialisation"][1], curves
    )
    section.figures.append(
        ("learning curves of the runs trained with each estimator", figures.curves_figure(histories))
    )
    section.numbers = {
        "variance_ratio": ratios,
        "ratio_intervals": {r.label: r.ratio_intervals for r in (trained, initial)},
        "final_neg_elbo": curves,
        "reports": [dataclasses.asdict(r) for r in (trained, initial)],
    }
    return section


def _ratio(report: GradientReport, estimator: str) -> str:
    ratio = report.variance_ratio(estimator)
    if estimator not in report.ratio_intervals:
        return f"{ratio:,.1f}"
    low, high = report.ratio_intervals[estimator]
    return f"{ratio:,.1f} ({low:,.1f} to {high:,.1f})"
