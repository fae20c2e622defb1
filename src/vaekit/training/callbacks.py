"""What the trainer tells the outside world, as one small interface.

The progress bar, the TensorBoard and MLflow loggers and a user's own code all subclass `Callback` and override the
moments they care about: a run starts, a step ends, an epoch ends, the run ends. Under torchrun only rank 0's
callbacks are called, so whatever they write is written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vaekit.config import TrainConfig
from vaekit.data.sources import Split
from vaekit.model.vae import VAE

STEP_EVERY = 20  # steps between StepEnd events: reading the loss waits for the device, so not every step


@dataclass(frozen=True)
class RunStart:
    """Training is about to start, or to resume: the run folder exists and holds config.json."""

    run_dir: Path
    config: TrainConfig
    model: VAE
    epochs_done: int  # 0, or the epochs a resumed run already has


@dataclass(frozen=True)
class StepEnd:
    """A training step ended; sent every `STEP_EVERY` steps and at each epoch's last step."""

    epoch: int  # 1-based
    epochs: int
    step: int  # steps done in this epoch
    steps: int
    loss: float  # the batch's negative objective, nats per example


@dataclass(frozen=True)
class EpochEnd:
    """An epoch ended and its checkpoint is saved; `record` is the line metrics.jsonl gained."""

    record: dict[str, Any]
    epochs: int
    lr: float
    samples_per_second: float  # training examples per second of the epoch's training pass
    model: VAE  # in eval mode; a callback that runs it must not touch the training randomness
    held_out: Split  # a few validation images (test images when there is no validation split), for pictures

    @property
    def epoch(self) -> int:
        return int(self.record["epoch"])

    def scalars(self) -> dict[str, float]:
        """Every number of the epoch under one flat name: train/elbo, train/beta, val/kl, ..., lr, samples_per_second,
        seconds, train_seconds; the names of metrics.jsonl, so a dashboard and the run folder speak alike."""
        flat = {
            f"{split}/{name}": float(value)
            for split in ("train", "val")
            for name, value in (self.record.get(split) or {}).items()
            if isinstance(value, int | float)
        }
        flat.update(lr=self.lr, samples_per_second=self.samples_per_second)
        clocks = ("seconds", "train_seconds")
        flat.update({clock: float(self.record[clock]) for clock in clocks if clock in self.record})
        return flat


@dataclass(frozen=True)
class RunEnd:
    """Training stopped. finished: metrics.json and the pictures are written; failed: an error stopped it (the last
    good checkpoint is kept); interrupted: Ctrl-C."""

    run_dir: Path
    history: list[dict[str, Any]]
    final: dict[str, Any] | None
    status: Literal["finished", "failed", "interrupted"]


class Callback:
    """Override any of the four moments; the others do nothing. An exception raised here stops training as any
    error would (a `KeyboardInterrupt` as Ctrl-C would), after the last good checkpoint. `before_run` is the place
    to refuse (with a VaekitError) what would fail later: it is called before anything is written."""

    def before_run(self, run_dir: Path) -> None:
        """Called before the run folder is locked or written: check what this callback will need (a folder, a
        server)."""

    def on_run_start(self, start: RunStart) -> None:
        """Called once, before the first epoch of this stretch of the run."""

    def on_step_end(self, step: StepEnd) -> None:
        """Called every `STEP_EVERY` steps and at each epoch's last step."""

    def on_epoch_end(self, end: EpochEnd) -> None:
        """Called after each epoch's validation and checkpoint."""

    def on_run_end(self, end: RunEnd) -> None:
        """Called once when training stops, however it stops."""


class Callbacks(Callback):
    """Several callbacks as one, called in the order given."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def before_run(self, run_dir: Path) -> None:
        for callback in self.callbacks:
            callback.before_run(run_dir)

    def on_run_start(self, start: RunStart) -> None:
        for callback in self.callbacks:
            callback.on_run_start(start)

    def on_step_end(self, step: StepEnd) -> None:
        for callback in self.callbacks:
            callback.on_step_end(step)

    def on_epoch_end(self, end: EpochEnd) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(end)

    def on_run_end(self, end: RunEnd) -> None:
        for callback in self.callbacks:
            callback.on_run_end(end)
