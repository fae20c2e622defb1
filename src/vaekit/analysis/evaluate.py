"""Honest evaluation of a trained run: four questions, one report.

1. How likely is held-out data?   importance-weighted log-likelihood, negative ELBO, bits/dim, reconstruction error
2. What does the KL term do?      KL per latent dimension, active units, the aggregate posterior against N(0, I)
3. Generalize or memorize?        train/test gaps; then the copying audit of samples against the whole training set
4. How good are the samples?      Fréchet distance, precision/recall in a classifier's feature space; Inception FID

Every split is scored on what the run's likelihood scores (`vaekit.data.scoring`). A plain autoencoder has no ELBO, no
likelihood bound and no KL term: for it, questions 1 and 3 are answered with reconstruction error, and 2 not at all.
Everything reads the run folder and the data it names; nothing reaches into the trainer. Each function runs where
the model is: images move to its device at the boundary, noise is drawn there, and only results come back.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaekit.analysis.classifier import FeatureSpace, feature_space
from vaekit.analysis.copying import MAX_HELD_OUT, CopyingAudit, copying_audit
from vaekit.analysis.sample_quality import frechet_distance, inception_fid, nearest, precision_recall
from vaekit.config import DataConfig
from vaekit.data.scoring import Scoring
from vaekit.data.sources import Split, load_dataset, split_off, to_float
from vaekit.devices import accumulate_dtype, generator_on
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, atomic_write_json
from vaekit.model.hierarchy import layer_sizes_of, log_weights_above
from vaekit.model.objectives import bits_per_dim, chunked_bound, iwae_bound
from vaekit.model.vae import VAE
from vaekit.training.distributed import Ranks
from vaekit.training.runs import Run

NEIGHBOUR_ROWS, NEIGHBOUR_COLUMNS = 8, 6  # neighbours.png: a sample and its 5 nearest training images per row
Progress = Callable[[str, int, int], None]  # (what is being scored, calls done, calls in all): for a progress bar
MAX_ROWS = 4096  # decoder evaluations per call: bounds memory at MAX_ROWS × pixels floats, whatever k is
SUBSET_SEED = 7
NO_BOUND = (
    "an autoencoder has no ELBO and no likelihood bound (its code is a point, not a distribution): "
    "reported are its reconstruction error and sample quality"
)


@dataclass
class LikelihoodReport:
    split: str
    images: int
    k: int  # importance samples per image; 0 for an autoencoder, which has no bound to estimate
    neg_elbo: float | None  # nats per image, mean over images; None for an autoencoder
    neg_elbo_se: float | None  # standard error of that mean
    nll: float | None  # −log p(x) estimated by the k-sample importance-weighted bound (an upper bound on the true NLL)
    nll_se: float | None
    bits_per_dim: float | None  # nll / (pixels · ln 2)
    reconstruction: float  # −E_q log p(x|z), nats (for an autoencoder −log p(x|code), its whole objective)
    kl: float | None  # KL(q(z|x) ‖ p(z)), nats; None for an autoencoder
    data: str  # what exactly was scored
    mse: float  # mean squared error per pixel between the scored images and their reconstructions


@dataclass
class KLReport:
    kl_per_dim: list[float]  # mean over the test split, nats, in latent order
    order: list[int]  # dimensions by decreasing KL
    activity: list[float]  # Cov_x(E_q[z_d]) (Burda et al. 2016, section 5.2)
    active_units: int
    threshold: float
    aggregate_mean: list[float]  # of q(z) = E_x q(z|x): E_x[mu]
    aggregate_var: list[float]  # E_x[sigma²] + Var_x(mu)
    # KL(N(mean, diag var) ‖ N(0, I)) of the moment-matched aggregate posterior, or Σ_v KL to uniform; None for a
    # learned prior (no closed form)
    aggregate_kl: float | None
    prior: str = "N(0, I)"
    layer_sizes: list[int] = field(default_factory=list)  # a hierarchy's D1 … DL (kl_per_dim in that order); else []


@dataclass
class Generalization:
    train_neg_elbo: float | None  # the ELBO and NLL rows are None for an autoencoder
    test_neg_elbo: float | None
    neg_elbo_gap: float | None  # test − train
    train_nll: float | None
    test_nll: float | None
    nll_gap: float | None
    train_reconstruction: float
    test_reconstruction: float
    reconstruction_gap: float
    samples: int
    reference_images: int  # the training images every sample is compared with: the whole training split
    audits: list[CopyingAudit] = field(default_factory=list)


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
    kl: KLReport | None  # None for an autoencoder: no KL term, no noise, no units to call active
    generalization: Generalization | None
    sample_quality: SampleQuality | None
    notes: list[str] = field(default_factory=list)
    weights_epoch: int | None = None  # the epoch whose weights were scored (`vaekit train --select` chose it)
    weights: str = ""  # the same, in words: which epoch of how many, and the rule that chose it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- 1. likelihood ---------------------------------------------------------------------------------------------


def scoring_input(
    model: VAE, x: Tensor, generator: torch.Generator, data: DataConfig | None = None
) -> tuple[Tensor, float, str]:
    """The float images to score, a per-image log-likelihood offset, and a line saying what was scored
    (see `vaekit.data.scoring`; `data` is the run's data config, which says whether it binarizes dynamically), on the
    model's device."""
    scoring = Scoring.of(model.config, data)
    return scoring.input(x.to(model.device), generator), scoring.offset(x), scoring.describe(x)


def mean_and_se(values: Tensor) -> tuple[float, float]:
    """Mean over images and its standard error."""
    n = len(values)
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else 0.0


def likelihood_report(
    model: VAE,
    x: Tensor,
    split: str,
    k: int,
    seed: int = 0,
    data: DataConfig | None = None,
    ranks: Ranks = Ranks(),
    y: Tensor | None = None,
) -> LikelihoodReport:
    """The ELBO, the k-sample bound and the reconstruction error of the images `x` (see `likelihood_scores`)."""
    return likelihood_scores(model, x, split, k, seed, data, ranks, y)[0]


@dataclass
class ImageTerms:
    """Each image's terms, float64 on the CPU, in the order of the images: what a report averages and `vaekit score`
    writes row by row."""

    log_px: Tensor  # E_q log p(x|z) from one draw, with the scoring offset (dequantization's −D·log 256)
    kl: Tensor
    bound: Tensor | None  # the k-sample importance-weighted bound on log p(x); None for an autoencoder
    squared: Tensor  # mean squared error per pixel of the reconstruction from the posterior mean
    data: str  # what exactly was scored
    # A hierarchy's (`vaekit.model.hierarchy`), else None: L>j, the k-sample bound with the j lowest layers at their
    # conditional prior's mean (`log_weights_above`), j = 1 … L−1, (N, L−1); and each layer's KL given the layers
    # above, (N, L)
    bounds_above: Tensor | None = None
    kl_layers: Tensor | None = None


@torch.inference_mode()
def image_terms(
    model: VAE,
    x: Tensor,
    k: int,
    seed: int = 0,
    data: DataConfig | None = None,
    ranks: Ranks = Ranks(),
    y: Tensor | None = None,
    progress: Progress | None = None,
    label: str = "images",
) -> ImageTerms:
    """The ELBO's terms, the k-sample bound and the reconstruction error of each image of `x`, scored as the run
    scores them; for an autoencoder the bound is None, since it has neither an ELBO nor a bound. A conditional model
    scores each image given its label in `y`: the bounds are then on log p(x|y).

    The images go in calls of a few at a time, each with its own seed, so that under torchrun every rank takes every
    W-th call and scores those images exactly as one process would: each image once, no padding; the per-image
    values are then summed over ranks (every other rank holds zeros there)."""
    device = model.device
    generator, wide = generator_on(device, seed), accumulate_dtype(device)
    x_scored, offset, what = scoring_input(model, x, generator, data)
    bounded = model.posterior.has_density
    per_call = max(1, MAX_ROWS // k) if bounded else MAX_ROWS  # images per call; iwae_bound chunks the samples within
    n = len(x_scored)
    log_px, kl, bound, squared = (torch.zeros(n, dtype=wide, device=device) for _ in range(4))
    sizes = layer_sizes_of(model)
    above, kl_layers = torch.zeros(n, max(0, len(sizes) - 1), dtype=wide), torch.zeros(n, len(sizes), dtype=wide)
    above, kl_layers = above.to(device), kl_layers.to(device)
    mine = [call for call in range(math.ceil(n / per_call)) if call % ranks.world == ranks.rank]
    for done, call in enumerate(mine, start=1):
        start = call * per_call
        generator.manual_seed(seed + 1 + call)
        rows = slice(start, start + per_call)
        batch, labels = x_scored[rows], None if y is None else y[rows]
        terms = model.elbo(batch, generator, y=labels)
        log_px[rows], kl[rows] = terms.log_px.to(wide) + offset, terms.kl.to(wide)
        squared[rows] = (model.reconstruct(batch, labels) - batch).to(wide).pow(2).flatten(1).mean(1)
        if bounded:
            bound[rows] = iwae_bound(model, batch, k, generator, MAX_ROWS, labels).to(wide) + offset
        if sizes and terms.kl_units is not None:
            per_layer = torch.split(terms.kl_units, sizes, dim=-1)
            kl_layers[rows] = torch.stack([units.sum(-1) for units in per_layer], -1).to(wide)
        for j in range(1, len(sizes)):
            draw = functools.partial(log_weights_above, model, batch, j, generator=generator, at_mean=True)
            above[rows, j - 1] = chunked_bound(draw, len(batch), k, MAX_ROWS).to(wide) + offset
        if progress is not None:
            progress(label, done, len(mine))
    for values in (log_px, kl, bound, squared, above, kl_layers):
        if values.numel():  # the same on every rank
            ranks.sum(values)
    cpu = [values.double().cpu() for values in (log_px, kl, bound, squared, above, kl_layers)]
    layered = cpu[4:] if sizes else [None, None]
    return ImageTerms(cpu[0], cpu[1], cpu[2] if bounded else None, cpu[3], what, *layered)


def likelihood_scores(
    model: VAE,
    x: Tensor,
    split: str,
    k: int,
    seed: int = 0,
    data: DataConfig | None = None,
    ranks: Ranks = Ranks(),
    y: Tensor | None = None,
    progress: Progress | None = None,
) -> tuple[LikelihoodReport, Tensor | None]:
    """The report of the images `x` (`image_terms`, averaged over them, with standard errors), and each image's NLL
    bound (float64, on the CPU; None for an autoencoder): what paired comparisons of two runs on the same images
    need."""
    label = f"scoring the {split} split" + (f", k = {k}" if model.posterior.has_density else "")
    terms = image_terms(model, x, k, seed, data, ranks, y, progress, label)
    reconstruction, pixels = terms.log_px, math.prod(x.shape[1:])
    report = LikelihoodReport(
        split=split, images=len(x), k=0, neg_elbo=None, neg_elbo_se=None, nll=None, nll_se=None,
        bits_per_dim=None, reconstruction=-float(reconstruction.mean()), kl=None, data=terms.data,
        mse=float(terms.squared.mean()),
    )  # fmt: skip
    if terms.bound is None:
        return report, None
    (elbo, elbo_se), (mean_bound, bound_se) = mean_and_se(reconstruction - terms.kl), mean_and_se(terms.bound)
    return dataclasses.replace(
        report, k=k, neg_elbo=-elbo, neg_elbo_se=elbo_se, nll=-mean_bound, nll_se=bound_se,
        bits_per_dim=float(bits_per_dim(-mean_bound, pixels)), kl=float(terms.kl.mean()),
    ), -terms.bound  # fmt: skip


# ---- 2. the KL term ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def kl_report(model: VAE, x: Tensor, threshold: float = 0.01, chunk: int = 2000, y: Tensor | None = None) -> KLReport:
    """Per-dimension KL and activity from the posteriors of every image in `x` (given its label in `y`, for a
    conditional model).

    A unit is a Gaussian latent dimension, or a categorical latent variable (whose activity sums over its K
    category probabilities). An autoencoder's KL is 0 by construction, so its dimensions are ordered by activity
    alone (the explorer and traversals still need an order); `evaluate` reports no KL section for it."""
    device = model.device
    scoring, generator, wide = Scoring.of(model.config), generator_on(device, 0), accumulate_dtype(device)
    # A learned prior has no KL per unit; each unit's KL to N(0, 1) then stands in, and the report says so.
    stand_in = False
    mus, variances, kls = [], [], []
    for start in range(0, len(x), chunk):
        labels = None if y is None else y[start : start + chunk]
        posterior = model.encode(scoring.input(x[start : start + chunk].to(device), generator), labels)
        mus.append(posterior.mean.to(wide))
        variances.append(posterior.variance.to(wide))
        units = model.prior.kl_per_unit(posterior)
        if units is None:
            units, stand_in = posterior.kl_per_dim(), True  # type: ignore[union-attr]
        kls.append(units.to(wide))
    mu, var, kl = torch.cat(mus), torch.cat(variances), torch.cat(kls).mean(0)
    per_entry = mu.var(0, unbiased=False)
    activity = per_entry.view(len(kl), -1).sum(-1)
    agg_mean, agg_var = mu.mean(0), var.mean(0) + per_entry
    agg_kl = model.prior.aggregate_kl(agg_mean, agg_var)
    return KLReport(
        kl_per_dim=kl.tolist(),
        order=(kl if model.posterior.has_density else activity).argsort(descending=True).tolist(),
        activity=activity.tolist(),
        active_units=int((activity > threshold).sum()), threshold=threshold,
        aggregate_mean=agg_mean.tolist(), aggregate_var=agg_var.tolist(),
        aggregate_kl=None if agg_kl is None else float(agg_kl),
        prior=model.prior.describe() + ("; KL per unit shown against N(0, I)" if stand_in else ""),
        layer_sizes=layer_sizes_of(model),
    )  # fmt: skip


# ---- 3 and 4. samples against data ---------------------------------------------------------------------------


def sample_quality(samples: Tensor, test: Tensor, space: FeatureSpace | None) -> SampleQuality:
    """Fréchet distance and precision/recall between decoded samples and as many test images, in feature space (the
    classifier runs on its own device), on the samples' device."""
    reference = test[: len(samples)]
    if space is None:
        name, real, fake = "pixels (no labels to train a classifier)", to_float(reference.to(samples.device)), samples
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
    prior_samples: int = 1000,
    seed: int = 0,
    train_images: int | None = None,
    write: bool = True,
    ranks: Ranks = Ranks(),
    progress: Progress | None = None,
) -> Evaluation:
    """Answer the four questions for `run`; with `write`, also save evaluation.json and the pictures in the run.

    `split` picks which likelihoods to estimate (test, train or both); the generalization section needs both.
    Train-side numbers use a fixed-seed subset of the training split the size of the test split (`train_images`
    to change it), scored like the test split (a fixed-seed binarized draw when the run binarizes dynamically), so
    that train and test are compared like for like and cost the same. Under torchrun the importance-weighted
    bounds, the costly part, are shared out over `ranks`; the rest is rank 0's, which also writes, and the other
    ranks return the likelihoods alone.
    """
    if split not in ("test", "train", "both"):
        raise VaekitError(f"--split {split!r}: use test, train or both")
    if k < 1 or prior_samples < 2:
        raise VaekitError("--k must be at least 1 and --prior-samples at least 2")
    model = run.model.eval()
    model.check_sampling(prior_samples, "lower --prior-samples")  # before the data is loaded and the bounds computed
    data = load_dataset(run.config.data)
    grey = load_dataset(dataclasses.replace(run.config.data, binarize="none"))  # the images samples should resemble
    train_scored = _subset(data.train, train_images or len(data.test))
    scored = []
    if split in ("test", "both"):
        test = data.test
        scored.append(likelihood_scores(model, test.x, "test", k, seed, run.config.data, ranks, test.y, progress))
    if split in ("train", "both"):
        train_y = train_scored.y
        train_x = train_scored.x
        scored.append(likelihood_scores(model, train_x, "train", k, seed, run.config.data, ranks, train_y, progress))
    reports = [report for report, _ in scored]
    per_image = {report.split: nll for report, nll in scored if nll is not None}
    if not ranks.main:  # the classifier, the samples and the KL anatomy are rank 0's alone
        return Evaluation(
            str(run.path), run.config.data.dataset, reports, None, None, None, [], run.weights_epoch, run.weights_text()
        )
    generator = torch.Generator().manual_seed(seed)  # prior draws: on the CPU
    decoded = model.sample(prior_samples, generator, _sample_labels(model, grey.test, prior_samples))
    space = feature_space(grey, seed=seed, device=model.device)
    train_ref, test_ref = grey.train.x, grey.test.x  # the whole training split: a copy of any image must show
    evaluation = Evaluation(
        run=str(run.path),
        dataset=run.config.data.dataset,
        likelihood=reports,
        kl=kl_report(model, data.test.x, y=data.test.y) if model.posterior.has_density else None,
        generalization=_generalization(reports, decoded, train_ref, test_ref, space) if split == "both" else None,
        sample_quality=sample_quality(decoded, grey.test.x, space),
        notes=_notes(run, reports),
        weights_epoch=run.weights_epoch,
        weights=run.weights_text(),
    )
    if write and ranks.main:
        write_evaluation(run.path, evaluation, decoded, train_ref, per_image)
    return evaluation


PER_IMAGE = "per_image_nll.json"


def write_evaluation(
    run_dir: Path, evaluation: Evaluation, decoded: Tensor, train_x: Tensor, per_image: dict[str, Tensor] | None = None
) -> None:
    """evaluation.json, neighbours.png (samples, each followed by its nearest training images), kl_per_dim.png
    unless the model has no KL term, and per_image_nll.json: each scored image's NLL bound by split, in the split's
    order, so two runs can be compared image by image (`paired_difference`)."""
    from vaekit.analysis.plots import image_grid, kl_per_dim_figure, save_image

    kl = evaluation.kl
    if kl is not None:
        atomic_write(run_dir / "kl_per_dim.png", kl_per_dim_figure(kl.kl_per_dim, kl.activity, kl.threshold))
    shown, neighbours = decoded[:NEIGHBOUR_ROWS].cpu(), NEIGHBOUR_COLUMNS - 1
    index = nearest(shown, to_float(train_x), k=neighbours)[1]  # (rows, neighbours)
    rows = torch.cat([shown.unsqueeze(1), to_float(train_x)[index]], dim=1)
    save_image(image_grid(rows.flatten(0, 1), columns=NEIGHBOUR_COLUMNS), run_dir / "neighbours.png")
    atomic_write_json(run_dir / "evaluation.json", evaluation.to_dict())
    if per_image:
        k = next(report.k for report in evaluation.likelihood)
        bounds = {split: [round(float(v), 4) for v in nll] for split, nll in per_image.items()}
        atomic_write_json(run_dir / PER_IMAGE, {"k": k, "nats": "−log p(x) bound per image", **bounds})


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """The mean of a − b over the same images, and its 95% interval (± 1.96 standard errors of the paired
    differences): how two runs compare on one test set, with the images' own spread cancelled out."""
    if len(a) != len(b) or len(a) < 2:
        raise VaekitError(f"a paired difference needs the same images on both sides, got {len(a)} and {len(b)}")
    differences = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)
    mean, se = float(differences.mean()), float(differences.std() / math.sqrt(len(differences)))
    return mean, mean - 1.96 * se, mean + 1.96 * se


