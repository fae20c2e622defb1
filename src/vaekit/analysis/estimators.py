"""Why reparameterize? The gradient-estimator lab: the same ELBO gradient, estimated three ways, many times.

For one fixed mini-batch, each estimator (see `vaekit.model.objectives.elbo`) produces `repeats` independent estimates
of ∇_φ ELBO for the encoder parameters φ. All three are unbiased, so their means agree; what differs is the spread.
Per parameter tensor and overall we report the trace of the covariance (the total variance), the signal-to-noise ratio
‖mean‖ / √trace, and the cosine between each estimator's mean and the pathwise one. Running sums on the model's device
(float64 where it has it, compensated float32 where not) keep memory at two vectors per estimator, whatever `repeats`
is.

The interval of each variance ratio is a bootstrap over the draws. The draws themselves (as many floats as the encoder
has weights) are not kept: each is folded into a count sketch of SKETCH_BUCKETS buckets (each weight hashed to one
bucket with a random sign, so E‖S g‖² = ‖g‖² and the sketched covariance's trace estimates the true one), and the
resampled sketches give the ratio's relative spread, applied to the exact ratio.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vaekit.analysis.intervals import bootstrap
from vaekit.config import ELBO_ESTIMATORS as ESTIMATORS
from vaekit.data.scoring import Scoring
from vaekit.data.sources import load_dataset, split_off
from vaekit.devices import RunningSum, generator_on
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, atomic_write_json
from vaekit.model.posteriors import need_continuous, need_density
from vaekit.model.vae import VAE
from vaekit.training.runs import Run, build_model


@dataclass
class GradientStats:
    estimator: str
    parameter: str  # an encoder parameter's name, or "all"
    variance: float  # trace of the covariance of the estimates
    mean_norm: float  # ‖mean estimate‖
    snr: float  # ‖mean‖ / √variance
    cosine_to_reparam: float  # cosine between this estimator's mean and the pathwise estimator's mean


SKETCH_BUCKETS = 4096


@dataclass
class GradientReport:
    label: str  # "trained" or "initialisation"
    repeats: int
    batch_size: int
    samples: int
    stats: list[GradientStats] = field(default_factory=list)
    # estimator → the 95% bootstrap interval (over its draws and the pathwise ones) of its variance ratio to pathwise
    ratio_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def overall(self, estimator: str) -> GradientStats:
        return next(s for s in self.stats if s.estimator == estimator and s.parameter == "all")

    def variance_ratio(self, estimator: str) -> float:
        """How many times the pathwise estimator's variance this estimator has (overall)."""
        return self.overall(estimator).variance / self.overall("reparam").variance


