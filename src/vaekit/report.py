"""Rich tables for an `Evaluation`: what `vaekit evaluate` prints (the numbers themselves live in evaluate.py)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from vaekit.evaluate import Evaluation


def _row(table: Table, *cells: str) -> None:
    """Add a row of plain text: brackets such as E_q[z_d] are content, not rich markup."""
    table.add_row(*(escape(cell) for cell in cells))


def evaluation_tables(evaluation: Evaluation) -> list[Table]:
    tables = [_likelihood(evaluation), _kl(evaluation)]
    if evaluation.generalization:
        tables.append(_generalization(evaluation))
    if evaluation.sample_quality:
        tables.append(_samples(evaluation))
    return tables


def _likelihood(evaluation: Evaluation) -> Table:
    table = Table(title="1. How likely is held-out data?  (nats per image)", title_justify="left")
    for column in ("split", "images", "k", "−ELBO", "NLL (IWAE bound)", "bits/dim", "recon", "KL"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for r in evaluation.likelihood:
        _row(table,
            r.split, f"{r.images:,}", str(r.k), f"{r.neg_elbo:.2f} ± {r.neg_elbo_se:.2f}",
            f"{r.nll:.2f} ± {r.nll_se:.2f}", f"{r.bits_per_dim:.4f}", f"{r.reconstruction:.2f}", f"{r.kl:.2f}",
        )  # fmt: skip
    if evaluation.likelihood:
        table.caption = escape(f"scored: {evaluation.likelihood[0].data}")
    return table


def _kl(evaluation: Evaluation) -> Table:
    kl = evaluation.kl
    table = Table(title="2. What does the KL term do?  (test split)", title_justify="left", show_header=False)
    top = ", ".join(f"z{d}: {kl.kl_per_dim[d]:.2f}" for d in kl.order[:5])
    agg_mean, agg_var = kl.aggregate_mean, kl.aggregate_var
    _row(table, "active units", f"{kl.active_units} of {len(kl.kl_per_dim)} (Cov_x E_q[z_d] > {kl.threshold:g})")
    _row(table, "total KL", f"{sum(kl.kl_per_dim):.2f} nats; largest: {top}")
    if kl.prior == "N(0, I)":
        _row(table, "aggregate q(z) mean", f"{min(agg_mean):+.3f} … {max(agg_mean):+.3f}  (prior: 0)")
        _row(table, "aggregate q(z) variance", f"{min(agg_var):.3f} … {max(agg_var):.3f}  (prior: 1)")
        _row(table, "KL(moment-matched q(z) ‖ N(0, I))", f"{kl.aggregate_kl:.3f} nats")
    else:
        _row(table, "aggregate q(z) category probabilities", f"{min(agg_mean):.3f} … {max(agg_mean):.3f}")
        _row(table, f"KL(aggregate q(z) ‖ {kl.prior})", f"{kl.aggregate_kl:.3f} nats")
    return table


def _generalization(evaluation: Evaluation) -> Table:
    g = evaluation.generalization
    assert g is not None
    table = Table(title="3. Does it generalize or memorize?", title_justify="left")
    for column in ("", "train", "test", "gap (test − train)"):
        table.add_column(column, justify="right" if column else "left")
    _row(table, "−ELBO", f"{g.train_neg_elbo:.2f}", f"{g.test_neg_elbo:.2f}", f"{g.neg_elbo_gap:+.2f}")
    _row(table, "NLL", f"{g.train_nll:.2f}", f"{g.test_nll:.2f}", f"{g.nll_gap:+.2f}")
    for audit in g.audits:
        _row(table,
            f"nearest-neighbour distance ({audit.space})", f"{audit.mean_to_train:.3f}", f"{audit.mean_to_test:.3f}",
            f"ratio {audit.ratio:.3f}",
        )  # fmt: skip
    table.caption = (
        f"{g.samples} prior samples against {g.reference_images:,} train and as many test images; "
        "ratio ≈ 1 generalizes, ≪ 1 copies training images"
    )
    return table


def _samples(evaluation: Evaluation) -> Table:
    q = evaluation.sample_quality
    assert q is not None
    table = Table(title="4. How good are the samples?", title_justify="left", show_header=False)
    accuracy = f" (classifier test accuracy {q.classifier_test_accuracy:.1%})" if q.classifier_test_accuracy else ""
    _row(table, "feature space", q.feature_space + accuracy)
    _row(table, "Fréchet distance", f"{q.frechet_distance:.3f}  ({q.samples} samples vs {q.reference_images} test)")
    _row(table, "precision / recall", f"{q.precision:.3f} / {q.recall:.3f}  (k = 3 manifolds)")
    _row(table, "Inception FID", f"{q.inception_fid:.2f}" if q.inception_fid is not None else q.inception_note)
    return table
