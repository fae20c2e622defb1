"""What a run will hold, checked before the model is built: its shapes against the checkpoint it resumes, its weights
with their gradients, Adam's two moments and the weight average, and the largest pass (a training step or an
evaluation chunk), against the memory of the device it trains on.

The model is first built on the meta device, which allocates nothing, so that a config asking for a 17 GB model (a
fresh `--hidden 65536 65536`, or a run's config.json edited to it) is one line rather than the out-of-memory killer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from vaekit.config import TrainConfig
from vaekit.data.pack import IndexedImages
from vaekit.data.sources import Dataset
from vaekit.memory import require, tensor_bytes
from vaekit.model.objectives import objective_of
from vaekit.model.vae import VAE, stored_names
from vaekit.training.runs import check_shapes

OPTIMIZER_COPIES = 3  # gradients and Adam's two moments, each the size of the weights
BACKWARD_FACTOR = 2  # the backward pass holds gradients of the layer outputs beside the outputs themselves
PICTURE_SAMPLES = 64  # the samples.png grid (`vaekit.analysis.plots.write_run_pictures`)


def check_run_fits(
    config: TrainConfig, state: dict[str, Any] | None, state_path: Path, data: Dataset, device: torch.device,
    eval_chunk: int,
) -> None:  # fmt: skip
    """Refuse, in one line and before anything is allocated or written, a run whose model does not match its
    checkpoint or whose model, batch or data would not fit in memory."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = VAE(config.model)
    expected = model.state_dict()
    if state is not None:
        stored = {ours: state["model"][theirs] for ours, theirs in stored_names(state["model"], model).items()}
        check_shapes(
            {n: t.shape for n, t in expected.items()}, {n: list(t.shape) for n, t in stored.items()}, state_path
        )
    weights = tensor_bytes(list(expected.values()))
    copies = 1 + OPTIMIZER_COPIES + (1 if config.average_decay > 0 else 0)
    parameters = sum(p.numel() for p in model.parameters())
    smaller = "use a smaller model (--hidden, --latent-dim) or a device with more memory"
    if device.type != "cpu":  # the model is initialised on the CPU, then moved
        require(weights, f"a model of {parameters:,} parameters", smaller)
    require(weights * copies, f"training a model of {parameters:,} parameters", smaller, device)
    samples = objective_of(config).samples(config)
    per_rank = math.ceil(config.batch_size / max(1, config.world_size))
    step = BACKWARD_FACTOR * model.activation_bytes(per_rank, samples)
    evaluation = model.activation_bytes(min(eval_chunk, max(len(data.val), len(data.test))))
    # The end-of-run pictures decode PICTURE_SAMPLES draws, or for a conditional model a row of them per class.
    grid = model.classes * math.ceil(PICTURE_SAMPLES / model.classes) if model.conditional else PICTURE_SAMPLES
    pictures = model.activation_bytes(grid)
    on_device = 0 if device.type == "cpu" else _data_bytes(data)
    flags = f"--batch-size {config.batch_size}" + (f" and {samples} samples per image" if samples > 1 else "")
    require(
        weights * copies + max(step, evaluation, pictures) + on_device,
        f"training on {tuple(model.input_shape)} images with {flags}",
        "lower --batch-size" + (", --samples or --k" if samples > 1 else "") + ", or use smaller images or model",
        device,
    )


def _data_bytes(data: Dataset) -> int:
    """What moving the splits to an accelerator copies there: a pack's training split stays on disk."""
    tensors = [t for s in (data.train, data.val, data.test) for t in (s.x, s.y) if t is not None]
    return tensor_bytes([t for t in tensors if not isinstance(t, IndexedImages)])
