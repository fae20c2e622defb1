"""The run folder: everything a run leaves behind, written atomically, read back with clear errors.

config.json        TrainConfig (with format_version): enough to rebuild the model
model.safetensors  the latest weights, for everything downstream of training
state.pt           the resumable checkpoint: epoch, weights, optimizer and RNG state (tensors and plain data
                   only, read with weights_only=True); written last, so it is the authority after a crash
metrics.jsonl      one JSON object per finished epoch
metrics.json       the final evaluation on the test split
*.png              pictures
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from vaekit.config import TrainConfig
from vaekit.errors import VaekitError
from vaekit.model import VAE


def _default_mode() -> int:
    """What open() would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


DEFAULT_MODE = _default_mode()
CONFIG, WEIGHTS, STATE, HISTORY, FINAL = "config.json", "model.safetensors", "state.pt", "metrics.jsonl", "metrics.json"


def atomic_write(path: Path, data: bytes) -> None:
    """Write a temporary file beside `path`, fsync, rename it over `path`: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, DEFAULT_MODE)  # mkstemp creates 0600; a run folder is for sharing
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


@dataclass
class Run:
    """A trained (or training) run as read from its folder."""

    path: Path
    config: TrainConfig
    model: VAE
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one dict per epoch
    final: dict[str, Any] | None = None  # metrics.json, once training finished

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    atomic_write_json(run_dir / CONFIG, config.to_dict())


def read_config(run_dir: Path) -> TrainConfig:
    path = run_dir / CONFIG
    if not path.is_file():
        raise VaekitError(
            f"{run_dir} is not a vaekit run folder (no {CONFIG}): train one with `vaekit train --out {run_dir}`"
        )
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise VaekitError(f"{path} is not a valid vaekit config ({error}): restore it or train a new run") from None


def save_checkpoint(
    run_dir: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: list[dict[str, Any]],
) -> None:
    """End-of-epoch checkpoint. Order matters: state.pt is renamed into place last and names the epoch it holds."""
    atomic_write(run_dir / HISTORY, "".join(json.dumps(record) + "\n" for record in history).encode())
    weights = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS, save_safetensors(weights, metadata={"epoch": str(len(history))}))
    state = {
        "epoch": len(history),
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(run_dir / STATE, buffer.getvalue())


def load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE
    if not path.is_file():
        raise VaekitError(f"{run_dir} has no checkpoint ({STATE}): it never finished an epoch; train it again")
    try:
        state: dict[str, Any] = torch.load(path, weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise VaekitError(f"{path} is truncated or corrupt ({str(error)[:80]}): train the run again") from None
    return state


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / HISTORY
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_model(config: TrainConfig) -> VAE:
    """A freshly initialised model; initialisation is seeded so that runs are reproducible by construction."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VAE(config.model)


def load_weights(model: VAE, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights, turning a shape or name mismatch into one line that says which config they belong to."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in tensors:
            raise VaekitError(
                f"{source} lacks {name}: it was not trained with {source.parent / CONFIG}; retrain the run"
            )
        if tensors[name].shape != tensor.shape:
            raise VaekitError(
                f"{source} does not match {source.parent / CONFIG}: {name} has shape {list(tensors[name].shape)}, the "
                f"config builds {list(tensor.shape)}; restore the config the weights were trained with"
            )
    model.load_state_dict({name: tensors[name] for name in expected})


def load_run(path: str | Path, device: str | None = None) -> Run:
    """Rebuild a run's model from config.json + model.safetensors, with its metrics; nothing is unpickled."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise VaekitError(
            f"run folder {run_dir} does not exist: check the path or train with `vaekit train --out {run_dir}`"
        )
    config = read_config(run_dir)
    weights_path = run_dir / WEIGHTS
    if not weights_path.is_file():
        raise VaekitError(f"{run_dir} has no checkpoint ({WEIGHTS}): it never finished an epoch; train it again")
    try:
        tensors = load_safetensors(weights_path.read_bytes())
    except SafetensorError as error:
        raise VaekitError(
            f"{weights_path} is truncated or corrupt ({error}): restore it or train the run again"
        ) from None
    model = VAE(config.model)
    load_weights(model, tensors, weights_path)
    model.eval()
    final_path = run_dir / FINAL
    final = json.loads(final_path.read_text()) if final_path.is_file() else None
    return Run(run_dir, config, model.to(device or "cpu"), read_history(run_dir), final)
