"""A rich progress bar for the training loop: one live bar per epoch and a summary line when it ends."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from vaekit.training.callbacks import Callback, EpochEnd, RunEnd, StepEnd


class ProgressBar(Callback):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.2f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.epoch = 0

    def on_step_end(self, step: StepEnd) -> None:
        if step.epoch != self.epoch:  # a new epoch: a fresh bar
            if self.task is None:
                self.progress.start()
            else:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task("train", total=step.steps, epoch=f"{step.epoch}/{step.epochs}", loss=0.0)
            self.epoch = step.epoch
        self.progress.update(self.task, completed=step.step, loss=step.loss)

    def on_epoch_end(self, end: EpochEnd) -> None:
        train, val = end.record["train"], end.record["val"]
        line = f"epoch {end.epoch:>3}  train −ELBO {-train['elbo']:8.2f}"
        line += f"  (recon {-train['log_px']:.2f}, KL {train['kl']:.2f})"
        if val:
            line += f"  val −ELBO {-val['elbo']:8.2f}"
        self.progress.console.print(line + f"  {end.record['seconds']:.1f}s", highlight=False, soft_wrap=True)

    def on_run_end(self, end: RunEnd) -> None:
        self.progress.stop()
