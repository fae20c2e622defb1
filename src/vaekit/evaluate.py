"""Honest evaluation of a trained run: four questions, one report.

1. How likely is held-out data?   importance-weighted log-likelihood, negative ELBO, bits/dim
2. What does the KL term do?      KL per latent dimension, active units, the aggregate posterior against N(0, I)
3. Generalize or memorize?        train/test gaps; nearest-neighbour distances of samples to train vs test images
4. How good are the samples?      Fréchet distance, precision/recall in a classifier's feature space; Inception FID

Everything reads the run folder and the data it names; nothing reaches into the trainer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaekit.classifier import FeatureSpace, feature_space
from vaekit.data import Split, load_dataset, split_off, to_float
from vaekit.errors import VaekitError
from vaekit.model import VAE
from vaekit.objectives import iwae_bound
from vaekit.runs import Run, atomic_write, atomic_write_json
from vaekit.sample_quality import frechet_distance, inception_fid, nearest, precision_recall

NEIGHBOUR_ROWS, NEIGHBOUR_COLUMNS = 8, 6  # neighbours.png: a sample and its 5 nearest training images per row
MAX_ROWS = 4096  # decoder evaluations per call: bounds memory at MAX_ROWS × pixels floats, whatever k is
SUBSET_SEED = 7


@dataclass
class LikelihoodReport:
    split: str
    images: int
    k: int
    neg_elbo: float  # nats per image, mean over images
    neg_elbo_se: float  # standard error of that mean
    nll: float  # −log p(x) estimated by the k-sample importance-weighted bound (an upper bound on the true NLL)
    nll_se: float
    bits_per_dim: float  # nll / (pixels · ln 2)
    reconstruction: float  # −E_q log p(x|z), nats
    kl: float  # KL(q(z|x) ‖ p(z)), nats
    data: str  # what exactly was scored


@dataclass
class KLReport:
    kl_per_dim: list[float]  # mean over the test split, nats, in latent order
    order: list[int]  # dimensions by decreasing KL
    activity: list[float]  # Cov_x(E_q[z_d]) (Burda et al. 2016, section 5.2)
    active_units: int
    threshold: float
    aggregate_mean: list[float]  # of q(z) = E_x q(z|x): E_x[mu]
    aggregate_var: list[float]  # E_x[sigma²] + Var_x(mu)
    aggregate_kl: (
        float  # KL(N(mean, diag var) ‖ N(0, I)) of the moment-matched aggregate posterior, or Σ_v KL to uniform
    )
    prior: str = "N(0, I)"


@dataclass
class NeighbourAudit:
    space: str  # "pixels" or "classifier features"
    mean_to_train: float
    mean_to_test: float
    ratio: float  # mean_to_train / mean_to_test: about 1 generalizes, well below 1 copies training images


@dataclass
class Generalization:
    train_neg_elbo: float
    test_neg_elbo: float
    neg_elbo_gap: float  # test − train
    train_nll: float
    test_nll: float
    nll_gap: float
    samples: int
    reference_images: int  # per side: train and test reference sets are the same size
    audits: list[NeighbourAudit] = field(default_factory=list)


@dataclass
class SampleQuality:
    samples: int
    reference_images: int
    feature_space: str
    classifier_test_accuracy: float | None
    frechet_distance: float
    precision: float
    recall: float
    inception_fid: float | None
    inception_note: str


@dataclass
class Evaluation:
    run: str
    dataset: str
    likelihood: list[LikelihoodReport]
    kl: KLReport
    generalization: Generalization | None
    sample_quality: SampleQuality | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- 1. likelihood ---------------------------------------------------------------------------------------------


def scoring_input(model: VAE, x: Tensor, generator: torch.Generator) -> tuple[Tensor, float, str]:
    """The float images to score, a per-image log-likelihood offset, and a line saying what was scored.

    A Gaussian density on 8-bit pixels is only comparable with a discrete likelihood after uniform dequantization:
    x̃ = (x + u)/256, u ~ U[0, 1), and log P(x) ≥ E_u[log p(x̃)] − D·log 256 (Theis et al. 2016).
    """
    pixels = math.prod(x.shape[1:])
    if model.config.likelihood == "bernoulli":
        binary = bool(((x == 0) | (x == x.max())).all()) if x.dtype == torch.uint8 else False
        what = (
            "fixed-seed binarized images" if binary else "grey values as Bernoulli targets (not a normalized density)"
        )
        return to_float(x), 0.0, what
    if x.dtype == torch.uint8:
        noise = torch.rand(x.shape, generator=generator)
        return (x.float() + noise) / 256, -pixels * math.log(256), "uniformly dequantized 8-bit pixels, − D·log 256"
    return x.float(), 0.0, "continuous values, as given"


@torch.inference_mode()
def likelihood_report(model: VAE, x: Tensor, split: str, k: int, seed: int = 0) -> LikelihoodReport:
    generator = torch.Generator().manual_seed(seed)
    x_scored, offset, what = scoring_input(model, x, generator)
    per_call = max(1, MAX_ROWS // k)  # images per call; iwae_bound chunks the samples within
    elbos, log_px, kls, bounds = [], [], [], []
    for start in range(0, len(x_scored), per_call):
        batch = x_scored[start : start + per_call]
        terms = model.elbo(batch, generator)
        elbos.append(terms.elbo.double() + offset)
        log_px.append(terms.log_px.double() + offset)
        kls.append(terms.kl.double())
        bounds.append(iwae_bound(model, batch, k, generator, MAX_ROWS) + offset)
    elbo, bound = torch.cat(elbos), torch.cat(bounds)
    n, pixels = len(bound), math.prod(x.shape[1:])
    return LikelihoodReport(
        split=split, images=n, k=k,
        neg_elbo=-float(elbo.mean()), neg_elbo_se=float(elbo.std() / math.sqrt(n)) if n > 1 else 0.0,
        nll=-float(bound.mean()), nll_se=float(bound.std() / math.sqrt(n)) if n > 1 else 0.0,
        bits_per_dim=-float(bound.mean()) / (pixels * math.log(2)),
        reconstruction=-float(torch.cat(log_px).mean()), kl=float(torch.cat(kls).mean()), data=what,
    )  # fmt: skip


# ---- 2. the KL term ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def kl_report(model: VAE, x: Tensor, threshold: float = 0.01, chunk: int = 2000) -> KLReport:
    """Per-dimension KL and activity from the posteriors of every image in `x`.

    A unit is a Gaussian latent dimension, or a categorical latent variable (whose activity sums over its K
    category probabilities)."""
    mus, variances, kls = [], [], []
    for start in range(0, len(x), chunk):
        posterior = model.encode(to_float(x[start : start + chunk]))
        mus.append(posterior.mean.double())
        variances.append(posterior.variance.double())
        kls.append(posterior.kl_per_dim().double())
    mu, var, kl = torch.cat(mus), torch.cat(variances), torch.cat(kls).mean(0)
    per_entry = mu.var(0, unbiased=False)
    activity = per_entry.view(len(kl), -1).sum(-1)
    agg_mean, agg_var = mu.mean(0), var.mean(0) + per_entry
    agg_kl = type(posterior).aggregate_kl(agg_mean, agg_var, model.config.categories)
    return KLReport(
        kl_per_dim=kl.tolist(), order=kl.argsort(descending=True).tolist(), activity=activity.tolist(),
        active_units=int((activity > threshold).sum()), threshold=threshold,
        aggregate_mean=agg_mean.tolist(), aggregate_var=agg_var.tolist(), aggregate_kl=float(agg_kl),
        prior=f"Uniform({model.config.categories}) per variable" if model.categorical else "N(0, I)",
    )  # fmt: skip


# ---- 3 and 4. samples against data ---------------------------------------------------------------------------


def neighbour_audit(samples: Tensor, train: Tensor, test: Tensor, space: str) -> NeighbourAudit:
    """How far each sample is from its nearest training image versus its nearest test image (same-size sets)."""
    to_train, to_test = nearest(samples, train)[0].mean(), nearest(samples, test)[0].mean()
    return NeighbourAudit(space, float(to_train), float(to_test), float(to_train / to_test))


def sample_quality(samples: Tensor, test: Tensor, space: FeatureSpace | None) -> SampleQuality:
    """Fréchet distance and precision/recall between decoded samples and as many test images, in feature space."""
    reference = test[: len(samples)]
    if space is None:
        name, real, fake = "pixels (no labels to train a classifier)", to_float(reference), samples
    else:
        name, real, fake = "classifier features", space.embed(reference), space.embed(samples)
    precision, recall = precision_recall(real.flatten(1), fake.flatten(1))
    fid, fid_note = inception_fid(to_float(reference), samples)
    return SampleQuality(
        samples=len(samples), reference_images=len(reference), feature_space=name,
        classifier_test_accuracy=space.test_accuracy if space else None,
        frechet_distance=frechet_distance(real.flatten(1), fake.flatten(1)), precision=precision, recall=recall,
        inception_fid=fid, inception_note=fid_note,
    )  # fmt: skip


# ---- the report ------------------------------------------------------------------------------------------------


def evaluate(
    run: Run,
    k: int = 1000,
    split: str = "both",
    samples: int = 1000,
    seed: int = 0,
    train_images: int | None = None,
    write: bool = True,
) -> Evaluation:
    """Answer the four questions for `run`; with `write`, also save evaluation.json and the pictures in the run.

    `split` picks which likelihoods to estimate (test, train or both); the generalization section needs both.
    Train-side numbers use a fixed-seed subset of the training split the size of the test split (`train_images`
    to change it), so that train and test are compared like for like and cost the same.
    """
    if split not in ("test", "train", "both"):
        raise VaekitError(f"--split {split!r}: use test, train or both")
    if k < 1 or samples < 2:
        raise VaekitError("--k must be at least 1 and --samples at least 2")
    model = run.model.eval()
    data = load_dataset(run.config.data)
    grey = load_dataset(dataclasses.replace(run.config.data, binarize="none"))  # the images samples should resemble
    train_scored = _subset(data.train, train_images or len(data.test))
    reports = []
    if split in ("test", "both"):
        reports.append(likelihood_report(model, data.test.x, "test", k, seed))
    if split in ("train", "both"):
        reports.append(likelihood_report(model, train_scored.x, "train", k, seed))
    decoded = model.sample(samples, generator=torch.Generator().manual_seed(seed))
    space = feature_space(grey, seed=seed)
    size = min(len(grey.test), len(grey.train))  # equal-size reference sets for the neighbour audit and picture
    train_ref, test_ref = _subset(grey.train, size).x, grey.test.x[:size]
    evaluation = Evaluation(
        run=str(run.path),
        dataset=run.config.data.dataset,
        likelihood=reports,
        kl=kl_report(model, data.test.x),
        generalization=_generalization(reports, decoded, train_ref, test_ref, space) if split == "both" else None,
        sample_quality=sample_quality(decoded, grey.test.x, space),
        notes=_notes(run, reports),
    )
    if write:
        write_evaluation(run.path, evaluation, decoded, train_ref)
    return evaluation


def write_evaluation(run_dir: Path, evaluation: Evaluation, decoded: Tensor, train_x: Tensor) -> None:
    """evaluation.json, kl_per_dim.png, and neighbours.png (samples, each followed by its nearest training images)."""
    from vaekit.plots import image_grid, kl_per_dim_figure, save_image

    kl = evaluation.kl
    atomic_write(run_dir / "kl_per_dim.png", kl_per_dim_figure(kl.kl_per_dim, kl.activity, kl.threshold))
    shown, neighbours = decoded[:NEIGHBOUR_ROWS], NEIGHBOUR_COLUMNS - 1
    index = nearest(shown, to_float(train_x), k=neighbours)[1]  # (rows, neighbours)
    rows = torch.cat([shown.unsqueeze(1), to_float(train_x)[index]], dim=1)
    save_image(image_grid(rows.flatten(0, 1), columns=NEIGHBOUR_COLUMNS), run_dir / "neighbours.png")
    atomic_write_json(run_dir / "evaluation.json", evaluation.to_dict())


def _generalization(
    reports: list[LikelihoodReport], decoded: Tensor, train_ref: Tensor, test_ref: Tensor, space: FeatureSpace | None
) -> Generalization:
    test, train = reports
    size = len(train_ref)
    audits = [neighbour_audit(decoded, to_float(train_ref), to_float(test_ref), "pixels")]
    if space is not None:
        features = space.embed(decoded)
        audits.append(neighbour_audit(features, space.embed(train_ref), space.embed(test_ref), "classifier features"))
    return Generalization(
        train_neg_elbo=train.neg_elbo, test_neg_elbo=test.neg_elbo, neg_elbo_gap=test.neg_elbo - train.neg_elbo,
        train_nll=train.nll, test_nll=test.nll, nll_gap=test.nll - train.nll,
        samples=len(decoded), reference_images=size, audits=audits,
    )  # fmt: skip


def _subset(split: Split, size: int) -> Split:
    return split if size >= len(split) else split_off(split, size, SUBSET_SEED)[1]


def _notes(run: Run, reports: list[LikelihoodReport]) -> list[str]:
    notes = ["NLL: importance-weighted bound (Burda et al. 2016), nats per image; ± one standard error over images"]
    if run.config.model.latent == "categorical":
        notes.append("categorical latents: the bound and the ELBO use the discrete posterior (exact one-hot samples)")
    if reports and reports[0].data.startswith("grey"):
        notes.append("grey values as Bernoulli targets: numbers are not comparable with binarized-MNIST papers")
    return notes
