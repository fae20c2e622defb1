"""What the four claims share: the cost settings, the section a claim fills in, and the context every claim reads
(the runs by role, the VAE's data, the evaluation classifier's features). A missing control is said, not failed on."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from vaekit.analysis.classifier import FeatureSpace
from vaekit.analysis.why.evidence import Evidence
from vaekit.analysis.why.runs import VAE
from vaekit.data.sources import Dataset, Split, split_off
from vaekit.training.runs import Run

SUBSET_SEED = 7  # the training images scored beside the test images, as `vaekit evaluate` picks them
CLAIMS = {  # key → (title, the claim in one sentence)
    "gradients": (
        "1. Gradients reach μ and σ",
        "The pathwise (reparameterized) ELBO gradient has less variance than the score-function one, even with a "
        "baseline.",
    ),
    "continuity": (
        "2. A continuous latent space",
        "Paths between samples of the prior decode to realistic images all the way.",
    ),
    "generalization": (
        "3. Generalization, not memorization",
        "The VAE's test − train NLL gap is smaller than a memorizing run's; its samples sit no nearer the training "
        "set than unseen images do.",
    ),
    "kl": (
        "4. A closed-form KL keeps the latent space regular",
        "The exact KL to N(0, I) keeps the aggregate posterior nearer the prior than an autoencoder's codes, even "
        "whitened; its weight β trades units for it.",
    ),
}


@dataclass
class Settings:
    """How much each measurement costs; the defaults suit Fashion-MNIST on a CPU in a few minutes."""

    repeats: int = 100  # gradient estimates per estimator
    batch_size: int = 128  # images in the gradient lab's fixed mini-batch
    k: int = 100  # importance samples per image for the NLL
    images: int = 2000  # test images (and as many training images) scored
    samples: int = 1000  # prior samples for the audits, the holes and sample quality
    paths: int = 200
    steps: int = 16
    seed: int = 0


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    key: str
    title: str
    claim: str
    headline: str = ""  # the section's number, as shown
    confirmed: bool = False
    verdict: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    missing: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    evidence: Evidence | None = None  # what the verdict rests on; None where a control is missing

    def to_dict(self) -> dict[str, Any]:
        """The section as report.json keeps it: no figures; the evidence with its verdict."""
        kept = {name: value for name, value in dataclasses.asdict(self).items() if name != "figures"}
        return {**kept, "evidence": None if self.evidence is None else self.evidence.to_dict()}

    @classmethod
    def start(cls, key: str) -> Section:
        return cls(key, *CLAIMS[key])


@dataclass
class Context:
    """What every claim reads: the runs by role, the VAE's data as scored, its grey images, the features."""

    runs: dict[str, Run]
    data: Dataset
    grey: Dataset
    space: FeatureSpace
    real: Tensor  # features of the grey test images
    settings: Settings

    @property
    def vae(self) -> Run:
        return self.runs[VAE]


def missing(role: str, what: str) -> str:
    return f"control missing: no {role} run, so {what} (give {role}=PATH with --runs, or let `vaekit why` train it)"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def subset(split: Split, size: int) -> Split:
    """A seeded subset of `size` examples (the whole split when it is no larger)."""
    return split if size >= len(split) else split_off(split, size, SUBSET_SEED)[1]


def final_loss(run: Run) -> float:
    """The last epoch's validation (else training) −ELBO: where a learning curve ends."""
    last = run.history[-1]
    return float(-(last.get("val") or last["train"])["elbo"])
