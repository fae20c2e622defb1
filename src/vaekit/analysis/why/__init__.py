"""`vaekit why`: the four reasons to reparameterize, measured on the user's own data, in one report.

1. gradients reach μ and σ (estimator variance and learning curves),  2. a continuous latent space (paths between
prior samples),  3. generalization rather than memorization,  4. a closed-form KL that keeps the codes regular.
`runs` decides and trains the runs, `measures` adds the new measures, `sections` measures each claim against its
control, `verdicts` turns numbers into sentences, `render` writes HTML and Markdown.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaekit.analysis.classifier import feature_space
from vaekit.analysis.why import continuity, generalization, gradients, kl, render
from vaekit.analysis.why.base import Context, Section, Settings
from vaekit.analysis.why.runs import VAE
from vaekit.data.sources import load_dataset
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, atomic_write_json
from vaekit.training.runs import Run

TITLE = "Why reparameterize? Four claims, measured"


@dataclass
class WhyReport:
    dataset: str
    runs: dict[str, str]  # role → run folder
    classifier_accuracy: float
    sections: list[Section]

    def intro(self) -> list[str]:
        roles = ", ".join(f"{role}: {path}" for role, path in self.runs.items())
        return [
            f"Dataset {self.dataset}. Runs by role: {roles}.",
            f"Features: the evaluation classifier's penultimate layer (test accuracy {self.classifier_accuracy:.1%}).",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "runs": self.runs,
            "classifier_accuracy": self.classifier_accuracy,
            "sections": [_finite(s.to_dict()) for s in self.sections],
        }


def _finite(value: Any) -> Any:
    """The numbers with NaN and infinities as null: JSON has no word for them (an SNR over zero variance is ∞)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def build_report(
    runs: dict[str, Run], settings: Settings | None = None, progress: Callable[[str, int, int], None] | None = None
) -> WhyReport:
    """Measure the four claims on `runs` (role → run; the VAE is required, every other role is a control);
    `progress` hears of each claim measured ("claims measured", done, 4)."""
    settings = settings or Settings()
    vae = runs[VAE]
    shape = vae.config.model.input_shape
    for role, run in runs.items():
        if run.config.model.input_shape != shape:
            raise VaekitError(
                f"the {role} run takes {run.config.model.input_shape} images, the VAE {shape}: give runs of one dataset"
            )
    data = load_dataset(vae.config.data)
    grey = load_dataset(dataclasses.replace(vae.config.data, binarize="none"))
    space = feature_space(grey, seed=settings.seed, device=vae.model.device)
    if space is None:
        raise VaekitError(
            f"{vae.config.data.dataset} has no labels, and the report measures in a classifier's features: "
            "use labelled data"
        )
    real = space.embed(grey.test.x[: settings.images])
    ctx = Context(runs, data, grey, space, real, settings)
    measured = []
    claims = (gradients.gradients, continuity.continuity, generalization.generalization, kl.kl)
    for done, claim in enumerate(claims, start=1):
        measured.append(claim(ctx))
        if progress is not None:
            progress("claims measured", done, len(claims))
    return WhyReport(
        vae.config.data.dataset, {r: str(run.path) for r, run in runs.items()}, space.test_accuracy, measured
    )


def write_report(report: WhyReport, out: Path) -> list[Path]:
    """out/report.html (self-contained), out/report.md with out/figures/*.png, and out/report.json."""
    intro = report.intro()
    for section in report.sections:
        for index, (_, png) in enumerate(section.figures):
            atomic_write(out / render.figure_name(section, index), png)
    written = [out / "report.html", out / "report.md", out / "report.json"]
    atomic_write(written[0], render.to_html(TITLE, intro, report.sections).encode())
    atomic_write(written[1], render.to_markdown(TITLE, intro, report.sections).encode())
    atomic_write_json(written[2], report.to_dict())
    return written


def summary(report: WhyReport) -> list[str]:
    """One line per claim: its title, number and sentence; then what is missing."""
    lines = []
    for section in report.sections:
        lines.append(f"{section.title}  [{section.headline}]")
        lines.append(f"   {section.verdict}")
        lines += [f"   {line}" for line in section.missing]
    return lines


__all__ = ["Settings", "WhyReport", "build_report", "summary", "write_report"]
