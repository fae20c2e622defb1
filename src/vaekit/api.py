"""The Python API's entry points, composed from the stages: training writes the run, analysis draws its pictures."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from vaekit.config import TrainConfig
from vaekit.training import loop
from vaekit.training.callbacks import Callback
from vaekit.training.runs import Run


def train(
    config: TrainConfig | None, out: str | Path, *, resume: bool = False, callbacks: Iterable[Callback] = ()
) -> Run:
    """Train a VAE into the run folder `out` and draw its pictures; with `resume=True`, continue the run found there;
    `callbacks` (`vaekit.Callback`) hear of each step, epoch and the run's end. See `vaekit.training.loop.train`."""
    from vaekit.analysis.plots import write_run_pictures  # matplotlib is only needed once training is done

    return loop.train(config, out, resume=resume, callbacks=callbacks, pictures=write_run_pictures)
