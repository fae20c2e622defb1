"""The run folder: everything a run leaves behind, written atomically, read back with clear errors.

config.json        TrainConfig (with format_version): enough to rebuild the model
model.safetensors  the weights the run selects (--select: the latest, or the best on validation; their average, with
                   --average-decay), for everything downstream of training; its metadata names the epoch the run has
                   reached and the epoch whose weights it holds
state.pt           the resumable checkpoint and the one authority after a crash: epoch, weights (and their average,
                   and the selected weights), optimizer, RNG state and history (tensors and plain data only, read with
                   weights_only=True); written first
metrics.jsonl      one JSON object per finished epoch (may run ahead of the weights after a crash; readers cut it)
.lock              held while a run trains (see vaekit.training.runlock)
metrics.json       the final evaluation on the test split
*.png              pictures
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors

from vaekit.config import TrainConfig
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, atomic_write_json, is_temporary, not_a_folder, os_error, remove_temporaries
from vaekit.memory import require, tensor_bytes
from vaekit.model.vae import VAE, stored_names
from vaekit.small_files import parse_json, read_small, read_text
from vaekit.training.averaging import WeightAverage, saved_average
from vaekit.training.records import check_final, check_history, check_state_types
from vaekit.training.runlock import LOCK
from vaekit.training.selection import weights_text

CONFIG, WEIGHTS, STATE, HISTORY, FINAL = "config.json", "model.safetensors", "state.pt", "metrics.jsonl", "metrics.json"


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of vaekit's writes that a crash interrupted, and nothing else; only the lock holder may call
    this."""
    remove_temporaries(run_dir)


def check_new_run_folder(run_dir: Path) -> None:
    """A new run goes only where it destroys nothing of the user's: a folder that does not exist yet, one that holds
    nothing but what a vaekit writer killed before its first file leaves (its lock, its temporaries), or a vaekit run
    (config.json a valid vaekit config; one killed in its first epoch is trained again from the start, and one that
    finished an epoch is refused under the lock). Anything else is someone's folder: refused before a byte is written.
    A path that is not a folder is left to the lock, which says so."""
    if not_a_folder(run_dir) is not None or not run_dir.exists():
        return
    try:
        names = os.listdir(run_dir)
    except OSError as error:
        raise os_error(error, run_dir) from None
    others = sorted(name for name in names if not is_temporary(name) and not _is_lock_file(run_dir / name))
    if not others:
        return
    try:
        read_config(run_dir)
        return
    except VaekitError:
        pass
    shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
    raise VaekitError(
        f"{run_dir} is not empty ({shown}) and holds no vaekit run: train into a new or empty --out, or pass "
        "--resume to continue a run there"
    )


def _is_lock_file(path: Path) -> bool:
    """RUN/.lock as a vaekit writer leaves it: empty, or naming its holder (`process N on HOST`)."""
    if path.name != LOCK or path.is_symlink():
        return False
    try:
        text = read_small(path, 300).decode(errors="replace")
    except (OSError, ValueError):
        return False
    return re.fullmatch(r"(process \d+ on [^\n]*\n)?", text) is not None


@dataclass
class Run:
    """A trained (or training) run as read from its folder."""

    path: Path
    config: TrainConfig
    model: VAE
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl, one dict per epoch
    final: dict[str, Any] | None = None  # metrics.json, once training finished
    selected_epoch: int | None = None  # the epoch whose weights `model` holds (None: the last of `history`)

    @property
    def weights_epoch(self) -> int:
        """The epoch whose weights `model` holds: the one --select chose, else the last."""
        return self.selected_epoch if self.selected_epoch is not None else len(self.history)

    def weights_text(self) -> str:
        """Which epoch's weights `model` holds, in words ("epoch 23 of 60 (the highest validation ELBO)")."""
        return weights_text(self.weights_epoch, self.epochs_done, self.config)

    @property
    def epochs_done(self) -> int:
        return len(self.history)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    atomic_write_json(run_dir / CONFIG, config.to_dict())


def _read_json_text(path: Path) -> str:
    return read_text(path, "restore it, or train the run again")


def read_config(run_dir: Path) -> TrainConfig:
    """config.json, checked like any other input: types, names, enums, bounds and finite floats."""
    path = run_dir / CONFIG
    if not path.is_file():
        raise VaekitError(
            f"{run_dir} is not a vaekit run folder (no {CONFIG}): train one with `vaekit train --out {run_dir}`"
        )
    raw = parse_json(_read_json_text(path), path, "restore it or train a new run")
    try:
        return TrainConfig.from_dict(raw).validate()
    except TypeError as error:
        raise VaekitError(f"{path} is not a valid vaekit config ({error}): restore it or train a new run") from None
    except VaekitError as error:
        raise VaekitError(f"{path} is not a valid vaekit config ({error}): restore it or train a new run") from None


