"""Why reparameterize? The gradient-estimator lab: the same ELBO gradient, estimated three ways, many times.

For one fixed mini-batch, each estimator (see `vaekit.model.objectives.elbo`) produces `repeats` independent estimates
of ∇_φ ELBO for the encoder parameters φ. All three are unbiased, so their means agree; what differs is the spread.
Per parameter tensor and overall we report the trace of the covariance (the total variance), the signal-to-noise ratio
‖mean‖ / √trace, and the cosine between each estimator's mean and the pathwise one. Running sums on the model's device
(float64 where it has it, compensated float32 where not) keep memory at two vectors per estimator, whatever `repeats`
is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

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


@dataclass
class GradientReport:
    label: str  # "trained" or "initialisation"
    repeats: int
    batch_size: int
    samples: int
    stats: list[GradientStats] = field(default_factory=list)

    def overall(self, estimator: str) -> GradientStats:
        return next(s for s in self.stats if s.estimator == estimator and s.parameter == "all")

    def variance_ratio(self, estimator: str) -> float:
        """How many times the pathwise estimator's variance this estimator has (overall)."""
        return self.overall(estimator).variance / self.overall("reparam").variance


def estimate_moments(
    model: VAE,
    x: Tensor,
    estimator: str,
    repeats: int,
    samples: int,
    generator: torch.Generator,
    y: Tensor | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Mean and per-coordinate variance of `repeats` gradient estimates, for each encoder parameter."""
    params = {f"encoder.{name}": p for name, p in model.encoder.named_parameters()}
    sums = {name: RunningSum(p.numel(), p.device) for name, p in params.items()}
    squares = {name: RunningSum(p.numel(), p.device) for name, p in params.items()}
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        (-model.elbo(x, generator, estimator, samples, y).elbo.mean()).backward()  # type: ignore[no-untyped-call]
        for name, p in params.items():
            if p.grad is not None:  # a parameter the loss does not reach adds zero
                g = p.grad.detach().flatten().to(sums[name].dtype)
                sums[name].add(g)
                squares[name].add(g**2)
    model.zero_grad(set_to_none=True)
    moments = {}
    for name in params:
        mean = sums[name].total / repeats
        variance = (squares[name].total / repeats - mean**2).clamp_min(0) * repeats / max(1, repeats - 1)
        moments[name] = (mean, variance)
    return moments


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
    moments = {e: estimate_moments(model, x, e, repeats, samples, generator_on(x.device, seed), y) for e in ESTIMATORS}
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
