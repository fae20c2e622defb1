"""Which epoch's weights a run keeps (`--select`) and when it stops early (`--patience`), both judged on the
validation ELBO, never on the test split.

Small datasets overfit: the validation bound peaks and then falls while the training bound keeps rising. With
`--select best` the run keeps, beside its last state (which a resume continues), the weights of the epoch with the
highest validation ELBO so far; model.safetensors, the test split, the pictures and every reader of the run see those.
The best epoch is a function of the history alone (the earliest of equal bounds), so state.pt stores only its weights,
and a resumed run selects exactly what an uninterrupted one does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from vaekit.config import TrainConfig
from vaekit.errors import VaekitError
from vaekit.model.vae import VAE

CRITERIA = {"last": "the last epoch", "best": "the highest validation ELBO"}  # what metrics.json says of a selection


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The 1-based epoch with the highest validation ELBO (the earliest of equals), or None without validation."""
    scored = [(record["val"]["elbo"], -record["epoch"]) for record in history if record.get("val")]
    return -max(scored)[1] if scored else None


def selected_epoch(history: list[dict[str, Any]], select: str) -> int:
    """The epoch whose weights a run with this history keeps (0 before its first epoch)."""
    best = best_epoch(history) if select == "best" else None
    return best if best is not None else len(history)


def patience_spent(history: list[dict[str, Any]], patience: int) -> bool:
    """Whether `patience` epochs have passed since the best validation ELBO (never, for a patience of 0)."""
    best = best_epoch(history)
    return patience > 0 and best is not None and len(history) - best >= patience


def describe(history: list[dict[str, Any]], config: TrainConfig) -> dict[str, Any]:
    """What metrics.json records of the selection: the epoch, the rule and whether patience stopped the run."""
    return {
        "selected_epoch": selected_epoch(history, config.select),
        "criterion": CRITERIA[config.select],
        "stopped_early": len(history) < config.epochs and patience_spent(history, config.patience),
    }


class BestWeights:
    """The weights of the epoch with the best validation ELBO so far, copied to the CPU when an epoch beats it, so
    that they survive the training steps after it."""

    def __init__(self) -> None:
        self.epoch = 0  # none yet
        self.weights: dict[str, Tensor] = {}

    def offer(self, history: list[dict[str, Any]], model: VAE) -> None:
        """After the last record of `history` was scored with `model`'s weights: keep them if that epoch is best."""
        if best_epoch(history) == len(history) != self.epoch:
            self.epoch = len(history)
            self.weights = {name: t.detach().to("cpu", copy=True) for name, t in model.state_dict().items()}

    def checkpoint(self) -> dict[str, Any] | None:
        """What state.pt keeps of them (None before the first validated epoch)."""
        return {"epoch": self.epoch, "weights": self.weights} if self.epoch else None

    def restore(self, state: dict[str, Any], source: Path, model: VAE) -> None:
        """The best weights a checkpoint keeps, checked against its history and against `model`'s tensors."""
        saved = saved_selection(state, source)
        expected = best_epoch(state["history"])
        fix = "delete it to restart the run, or train a new run"
        if (saved["epoch"] if saved else None) != expected:
            raise VaekitError(
                f"{source} does not keep the weights of its best validation epoch ({expected}), which --select best "
                f"needs: {fix}"
            )
        if saved is None:
            return
        shapes = {name: t.shape for name, t in model.state_dict().items()}
        if {name: t.shape for name, t in saved["weights"].items()} != shapes:
            raise VaekitError(f"{source} holds selected weights that do not fit this model: {fix}")
        self.epoch, self.weights = saved["epoch"], saved["weights"]


def saved_selection(state: dict[str, Any], source: Path) -> dict[str, Any] | None:
    """A checkpoint's selected weights (None when the run keeps none); their types were checked where the
    checkpoint was read (`vaekit.training.records.check_state_types`)."""
    selected = state.get("selected")
    return None if selected is None else dict(selected)


def weights_text(epoch: int, epochs_done: int, config: TrainConfig) -> str:
    """Which epoch's weights a run's model holds, in words, for every report that scores or draws them."""
    average = f", their moving average (decay {config.average_decay:g})" if config.average_decay else ""
    return f"epoch {epoch} of {epochs_done} ({CRITERIA[config.select]}){average}"
