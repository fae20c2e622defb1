"""`vaekit score`: a run's per-image scores for a dataset, as a CSV or Parquet table; with `--ood`, how well each score
tells the dataset from another."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from vaekit.cli.common import DeviceOpt, RunArg, SeedOpt, friendly_errors, load_on, out_console
from vaekit.cli.tools import scoring_progress
from vaekit.devices import resolve_device
from vaekit.training import distributed

NOT_SCORES = ("index", "label", "set")


@friendly_errors
def score(
    run: RunArg,
    dataset: Annotated[
        str, typer.Option(help="Data to score: fashion-mnist | mnist | digits | an image folder | .npy/.npz | …")
    ],
    split: Annotated[str, typer.Option(help="Which of its splits: test | train | val.")] = "test",
    k: Annotated[int, typer.Option("--k", help="Importance samples per image for the NLL bound.", min=1)] = 100,
    ood: Annotated[
        str | None,
        typer.Option(
            help="Data unlike the run's: its test split is scored too, and each score's AUROC, AUPRC and false "
            "positives at 95% true positives are reported, OOD images as positives.",
            show_default=False,
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            help="In-distribution data: each score's threshold is set on its validation split for --fpr, the rate "
            "is measured on its test split, and the scored rows are flagged (columns flag_SCORE).",
            show_default=False,
        ),
    ] = None,
    fpr: Annotated[float, typer.Option(help="The false-positive rate the --reference thresholds aim at.")] = 0.05,
    batch: Annotated[
        int,
        typer.Option(
            help="With --reference: also test consecutive batches of this many scored rows for typicality "
            "(Nalisnick et al. 2019), each with its p-value.",
            min=0,
        ),
    ] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="The table to write, .csv or .parquet.  \\[default: RUN/scores-DATASET-SPLIT.csv]"),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Folder holding the dataset's files.  \\[default: the run's]", show_default=False)
    ] = None,
    ood_data_dir: Annotated[
        str | None, typer.Option(help="Folder holding --ood's files.  \\[default: --data-dir's]", show_default=False)
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Per-image scores of a dataset under the run: NLL bound (nats, bits/dim), −ELBO, KL, reconstruction error.

    One row per image, with its index and label; the bounds are sharded over ranks under torchrun, like `evaluate`.
    With --ood the table holds both datasets (column `set`: 0 for D, 1 for the other), OUT-separation.json the
    metrics and OUT-separation.png each score's histograms and ROC curve; with --reference, flag_SCORE columns and
    OUT-thresholds.json.
    """
    from vaekit.analysis.scores import FORMATS, score_images, write_scores
    from vaekit.errors import VaekitError

    suffix = f"-vs-{Path(ood).stem}" if ood else ""
    target = out or run / f"scores-{Path(dataset).stem}-{split}{suffix}.csv"
    if target.suffix not in FORMATS:  # before any image is scored
        raise VaekitError(f"--out {target}: name a .csv or .parquet file")
    if batch and reference is None:
        raise VaekitError("--batch tests batches against --reference's images: add --reference D, or drop --batch")
    ranks, where = distributed.start(resolve_device(device))
    try:
        loaded = load_on(run, str(where))
        with scoring_progress(f"scoring {dataset} under {run} on {loaded.model.device}") as advance:
            columns = score_images(loaded, dataset, split, k, seed, ranks, advance, data_dir)
            other_dir = ood_data_dir or data_dir
            others = None if ood is None else score_images(loaded, ood, "test", k, seed, ranks, advance, other_dir)
            parts = ("val", "test") if reference is not None else ()
            references = [score_images(loaded, str(reference), p, k, seed, ranks, advance, data_dir) for p in parts]
    finally:
        distributed.stop()
    if not ranks.main:
        return
    names = [name for name in columns if name not in NOT_SCORES and name != "bits_per_dim"]  # bits/dim ranks as nll
    tables = [columns] if others is None else [columns, others]
    if references:
        _flag(tables, names, references, reference or "", fpr, target, batch, seed)
    if others is not None:
        _separate(columns, others, names, dataset, split, ood or "", k, seed, target)
        columns = {name: np.concatenate([columns[name], others[name]]) for name in columns if name in others}
        columns["set"] = np.array([0] * (len(columns["index"]) - len(others["index"])) + [1] * len(others["index"]))
    write_scores(columns, target)
    shown = ", ".join(name for name in columns if name not in NOT_SCORES and not name.startswith("flag_"))
    out_console.print(f"wrote {target}: {len(columns['index']):,} images × {shown}", highlight=False, soft_wrap=True)


