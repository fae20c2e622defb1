"""How well a per-image score separates one dataset from another: AUROC, AUPRC and the false-positive rate at 95% true
positives, each with a bootstrap interval, the out-of-distribution images taken as the positives (a higher score
flags an image as unlike the training data).

AUROC is 0.5 for a score that cannot tell the two apart and below 0.5 for one that ranks them backwards, as a VAE's
likelihood famously does for MNIST under a Fashion-MNIST model (Nalisnick et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from vaekit.analysis.intervals import LEVEL
from vaekit.errors import VaekitError

RESAMPLES = 200  # bootstrap resamples of each metric: its 2.5th and 97.5th percentiles to about a hundredth
TPR = 0.95


@dataclass
class Separation:
    score: str  # the column of `vaekit score` judged
    auroc: float
    auroc_interval: tuple[float, float]
    auprc: float
    auprc_interval: tuple[float, float]
    fpr_at_95_tpr: float  # in-distribution images flagged when 95% of the others are
    fpr_interval: tuple[float, float]
    inliers: int
    outliers: int


def _metrics(inliers: np.ndarray, outliers: np.ndarray) -> tuple[float, float, float]:
    truth = np.concatenate([np.zeros(len(inliers)), np.ones(len(outliers))])
    scores = np.concatenate([inliers, outliers])
    fpr, tpr, _ = roc_curve(truth, scores)
    return (
        float(roc_auc_score(truth, scores)),
        float(average_precision_score(truth, scores)),
        float(fpr[np.searchsorted(tpr, TPR, side="left")]),  # the first threshold that reaches 95% of the outliers
    )


def separation(score: str, inliers: np.ndarray, outliers: np.ndarray, seed: int = 0) -> Separation:
    """The three metrics of `score` (higher: more unlike the training data), with LEVEL intervals over images, each
    set resampled on its own."""
    inliers, outliers = np.asarray(inliers, np.float64), np.asarray(outliers, np.float64)
    if len(inliers) < 2 or len(outliers) < 2:
        raise VaekitError("separating two datasets needs at least two images of each")
    if not (np.isfinite(inliers).all() and np.isfinite(outliers).all()):
        raise VaekitError(f"the {score} scores hold a NaN or an infinity: score the data again, or check the run")
    point = _metrics(inliers, outliers)
    rng = np.random.default_rng(seed)
    draws = np.array([
        _metrics(rng.choice(inliers, len(inliers)), rng.choice(outliers, len(outliers))) for _ in range(RESAMPLES)
    ])  # fmt: skip
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    return Separation(
        score, point[0], (float(low[0]), float(high[0])), point[1], (float(low[1]), float(high[1])),
        point[2], (float(low[2]), float(high[2])), len(inliers), len(outliers),
    )  # fmt: skip


@dataclass
class Calibrated:
    """A score's threshold set on in-distribution validation images for a target false-positive rate, and the rate
    measured on other in-distribution images (held out from both training and the threshold)."""

    score: str
    threshold: float
    target_fpr: float
    measured_fpr: float
    measured_interval: tuple[float, float]  # Wilson's 95% interval for a binomial share
    validation_images: int
    held_out_images: int


def calibrate(score: str, validation: np.ndarray, held_out: np.ndarray, fpr: float) -> Calibrated:
    """The threshold above which `fpr` of the validation scores lie, and the share of held-out scores above it."""
    if not 0 < fpr < 1:
        raise VaekitError(f"--fpr {fpr:g}: give a false-positive rate above 0 and below 1, such as 0.05")
    if len(validation) < 2 or len(held_out) < 2:
        raise VaekitError("calibrating needs at least two validation and two held-out images")
    threshold = float(np.quantile(validation, 1 - fpr))
    flagged = int((np.asarray(held_out) > threshold).sum())
    n = len(held_out)
    return Calibrated(score, threshold, fpr, flagged / n, wilson(flagged, n), len(validation), n)


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (good near 0 and 1, where the normal one fails)."""
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


@dataclass
class Typicality:
    """Nalisnick et al. (2019)'s typicality test of batches: is a batch's mean score as close to the in-distribution
    mean as batches of in-distribution images of its size are? A small p-value says the batch is atypical, even
    where each image's likelihood is high (a batch of MNIST under a Fashion-MNIST model)."""

    score: str
    batch_size: int
    reference_mean: float  # the score's mean over the reference's validation images (the entropy estimate)
    batch_means: list[float]
    p_values: list[float]  # per batch: the share of resampled in-distribution batches at least as far from the mean


def typicality(
    score: str, batches: np.ndarray, validation: np.ndarray, held_out: np.ndarray, batch_size: int, seed: int = 0
) -> Typicality:
    """The test of consecutive `batch_size` rows of `batches` (a last, shorter batch is dropped). The in-distribution
    mean is taken on `validation`; how far batches of that law stray from it, on `held_out` in-distribution images
    resampled into RESAMPLES batches, so the test's own false-positive rate is its level."""
    if batch_size < 1 or len(batches) < batch_size:
        raise VaekitError(f"--batch {batch_size}: give a batch size from 1 to the {len(batches)} images scored")
    centre = float(np.mean(validation))
    rng = np.random.default_rng(seed)
    null = np.abs(rng.choice(held_out, (10 * RESAMPLES, batch_size)).mean(1) - centre)
    means = [float(np.mean(batches[i : i + batch_size])) for i in range(0, len(batches) - batch_size + 1, batch_size)]
    p_values = [float((1 + (null >= abs(m - centre)).sum()) / (1 + len(null))) for m in means]
    return Typicality(score, batch_size, centre, means, p_values)