def save_checkpoint(
    run_dir: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: list[dict[str, Any]],
    partial: dict[str, Any] | None = None,
    average: WeightAverage | None = None,
    selected: dict[str, Any] | None = None,
) -> None:
    """A checkpoint. state.pt is the one authority: it is written first and holds the epoch, the weights, the
    optimizer, the RNG and the history, so a resume needs nothing else. The files after it are views of it, each
    tagged with or truncated to its epoch, so a crash between two renames leaves views that lag but never lie.

    `partial` marks a checkpoint inside an epoch (its permutation, next step and running sums): then only state.pt is
    written, and the views keep describing the last whole epoch. A run that averages its weights (`average`) keeps
    the average in state.pt beside the weights the optimizer steps, and model.safetensors holds the average. A run
    that selects its best epoch (`selected`: that epoch and its weights) keeps them too, and model.safetensors holds
    them."""
    weights = on_cpu(model.state_dict())
    averaged = average.checkpoint() if average is not None else None
    bad = [
        name
        for part in (weights, averaged["weights"] if averaged else {})
        for name, t in part.items()
        if t.is_floating_point() and not bool(t.isfinite().all())
    ]
    if bad:  # the last good checkpoint is worth more than this one
        if (run_dir / STATE).is_file():
            raise VaekitError(
                f"the weights after epoch {len(history)} are not finite ({bad[0]}); the last good checkpoint is kept: "
                "lower --lr and continue with --resume"
            )
        raise VaekitError(
            f"the weights after epoch {len(history)} are not finite ({bad[0]}); no checkpoint was written: "
            "lower --lr and train again"
        )
    state = {
        "epoch": len(history),
        "model": weights,
        **({"average": averaged} if averaged else {}),
        **({"selected": selected} if selected else {}),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "history": json.dumps(history),
    }
    if partial is not None:
        state["partial"] = partial
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(run_dir / STATE, buffer.getvalue())
    if partial is None:
        write_views(run_dir, state, history)


def on_cpu(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().cpu().contiguous() for name, t in weights.items()}


def viewed_weights(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], int]:
    """The weights model.safetensors shows of a checkpoint, and their epoch: the selected epoch's where the run
    selects one, else the last epoch's weight average where the run keeps one, else its weights."""
    if "selected" in state:
        return state["selected"]["weights"], state["selected"]["epoch"]
    weights: dict[str, torch.Tensor] = state["average"]["weights"] if "average" in state else state["model"]
    return weights, state["epoch"]