def _separate(
    columns: dict[str, np.ndarray], others: dict[str, np.ndarray], names: list[str], dataset: str, split: str,
    ood: str, k: int, seed: int, target: Path,
) -> None:  # fmt: skip
    """Each score's AUROC, AUPRC and FPR at 95% TPR between the two sets: printed, and OUT-separation.json."""
    from vaekit.analysis.detection import separation
    from vaekit.analysis.plots import separation_figure
    from vaekit.files import atomic_write, atomic_write_json

    found = [separation(name, columns[name], others[name], seed) for name in names]
    figure = target.with_name(target.stem + "-separation.png")
    values = {name: (columns[name], others[name]) for name in names}
    aurocs = {s.score: s.auroc for s in found}
    atomic_write(figure, separation_figure(values, aurocs, Path(dataset).name, Path(ood).name))
    report = target.with_name(target.stem + "-separation.json")
    atomic_write_json(report, {"in": dataset, "in_split": split, "out": ood, "out_split": "test", "k": k,
                               "scores": [dataclasses.asdict(s) for s in found]})  # fmt: skip
    table = Table(title=f"{dataset} ({split}) against {ood} (test): the OOD images are the positives")
    for column in ("score", "AUROC", "AUPRC", "FPR at 95% TPR"):
        table.add_column(column, justify="left" if column == "score" else "right", no_wrap=True)
    for s in found:
        table.add_row(s.score, _cell(s.auroc, s.auroc_interval, 3), _cell(s.auprc, s.auprc_interval),
                      _cell(s.fpr_at_95_tpr, s.fpr_interval))  # fmt: skip
    out_console.print(table)
    out_console.print("95% intervals: a bootstrap over the images of each set", highlight=False)
    out_console.print(f"wrote {report} and {figure.name}", highlight=False, soft_wrap=True)


def _flag(
    tables: list[dict[str, np.ndarray]], names: list[str], references: list[dict[str, np.ndarray]], name: str,
    fpr: float, target: Path, batch: int, seed: int,
) -> None:  # fmt: skip
    """Thresholds from the reference's validation split, flag_SCORE columns on every scored table, the rate each
    threshold has on the reference's test split, and with `batch` the typicality of the first table's batches."""
    from vaekit.analysis.detection import calibrate, typicality
    from vaekit.files import atomic_write_json

    validation, held_out = references
    found = [calibrate(n, validation[n], held_out[n], fpr) for n in names]
    for columns in tables:
        for c in found:
            columns[f"flag_{c.score}"] = (columns[c.score] > c.threshold).astype(np.int64)
    table = Table(title=f"thresholds for a false-positive rate of {fpr:g}, set on {name} (validation)")
    for column in ("score", "threshold", "FPR on its test split", "flagged here"):
        table.add_column(column, justify="left" if column == "score" else "right", no_wrap=True)
    for c in found:
        low, high = c.measured_interval
        flagged = float(np.mean(np.concatenate([t[f"flag_{c.score}"] for t in tables])))
        table.add_row(c.score, f"{c.threshold:.4g}", f"{c.measured_fpr:.3f} ({low:.3f}–{high:.3f})", f"{flagged:.1%}")
    out_console.print(table)
    written: dict[str, object] = {"reference": name, "fpr": fpr, "scores": [dataclasses.asdict(c) for c in found]}
    if batch:
        tested = [typicality(n, tables[0][n], validation[n], held_out[n], batch, seed) for n in names]
        written["typicality"] = [dataclasses.asdict(t) for t in tested]
        for t in tested:
            atypical = float(np.mean(np.array(t.p_values) < fpr))
            out_console.print(
                f"typicality of {len(t.p_values)} batches of {batch} by {t.score}: {atypical:.0%} with p < {fpr:g}",
                highlight=False,
            )
    report = target.with_name(target.stem + "-thresholds.json")
    atomic_write_json(report, written)
    out_console.print(f"wrote {report}", highlight=False, soft_wrap=True)


def _cell(value: float, interval: tuple[float, float], digits: int = 2) -> str:
    return f"{value:.{digits}f} ({interval[0]:.2f}–{interval[1]:.2f})"
