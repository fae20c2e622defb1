"""The Python API's entry points, composed from the stages: training writes the run, analysis draws its pictures."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vaekit.config import TrainConfig
from vaekit.training import loop
from vaekit.training.callbacks import Callback
from vaekit.training.runs import Run

if TYPE_CHECKING:
    from vaekit.analysis.evaluate import Evaluation


def train(
    config: TrainConfig | None, out: str | Path, *, resume: bool = False, callbacks: Iterable[Callback] = ()
) -> Run:
    """Train a VAE into the run folder `out` and draw its pictures; with `resume=True`, continue the run found there;
    `callbacks` (`vaekit.Callback`) hear of each step, epoch and the run's end. See `vaekit.training.loop.train`."""
    from vaekit.analysis.plots import write_run_pictures  # matplotlib is only needed once training is done

    return loop.train(config, out, resume=resume, callbacks=callbacks, pictures=write_run_pictures)


def evaluate(
    run: str | Path,
    *,
    k: int = 1000,
    split: str = "both",
    prior_samples: int = 1000,
    seed: int = 0,
    device: str = "auto",
) -> Evaluation:
    """Evaluate the run folder `run` as `vaekit evaluate` does, with the same defaults: importance-weighted bounds on
    `split`, the KL term's anatomy, generalization and sample quality from `prior_samples` draws. Writes
    RUN/evaluation.json and its pictures, and returns the report (`.to_dict()` is that JSON).
    See `vaekit.analysis.evaluate.evaluate`."""
    from vaekit.analysis.evaluate import evaluate as evaluate_run  # the classifier and its imports load only here
    from vaekit.devices import resolve_device
    from vaekit.training.runs import load_run

    loaded = load_run(run, str(resolve_device(device)))
    return evaluate_run(loaded, k=k, split=split, prior_samples=prior_samples, seed=seed)
