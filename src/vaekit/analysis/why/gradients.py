"""Claim 1: gradients reach μ and σ. The gradient lab (`vaekit.analysis.estimators`) on the trained VAE and on a
fresh copy; the learning curves of the VAE and of the same VAE trained with the score-function estimator and a
baseline."""

from __future__ import annotations

import dataclasses

from vaekit.analysis.estimators import gradient_lab
from vaekit.analysis.why import figures, verdicts
from vaekit.analysis.why.base import Context, Section, Table, missing
from vaekit.analysis.why.runs import SCORE_FUNCTION
from vaekit.training.runs import Run


def gradients(ctx: Context) -> Section:
    s = ctx.settings
    trained, initial = gradient_lab(ctx.vae, s.repeats, s.batch_size, 4, s.seed, at_init=True)
    ratios = {
        r.label: (r.variance_ratio("score-function"), r.variance_ratio("score-function-baseline"))
        for r in (trained, initial)
    }
    table = Table(
        "encoder gradient variance (trace of the covariance) over repeated estimates",
        ["model", "estimator", "variance", "× pathwise", "SNR"],
        [],
    )
    for report in (initial, trained):
        for stats in (report.overall(e) for e in ("reparam", "score-function", "score-function-baseline")):
            table.rows.append(
                [
                    report.label,
                    stats.estimator,
                    f"{stats.variance:.4g}",
                    f"{report.variance_ratio(stats.estimator):,.1f}",
                    f"{stats.snr:.3f}",
                ]
            )
    section = Section.start("gradients")
    section.headline = f"{ratios['trained'][0]:,.0f}x"  # score-function variance over pathwise, trained
    section.tables.append(table)
    histories = {"pathwise": ctx.vae.history}
    curves = None
    if SCORE_FUNCTION in ctx.runs:
        histories["score-function + baseline"] = ctx.runs[SCORE_FUNCTION].history
        curves = (_final_loss(ctx.vae), _final_loss(ctx.runs[SCORE_FUNCTION]))
    else:
        section.missing.append(missing(SCORE_FUNCTION, "no learning curve trained with the score-function estimator"))
    section.confirmed, section.verdict = verdicts.gradient_verdict(ratios["trained"], ratios["initialisation"], curves)
    section.figures.append(
        ("learning curves of the runs trained with each estimator", figures.curves_figure(histories))
    )
    section.numbers = {
        "variance_ratio": ratios,
        "final_neg_elbo": curves,
        "reports": [dataclasses.asdict(r) for r in (trained, initial)],
    }
    return section


def _final_loss(run: Run) -> float:
    last = run.history[-1]
    return float(-(last.get("val") or last["train"])["elbo"])
