"""What a run folder's JSON and checkpoint may hold, checked once where they are read, so that every reader (info,
resume, the loggers, the why report) can index them without guarding: a damaged or hand-made file is one line naming
the file and the fix, never a KeyError or a RecursionError deep inside a reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vaekit.errors import VaekitError

METRICS = ("elbo", "log_px", "kl")  # what every split's metrics hold; readers print these


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metrics_problem(metrics: Any, where: str, optional: bool = False) -> str | None:
    """Why `metrics` is not a split's metrics (a JSON object of numbers with the ELBO's terms), or None."""
    if metrics is None and optional:
        return None
    if not isinstance(metrics, dict) or not all(isinstance(k, str) and _is_number(v) for k, v in metrics.items()):
        return f"{where} is not an object of numbers"
    missing = [name for name in METRICS if name not in metrics]
    return f"{where} lacks {', '.join(missing)}" if missing else None


def check_history(records: Any, path: Path, fix: str) -> list[dict[str, Any]]:
    """One record per finished epoch, in order: {"epoch": n, "train": metrics, "val": metrics or null, ...}."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise VaekitError(f"{path} does not hold one JSON object per epoch: {fix}")
    for position, record in enumerate(records, start=1):
        problem = (
            None
            if record.get("epoch") == position and not isinstance(record.get("epoch"), bool)
            else f"record {position} does not say epoch {position}"
        )
        problem = problem or _metrics_problem(record.get("train"), f"epoch {position}'s train")
        problem = problem or _metrics_problem(record.get("val"), f"epoch {position}'s val", optional=True)
        for clock in ("seconds", "train_seconds"):
            if clock in record and not _is_number(record[clock]):
                problem = problem or f"epoch {position}'s {clock} is not a number"
        if problem:
            raise VaekitError(f"{path} is not a vaekit history: {problem}; {fix}")
        record.setdefault("val", None)  # a run without a validation split: readers index it, and find null
    return records


def check_final(final: Any, path: Path, fix: str) -> dict[str, Any]:
    """The final evaluation: {"epochs": n, "test": metrics, "val": metrics or null, "train": metrics, ...}."""
    if not isinstance(final, dict):
        raise VaekitError(f"{path} is not a JSON object: {fix}")
    epochs = final.get("epochs")
    problem = None if isinstance(epochs, int) and not isinstance(epochs, bool) else "epochs is not an integer"
    problem = problem or _metrics_problem(final.get("test"), "test")
    problem = problem or _metrics_problem(final.get("val"), "val", optional=True)
    problem = problem or _metrics_problem(final.get("train"), "train")
    if problem:
        raise VaekitError(f"{path} is not a vaekit evaluation: {problem}; {fix}")
    return final


def check_state_types(state: dict[str, Any], path: Path) -> None:
    """The types a checkpoint's entries must have before anything is loaded from them; what they must match (the
    model's names and shapes, the optimizer's groups) is checked where they are loaded."""
    fix = "delete it to restart the run, or train a new run"
    model, optimizer, generator = state["model"], state["optimizer"], state["generator"]
    problems = [
        (
            isinstance(model, dict) and all(isinstance(t, torch.Tensor) for t in model.values()),
            "model is not a set of named tensors",
        ),
        (
            isinstance(optimizer, dict)
            and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)
            and all(isinstance(group, dict) for group in optimizer["param_groups"]),
            "optimizer is not an optimizer's state",
        ),
        (
            isinstance(generator, torch.Tensor) and generator.dtype == torch.uint8 and generator.dim() == 1,
            "generator is not a random generator's state",
        ),
        ("history" not in state or isinstance(state["history"], str), "history is not JSON text"),
        (
            "selected" not in state or _is_selection(state["selected"], state["epoch"]),
            "selected is not an epoch's weights",
        ),
    ]
    for ok, problem in problems:
        if not ok:
            raise VaekitError(f"{path} holds the wrong types ({problem}): {fix}")


def _is_selection(selected: Any, epochs: int) -> bool:
    """`--select best`'s entry: {"epoch": n (1 to the checkpoint's epoch), "weights": named tensors}."""
    return (
        isinstance(selected, dict)
        and isinstance(selected.get("epoch"), int)
        and not isinstance(selected["epoch"], bool)
        and 1 <= selected["epoch"] <= epochs
        and isinstance(selected.get("weights"), dict)
        and all(isinstance(t, torch.Tensor) for t in selected["weights"].values())
    )
