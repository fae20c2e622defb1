"""`vaekit score`: a trained run's per-image scores for any dataset vaekit reads, one row per image, for pipelines
that flag inputs unlike the training data.

Each row holds the image's index in its split and its label (where the data has labels), the importance-weighted
negative log-likelihood bound in nats and in bits/dim, the negative ELBO and its two terms (the reconstruction term
−E_q log p(x|z) and the KL), and the reconstruction's mean squared error per pixel: the score reconstruction-based
detectors use, beside the likelihoods. A hierarchy's rows add LLR>j = L − L>j for each j = 1 … L−1 (Havtorn et
al. 2021): the full bound less the bound whose j lowest layers are drawn from their conditional prior, which scores
what the upper, semantic layers make of an image and leaves out the low-level statistics that give simple images of
any kind a high likelihood; and each layer's KL, kl_z1 … kl_zL. Images are scored as the run scores its own (the
same binarization or dequantization), so a row of another dataset is comparable with a row of the run's own test split.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import math
from pathlib import Path

import numpy as np

from vaekit.analysis.evaluate import ImageTerms, Progress, image_terms
from vaekit.data.sources import load_dataset
from vaekit.errors import VaekitError
from vaekit.files import atomic_write
from vaekit.training.distributed import Ranks
from vaekit.training.runs import Run

SPLITS = ("test", "train", "val")
FORMATS = (".csv", ".parquet")


def score_images(
    run: Run,
    dataset: str,
    split: str = "test",
    k: int = 100,
    seed: int = 0,
    ranks: Ranks = Ranks(),
    progress: Progress | None = None,
    data_dir: str | None = None,
) -> dict[str, np.ndarray]:
    """The columns of the score table of `dataset`'s `split`, read with the run's own data settings (binarization,
    validation split) except the dataset itself."""
    if split not in SPLITS:
        raise VaekitError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if k < 1:
        raise VaekitError("--k must be at least 1")
    data_config = dataclasses.replace(run.config.data, dataset=dataset, data_dir=data_dir or run.config.data.data_dir)
    images = getattr(load_dataset(data_config), split)
    shape = list(images.x.shape[1:])
    if shape != run.config.model.input_shape:
        raise VaekitError(
            f"{dataset} has {shape} images and the run takes {run.config.model.input_shape}: score data of the "
            "shape the run was trained on"
        )
    if run.model.conditional:
        raise VaekitError("the run is conditional (--condition label): scores need an unconditional run")
    model = run.model.eval()
    terms = image_terms(
        model, images.x, k, seed, data_config, ranks, None, progress, f"scoring {dataset}'s {split} split"
    )
    columns: dict[str, np.ndarray] = {"index": np.arange(len(images.x))}
    if images.y is not None:
        columns["label"] = images.y.numpy()
    return columns | score_columns(terms, math.prod(shape))


def score_columns(terms: ImageTerms, pixels: int) -> dict[str, np.ndarray]:
    """Each score of `image_terms`' result, by its column name (an autoencoder's: the reconstruction's alone)."""
    columns: dict[str, np.ndarray] = {}
    if terms.bound is not None:
        columns["nll"] = (-terms.bound).numpy()
        columns["bits_per_dim"] = (-terms.bound / (pixels * math.log(2))).numpy()  # as `bits_per_dim` defines it
        columns["neg_elbo"] = (terms.kl - terms.log_px).numpy()
        columns["kl"] = terms.kl.numpy()
    if terms.bounds_above is not None and terms.bound is not None:  # a hierarchy's (Havtorn et al. 2021)
        for j, bound_above in enumerate(terms.bounds_above.unbind(-1), start=1):
            columns[f"llr>{j}"] = (terms.bound - bound_above).numpy()
    if terms.kl_layers is not None:
        for layer, kl in enumerate(terms.kl_layers.unbind(-1), start=1):
            columns[f"kl_z{layer}"] = kl.numpy()
    columns["reconstruction_nll"] = (-terms.log_px).numpy()
    columns["mse"] = terms.squared.numpy()
    return columns


def write_scores(columns: dict[str, np.ndarray], path: Path) -> None:
    """The table at `path`, as CSV or Parquet by its suffix, written atomically."""
    if path.suffix not in FORMATS:
        raise VaekitError(f"--out {path}: name a .csv or .parquet file")
    if path.suffix == ".parquet":
        try:
            pa, pq = importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
        except ImportError:
            raise VaekitError("writing Parquet needs pyarrow: pip install 'vaekit[hf]', or write a .csv file") from None
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table(dict(columns)), buffer)
        atomic_write(path, buffer.getvalue().to_pybytes())
        return
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in zip(*columns.values(), strict=True):
        writer.writerow([repr(float(v)) if isinstance(v, np.floating) else int(v) for v in row])
    atomic_write(path, text.getvalue().encode())
