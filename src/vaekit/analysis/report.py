"""Rich tables for an `Evaluation`: what `vaekit evaluate` prints (the numbers themselves live in evaluate.py)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from vaekit.analysis.evaluate import Evaluation, KLReport


def _row(table: Table, *cells: str) -> None:
    """Add a row of plain text: brackets such as E_q[z_d] are content, not rich markup."""
    table.add_row(*(escape(cell) for cell in cells))


def evaluation_tables(evaluation: Evaluation) -> list[Table]:
    """The report's tables, numbered as shown (a test-split report has no generalization section to skip over), each
    narrow enough for an 80-column terminal."""
    tables = [_likelihood(evaluation), _kl(evaluation)]
    if evaluation.generalization:
        tables.append(_generalization(evaluation))
        if evaluation.generalization.audits:
            tables.append(_copying(evaluation))
    if evaluation.sample_quality:
        tables.append(_samples(evaluation))
    for number, table in enumerate(tables, start=1):
        table.title = f"{number}. {table.title}"
        table.min_width = len(table.title)  # a narrow table (one split, an autoencoder's) keeps its title on one line
    return tables


def _number(value: float | None, spec: str) -> str:
    """A number, or "n/a" for what the model does not have (an autoencoder's ELBO, bound and KL)."""
    return "n/a" if value is None else format(value, spec)


def _likelihood(evaluation: Evaluation) -> Table:
    """One column per split scored, one row per measure: narrow whatever the number of measures."""
    table = Table(title="How likely is held-out data?  (nats per image)", title_justify="left")
    table.add_column("")
    for r in evaluation.likelihood:
        table.add_column(r.split, justify="right")
    rows = {
        "images": [f"{r.images:,}" for r in evaluation.likelihood],
        "importance samples k": [str(r.k) if r.k else "n/a" for r in evaluation.likelihood],
        "−ELBO": [_with_se(r.neg_elbo, r.neg_elbo_se) for r in evaluation.likelihood],
        "NLL (importance-weighted bound)": [_with_se(r.nll, r.nll_se) for r in evaluation.likelihood],
        "bits/dim": [_number(r.bits_per_dim, ".4f") for r in evaluation.likelihood],
        "reconstruction −E log p(x|z)": [f"{r.reconstruction:.2f}" for r in evaluation.likelihood],
        "KL": [_number(r.kl, ".2f") for r in evaluation.likelihood],
        "MSE per pixel": [f"{r.mse:.4f}" for r in evaluation.likelihood],
    }
    for measure, cells in rows.items():
        _row(table, measure, *cells)
    if evaluation.likelihood:
        weights = f"weights of {evaluation.weights}; " if evaluation.weights else ""
        table.caption = escape(f"{weights}scored: {evaluation.likelihood[0].data}")
    return table


def _with_se(value: float | None, se: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ± {se or 0:.2f}"


def _per_layer(kl: KLReport) -> str:
    """`z1: 3.10 nats, 5 of 16 active; z2: …` for a hierarchy's layers, bottom first (KL given the layers above)."""
    cells, start = [], 0
    for layer, size in enumerate(kl.layer_sizes, start=1):
        units = range(start, start + size)
        active = sum(kl.activity[d] > kl.threshold for d in units)
        cells.append(f"z{layer}: {sum(kl.kl_per_dim[d] for d in units):.2f} nats, {active} of {size} active")
        start += size
    return "; ".join(cells)


def _kl(evaluation: Evaluation) -> Table:
    kl = evaluation.kl
    table = Table(title="What does the KL term do?  (test split)", title_justify="left", show_header=False)
    if kl is None:
        _row(
            table, "not applicable", "an autoencoder has no KL term and no noise: no KL per dimension, no active units"
        )
        return table
    top = ", ".join(f"z{d}: {kl.kl_per_dim[d]:.2f}" for d in kl.order[:5])
    agg_mean, agg_var = kl.aggregate_mean, kl.aggregate_var
    _row(table, "active units", f"{kl.active_units} of {len(kl.kl_per_dim)} (Cov_x E_q[z_d] > {kl.threshold:g})")
    _row(table, "total KL", f"{sum(kl.kl_per_dim):.2f} nats; largest: {top}")
    if kl.layer_sizes:
        _row(table, "KL and active units per layer", _per_layer(kl))
    if kl.prior == "N(0, I)":
        _row(table, "aggregate q(z) mean", f"{min(agg_mean):+.3f} … {max(agg_mean):+.3f}  (prior: 0)")
        _row(table, "aggregate q(z) variance", f"{min(agg_var):.3f} … {max(agg_var):.3f}  (prior: 1)")
        _row(table, "KL(moment-matched q(z) ‖ N(0, I))", f"{kl.aggregate_kl:.3f} nats")
    elif kl.aggregate_kl is None:
        _row(table, "aggregate q(z) mean", f"{min(agg_mean):+.3f} … {max(agg_mean):+.3f}")
        _row(table, "aggregate q(z) variance", f"{min(agg_var):.3f} … {max(agg_var):.3f}")
        _row(table, "prior", f"{kl.prior} (no closed-form KL from the aggregate posterior)")
    else:
        _row(table, "aggregate q(z) category probabilities", f"{min(agg_mean):.3f} … {max(agg_mean):.3f}")
        _row(table, f"KL(aggregate q(z) ‖ {kl.prior})", f"{kl.aggregate_kl:.3f} nats")
    return table


def _copying(evaluation: Evaluation) -> Table:
    """The copying audit (`vaekit.analysis.copying`): distances to the nearest of all training images."""
    g = evaluation.generalization
    assert g is not None
    table = Table(title="Do its samples copy training images?", title_justify="left")
    for column in ("distance to nearest train", "sample", "test image", "sample farther"):
        table.add_column(column, justify="right" if column != "distance to nearest train" else "left")
    for audit in g.audits:
        low, high = audit.farther_interval
        _row(table,
            audit.space, f"{audit.sample_to_train:.3f}", f"{audit.held_out_to_train:.3f}",
            f"{audit.farther:.0%} ({low:.0%}–{high:.0%})",
        )  # fmt: skip
    held_out = g.audits[0].held_out_images
    table.caption = (
        f"{g.samples:,} prior samples and {held_out:,} test images against all {g.reference_images:,} training images; "
        "a sample is the farther one 50% of the time if it is like an unseen image, far less if it copies"
    )
    return table


def _generalization(evaluation: Evaluation) -> Table:
    g = evaluation.generalization
    assert g is not None
    table = Table(title="Does it generalize or memorize?", title_justify="left")
    for column in ("", "train", "test", "test − train"):
        table.add_column(column, justify="right" if column else "left")
    for label, train, test, gap in (
        ("−ELBO", g.train_neg_elbo, g.test_neg_elbo, g.neg_elbo_gap),
        ("NLL", g.train_nll, g.test_nll, g.nll_gap),
        ("reconstruction", g.train_reconstruction, g.test_reconstruction, g.reconstruction_gap),
    ):
        _row(table, label, _number(train, ".2f"), _number(test, ".2f"), _number(gap, "+.2f"))
    table.caption = "NLL and −ELBO in nats per image; reconstruction as the run's likelihood scores it"
    return table


def _samples(evaluation: Evaluation) -> Table:
    q = evaluation.sample_quality
    assert q is not None
    table = Table(title="How good are the samples?", title_justify="left", show_header=False)
    accuracy = f" (classifier test accuracy {q.classifier_test_accuracy:.1%})" if q.classifier_test_accuracy else ""
    _row(table, "feature space", q.feature_space + accuracy)
    _row(table, "Fréchet distance", f"{q.frechet_distance:.3f}  ({q.samples} samples vs {q.reference_images} test)")
    _row(table, "precision / recall", f"{q.precision:.3f} / {q.recall:.3f}  (k = 3 manifolds)")
    _row(table, "Inception FID", f"{q.inception_fid:.2f}" if q.inception_fid is not None else q.inception_note)
    return table
