"""The two pictures a logger shows each epoch: prior samples from fixed noise (so epochs compare) and
reconstructions of the same held-out images."""

from __future__ import annotations

from PIL import Image

from vaekit.analysis.plots import reconstruction_grid, sample_grid
from vaekit.training.callbacks import EpochEnd

SAMPLES = 64


def epoch_pictures(end: EpochEnd, seed: int) -> dict[str, Image.Image]:
    """{"samples": ..., "reconstructions": ...}; runs the model under its own generator, never the training one."""
    held_out = end.held_out
    return {
        "samples": sample_grid(end.model, SAMPLES, seed),
        "reconstructions": reconstruction_grid(end.model, held_out.x, columns=len(held_out.x), y=held_out.y),
    }