def _generalization(
    reports: list[LikelihoodReport], decoded: Tensor, train_ref: Tensor, test_ref: Tensor, space: FeatureSpace | None
) -> Generalization:
    test, train = reports
    size = len(train_ref)
    held_out = test_ref[:MAX_HELD_OUT]
    audits = [copying_audit(decoded, to_float(train_ref), to_float(held_out), "pixels")]
    if space is not None:
        features = space.embed(decoded)
        audits.append(copying_audit(features, space.embed(train_ref), space.embed(held_out), "classifier features"))
    return Generalization(
        train_neg_elbo=train.neg_elbo, test_neg_elbo=test.neg_elbo, neg_elbo_gap=_gap(test.neg_elbo, train.neg_elbo),
        train_nll=train.nll, test_nll=test.nll, nll_gap=_gap(test.nll, train.nll),
        train_reconstruction=train.reconstruction, test_reconstruction=test.reconstruction,
        reconstruction_gap=test.reconstruction - train.reconstruction,
        samples=len(decoded), reference_images=size, audits=audits,
    )  # fmt: skip


def _sample_labels(model: VAE, test: Split, samples: int) -> Tensor | None:
    """For a conditional model, the classes to sample: the test labels in order (repeated as needed), so the samples'
    classes match the reference images they are compared with (the first test images)."""
    if not model.conditional or test.y is None:
        return None
    return test.y[torch.arange(samples) % len(test.y)]


def _gap(test: float | None, train: float | None) -> float | None:
    return None if test is None or train is None else test - train


def _subset(split: Split, size: int) -> Split:
    return split if size >= len(split) else split_off(split, size, SUBSET_SEED)[1]


def _notes(run: Run, reports: list[LikelihoodReport]) -> list[str]:
    notes = [
        NO_BOUND
        if not run.model.posterior.has_density
        else "NLL: importance-weighted bound (Burda et al. 2016), nats per image; ± one standard error over images"
    ]
    if not run.model.posterior.continuous:
        notes.append("categorical latents: the bound and the ELBO use the discrete posterior (exact one-hot samples)")
    if reports and reports[0].data.startswith("grey"):
        notes.append("grey values as Bernoulli targets: numbers are not comparable with binarized-MNIST papers")
    return notes