def write_views(run_dir: Path, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
    """metrics.jsonl and model.safetensors from the checkpoint's contents; a resume rewrites them, since a crash
    may have left them an epoch behind state.pt."""
    weights, selected = viewed_weights(state)
    atomic_write(run_dir / HISTORY, "".join(json.dumps(r, allow_nan=False) + "\n" for r in history).encode())
    metadata = {"epoch": str(len(history)), "selected_epoch": str(selected)}
    atomic_write(run_dir / WEIGHTS, save_safetensors(weights, metadata=metadata))


def load_state(run_dir: Path) -> dict[str, Any] | None:
    """The resumable checkpoint, or None when the run has not finished an epoch yet."""
    path = run_dir / STATE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises many types for a bad file (pickle, zip, EOF); all mean the same here
        raise VaekitError(
            f"{path} is truncated, corrupt or not a vaekit checkpoint ({type(error).__name__}): "
            "delete it to restart the run from the beginning, or train a new run"
        ) from None
    keys = {"epoch", "model", "optimizer", "generator"}
    if (
        not isinstance(state, dict)
        or not keys <= set(state)
        or not isinstance(state["epoch"], int)
        or isinstance(state["epoch"], bool)
        or state["epoch"] < 0
    ):
        raise VaekitError(f"{path} is not a vaekit checkpoint: delete it to restart the run, or train a new run")
    check_state_types(state, path)
    if "history" in state:  # format 1 checkpoints kept the history in metrics.jsonl alone
        fix = "delete it to restart the run, or train a new run"
        state["history"] = check_history(parse_json(state["history"] or "[]", path, fix), path, fix)
    else:
        state["history"] = read_history(run_dir)[: state["epoch"]]
    partial = state.get("partial")
    if partial is not None and not (
        isinstance(partial, dict)
        and isinstance(partial.get("step"), int)
        and isinstance(partial.get("order"), torch.Tensor)
        and isinstance(partial.get("sums"), torch.Tensor)
    ):
        raise VaekitError(f"{path} holds a damaged position inside an epoch: delete it to restart the run")
    saved_average(state, path)
    if len(state["history"]) != state["epoch"]:
        raise VaekitError(f"{path} holds {state['epoch']} epochs but their history is incomplete: train a new run")
    return dict(state)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl: one record per finished epoch, checked for the shape every reader relies on."""
    path = run_dir / HISTORY
    if not path.is_file():
        return []
    fix = "restore it, or train the run again"
    lines = [line for line in _read_json_text(path).splitlines() if line.strip()]
    return check_history([parse_json(line, path, fix) for line in lines], path, fix)


def read_final(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json: the final evaluation, checked for the shape every reader relies on."""
    path = run_dir / FINAL
    if not path.is_file():
        return None
    fix = "delete it; `vaekit train --resume` redoes it"
    return check_final(parse_json(_read_json_text(path), path, fix), path, fix)


def build_model(config: TrainConfig) -> VAE:
    """A freshly initialised model; initialisation is seeded so that runs are reproducible by construction."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return VAE(config.model)


def check_shapes(expected: dict[str, torch.Size], found: dict[str, list[int]], source: Path) -> None:
    """Names and shapes of stored tensors against what the config builds, before anything is allocated."""
    for name, shape in expected.items():
        if name not in found:
            raise VaekitError(
                f"{source} lacks {name}: it was not trained with {source.parent / CONFIG}; retrain the run"
            )
        if list(found[name]) != list(shape):
            raise VaekitError(
                f"{source} does not match {source.parent / CONFIG}: {name} has shape {list(found[name])}, the "
                f"config builds {list(shape)}; restore the config the weights were trained with"
            )


def load_weights(model: VAE, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights, turning a shape or name mismatch into one line that says which config they belong to."""
    expected = model.state_dict()
    tensors = {ours: tensors[theirs] for ours, theirs in stored_names(tensors, model).items()}
    check_shapes({n: t.shape for n, t in expected.items()}, {n: list(t.shape) for n, t in tensors.items()}, source)
    model.load_state_dict({name: tensors[name] for name in expected})


def load_average(average: WeightAverage, state: dict[str, Any], source: Path) -> None:
    """The weight average a checkpoint keeps beside the weights, into `average`."""
    saved = saved_average(state, source)
    if saved is None:
        raise VaekitError(
            f"{source} holds no weight average, but {source.parent / CONFIG} sets average_decay: restore the run's "
            "config.json, or train a new run"
        )
    load_weights(average.module, saved["weights"], source)
    average.steps = saved["steps"]


def _read_weights(path: Path, config: TrainConfig, device: str) -> tuple[VAE, int, int]:
    """The model, the epoch the run had reached when they were written and the epoch whose weights they are (the
    same, unless the run selects its best epoch). The model is first built on the meta device (no memory) and its
    shapes compared with the safetensors header, so a tampered config or file never allocates anything."""
    with torch.device("meta"):
        model = VAE(config.model)
    try:
        with safe_open(path, framework="pt") as weights:
            names = stored_names(weights.keys(), model)
            shapes = {ours: weights.get_slice(theirs).get_shape() for ours, theirs in names.items()}
            check_shapes({n: t.shape for n, t in model.state_dict().items()}, shapes, path)
            metadata = weights.metadata() or {}
            epoch = metadata.get("epoch", "")
            selected = metadata.get("selected_epoch", epoch)
            held = tensor_bytes(list(model.state_dict().values()))
            require(held, f"the weights of {path}", "load the run on a machine with more memory")
            tensors = {name: weights.get_tensor(names[name]) for name in model.state_dict()}
    except (SafetensorError, OSError) as error:
        raise VaekitError(f"{path} is truncated or corrupt ({error}): restore it or train the run again") from None
    if not (epoch.isdigit() and selected.isdigit() and int(selected) <= int(epoch)):
        raise VaekitError(f"{path} does not say which epoch it holds: restore it or train the run again")
    model = model.to_empty(device=device)
    model.load_state_dict(tensors)
    return model, int(epoch), int(selected)


def load_run(path: str | Path, device: str | None = None) -> Run:
    """Rebuild a run's model from config.json + model.safetensors, with its metrics; nothing is unpickled.

    The history is cut to the epoch the weights hold, so a run read while it trains, or after a crash, never pairs
    the metrics of one epoch with the weights of another."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise VaekitError(
            f"run folder {run_dir} does not exist: check the path or train with `vaekit train --out {run_dir}`"
        )
    config = read_config(run_dir)
    weights_path = run_dir / WEIGHTS
    if not weights_path.is_file():
        raise VaekitError(f"{run_dir} has no weights yet ({WEIGHTS}): wait for its first epoch, or train it again")
    model, epoch, selected = _read_weights(weights_path, config, device or "cpu")
    history = read_history(run_dir)[:epoch]
    if len(history) < epoch:
        raise VaekitError(f"{run_dir / HISTORY} lacks epochs its weights hold: restore it, or train the run again")
    final = read_final(run_dir)
    if final is not None and final.get("epochs") != epoch:
        final = None  # the evaluation of an earlier finish, before the run was trained further
    return Run(run_dir, config, model.eval(), history, final, selected)
