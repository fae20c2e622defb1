"""`--logger tensorboard`: each epoch's scalars and pictures as TensorBoard event files in RUN/tensorboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vaekit.errors import VaekitError
from vaekit.files import ensure_folder, not_a_folder
from vaekit.tracking.pictures import epoch_pictures
from vaekit.training.callbacks import Callback, EpochEnd, RunEnd, RunStart

FOLDER = "tensorboard"


class TensorBoardLogger(Callback):
    """Writes with torch's SummaryWriter; the step of every scalar and picture is the epoch (1-based), so a resumed
    run continues its curves where they stopped."""

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise VaekitError(
                "--logger tensorboard needs the tensorboard package: pip install 'vaekit[tensorboard]'"
            ) from None
        self.writer_class = SummaryWriter
        self.writer: Any = None
        self.seed = 0

    def before_run(self, run_dir: Path) -> None:
        """RUN/tensorboard must be a real folder or absent: a file there would fail after the run started, and a
        symbolic link would send the event files out of the run."""
        refusal = not_a_folder(run_dir / FOLDER)
        if refusal is not None:
            raise VaekitError(f"{refusal} (--logger tensorboard writes its event files there)")

    def on_run_start(self, start: RunStart) -> None:
        ensure_folder(start.run_dir / FOLDER)  # again, now that the run holds its lock
        self.writer = self.writer_class(log_dir=str(start.run_dir / FOLDER))
        self.seed = start.config.seed

    def on_epoch_end(self, end: EpochEnd) -> None:
        for name, value in end.scalars().items():
            self.writer.add_scalar(name, value, end.epoch)
        for name, picture in epoch_pictures(end, self.seed).items():
            pixels = np.asarray(picture)
            self.writer.add_image(name, pixels, end.epoch, dataformats="HW" if pixels.ndim == 2 else "HWC")
        self.writer.flush()

    def on_run_end(self, end: RunEnd) -> None:
        if self.writer is not None:
            self.writer.close()