class CountSketch:
    """A fixed linear map of the encoder's gradient to `buckets` numbers: each weight goes to one seeded bucket with a
    seeded sign, so E‖S g‖² = ‖g‖² over the hashing, for any g."""

    def __init__(self, params: Mapping[str, Tensor], buckets: int = SKETCH_BUCKETS, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.buckets = buckets
        self.index = {n: torch.randint(0, buckets, (p.numel(),), generator=generator) for n, p in params.items()}
        self.sign = {n: torch.randint(0, 2, (p.numel(),), generator=generator) * 2.0 - 1 for n, p in params.items()}
        device = next(iter(params.values())).device
        self.index = {n: i.to(device) for n, i in self.index.items()}
        self.sign = {n: s.to(device) for n, s in self.sign.items()}

    def __call__(self, grads: dict[str, Tensor]) -> Tensor:
        device = next(iter(self.index.values())).device
        sketch = torch.zeros(self.buckets, dtype=torch.float32, device=device)
        for name, g in grads.items():
            sketch.index_add_(0, self.index[name], g.float() * self.sign[name])
        return sketch


def estimate_moments(
    model: VAE,
    x: Tensor,
    estimator: str,
    repeats: int,
    samples: int,
    generator: torch.Generator,
    y: Tensor | None = None,
    sketch: CountSketch | None = None,
) -> tuple[dict[str, tuple[Tensor, Tensor]], Tensor | None]:
    """Mean and per-coordinate variance of `repeats` gradient estimates, for each encoder parameter; and with a
    `sketch`, each draw's sketch, (repeats, buckets) on the CPU."""
    params = {f"encoder.{name}": p for name, p in model.encoder.named_parameters()}
    sums = {name: RunningSum(p.numel(), p.device) for name, p in params.items()}
    squares = {name: RunningSum(p.numel(), p.device) for name, p in params.items()}
    sketched = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        (-model.elbo(x, generator, estimator, samples, y).elbo.mean()).backward()  # type: ignore[no-untyped-call]
        grads = {name: p.grad.detach().flatten() for name, p in params.items() if p.grad is not None}
        for name, g in grads.items():  # a parameter the loss does not reach adds zero
            sums[name].add(g.to(sums[name].dtype))
            squares[name].add(g.to(sums[name].dtype) ** 2)
        if sketch is not None:
            sketched.append(sketch(grads).cpu())
    model.zero_grad(set_to_none=True)
    moments = {}
    for name in params:
        mean = sums[name].total / repeats
        variance = (squares[name].total / repeats - mean**2).clamp_min(0) * repeats / max(1, repeats - 1)
        moments[name] = (mean, variance)
    return moments, torch.stack(sketched) if sketched else None


def sketched_trace(weights: Tensor, sketches: Tensor) -> Tensor:
    """The trace of the covariance of the sketched draws (n, buckets) under each resample's counts (B, n)."""
    s = sketches.double()
    n = weights.sum(1, keepdim=True)
    mean = weights @ s / n
    second = weights @ s.square() / n
    return (second - mean.square()).sum(1) * (n.squeeze(1) / (n.squeeze(1) - 1))


def ratio_interval(exact: float, sketches: Tensor, pathwise: Tensor, seed: int = 0) -> tuple[float, float]:
    """The bootstrap interval of an estimator's variance ratio to the pathwise one, both sets of draws resampled on
    their own: the sketched ratio's resampled spread, relative to its own full-sample value, applied to `exact`."""
    ones = [torch.ones(1, len(sketches), dtype=torch.float64), torch.ones(1, len(pathwise), dtype=torch.float64)]
    centre = float(sketched_trace(ones[0], sketches)[0] / sketched_trace(ones[1], pathwise)[0])
    low, high = bootstrap(
        lambda a, b: sketched_trace(a, sketches) / sketched_trace(b, pathwise), [sketches, pathwise], seed=seed
    )
    return exact * low / centre, exact * high / centre


def gradient_report(
    model: VAE,
    x: Tensor,
    repeats: int = 100,
    samples: int = 4,
    seed: int = 0,
    label: str = "trained",
    y: Tensor | None = None,
) -> GradientReport:
    """Compare the three estimators on one mini-batch `x` (float images, moved to the model's device; with their
    labels `y` for a conditional model)."""
    need_continuous(model.posterior, "the gradient lab")
    need_density(model.posterior, "the gradient lab")
    if repeats < 2 or samples < 2:
        raise VaekitError("gradient estimates need --repeats ≥ 2 and --samples ≥ 2 (for the baseline)")
    report = GradientReport(label, repeats, len(x), samples)
    x = x.to(model.device)
    params = {f"encoder.{name}": p for name, p in model.encoder.named_parameters()}
    sketch = CountSketch(params, seed=seed)
    measured = {
        e: estimate_moments(model, x, e, repeats, samples, generator_on(x.device, seed), y, sketch) for e in ESTIMATORS
    }
    moments = {e: m for e, (m, _) in measured.items()}
    names = list(moments["reparam"])
    for estimator in ESTIMATORS:
        for name in [*names, "all"]:
            chosen = names if name == "all" else [name]
            mean = torch.cat([moments[estimator][n][0] for n in chosen])
            variance = float(torch.cat([moments[estimator][n][1] for n in chosen]).sum())
            reference = torch.cat([moments["reparam"][n][0] for n in chosen])
            cosine = float(torch.nn.functional.cosine_similarity(mean, reference, dim=0))
            norm = float(mean.norm())
            snr = norm / math.sqrt(variance) if variance > 0 else math.inf
            report.stats.append(GradientStats(estimator, name, variance, norm, snr, cosine))
    pathwise = measured["reparam"][1]
    for estimator in ESTIMATORS[1:]:
        sketches = measured[estimator][1]
        assert sketches is not None and pathwise is not None
        interval = ratio_interval(report.variance_ratio(estimator), sketches, pathwise, seed)
        if all(map(math.isfinite, interval)):  # too few draws can leave none: the estimator then has no interval
            report.ratio_intervals[estimator] = interval
    return report


def gradient_lab(
    run: Run, repeats: int = 100, batch_size: int = 128, samples: int = 4, seed: int = 0, at_init: bool = False
) -> list[GradientReport]:
    """The lab on a run: a fixed-seed mini-batch of its training images, scored as training scores them (one
    fixed-seed binarization or dequantization draw), the trained encoder and optionally a fresh one; writes
    gradients.json and gradient_variance.png into the run."""
    from vaekit.analysis.plots import gradient_variance_figure

    data = load_dataset(run.config.data)
    batch = split_off(data.train, min(batch_size, len(data.train)), seed)[1]
    scoring, device = Scoring.of(run.config.model, run.config.data), run.model.device
    x = scoring.input(batch.x.to(device), generator_on(device, seed))
    reports = [gradient_report(run.model, x, repeats, samples, seed, "trained", batch.y)]
    if at_init:
        fresh = build_model(run.config).to(device)  # initialised on the CPU, so the same on every device
        reports.append(gradient_report(fresh, x, repeats, samples, seed, "initialisation", batch.y))
    atomic_write_json(run.path / "gradients.json", [dataclasses.asdict(r) for r in reports])
    figure = gradient_variance_figure([s for s in reports[0].stats if s.parameter != "all"], ESTIMATORS)
    atomic_write(run.path / "gradient_variance.png", figure)
    return reports
