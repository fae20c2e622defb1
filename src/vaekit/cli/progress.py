"""A rich progress bar for the training loop: one live bar per epoch and a summary line when it ends."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichReporter:
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

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=batches, epoch=f"{epoch + 1}/{epochs}", loss=float("nan"))

    def step(self, batches_done: int, loss: float) -> None:
        self.progress.update(self.task, completed=batches_done, loss=loss)

    def end_epoch(self, record: dict[str, Any]) -> None:
        train, val = record["train"], record["val"]
        line = f"epoch {record['epoch']:>3}  train −ELBO {-train['elbo']:8.2f}"
        line += f"  (recon {-train['log_px']:.2f}, KL {train['kl']:.2f})"
        if val:
            line += f"  val −ELBO {-val['elbo']:8.2f}"
        self.progress.console.print(line + f"  {record['seconds']:.1f}s", highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()
