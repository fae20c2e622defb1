"""`vaekit score`: a run's per-image scores for a dataset, as a CSV or Parquet table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vaekit.cli.common import DeviceOpt, RunArg, SeedOpt, friendly_errors, load_on, out_console
from vaekit.cli.tools import scoring_progress
from vaekit.devices import resolve_device
from vaekit.training import distributed


@friendly_errors
def score(
    run: RunArg,
    dataset: Annotated[
        str, typer.Option(help="Data to score: fashion-mnist | mnist | digits | an image folder | .npy/.npz | …")
    ],
    split: Annotated[str, typer.Option(help="Which of its splits: test | train | val.")] = "test",
    k: Annotated[int, typer.Option("--k", help="Importance samples per image for the NLL bound.", min=1)] = 100,
    out: Annotated[
        Path | None,
        typer.Option(help="The table to write, .csv or .parquet.  \\[default: RUN/scores-DATASET-SPLIT.csv]"),
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Folder holding the dataset's files.  \\[default: the run's]", show_default=False)
    ] = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Per-image scores of a dataset under the run: NLL bound (nats, bits/dim), −ELBO, KL, reconstruction error.

    One row per image, with its index and label; the bounds are sharded over ranks under torchrun, like `evaluate`.
    """
    from vaekit.analysis.scores import FORMATS, score_images, write_scores
    from vaekit.errors import VaekitError

    target = out or run / f"scores-{Path(dataset).stem}-{split}.csv"
    if target.suffix not in FORMATS:  # before any image is scored
        raise VaekitError(f"--out {target}: name a .csv or .parquet file")
    ranks, where = distributed.start(resolve_device(device))
    try:
        loaded = load_on(run, str(where))
        with scoring_progress(f"scoring {dataset} under {run} on {loaded.model.device}") as advance:
            columns = score_images(loaded, dataset, split, k, seed, ranks, advance, data_dir)
    finally:
        distributed.stop()
    if not ranks.main:
        return
    write_scores(columns, target)
    shown = ", ".join(name for name in columns if name not in ("index", "label"))
    out_console.print(f"wrote {target}: {len(columns['index']):,} images × {shown}", highlight=False, soft_wrap=True)
