"""The readers each fuzz case runs, in the worker process, in the folder holding the case's files.

Every step must end in success or a `VaekitError`; a VaekitError's message is collected (the test checks it is one
line), anything else escapes to the worker, which reports it as a fault. A step that succeeds feeds the next one
(data that loads is trained on for an epoch and packed; a pack that packs is loaded), since a fault may lie in what a
reader lets through as much as in the reader.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import datasets  # noqa: F401  (imported here, before the worker's memory cap, as the readers import it lazily)
import pyarrow.parquet  # noqa: F401
import typer.testing
from typer.testing import CliRunner

from vaekit.api import train as train_with_pictures
from vaekit.cli.common import read_toml
from vaekit.cli.main import app
from vaekit.cli.train import to_settings
from vaekit.config import DataConfig, ModelConfig, TrainConfig, with_overrides
from vaekit.data.pack import open_pack, verify_pack
from vaekit.data.sources import load_dataset, pack_dataset
from vaekit.data.userdata import load_image_like
from vaekit.errors import VaekitError
from vaekit.training.loop import train
from vaekit.training.runs import load_run, load_state, read_config, read_final, read_history

T = TypeVar("T")

# Typer builds the click command again on every invoke (a tenth of a second, most of a run case's time); once will do.
typer.testing._get_command = functools.cache(typer.testing._get_command)


def where(trace: traceback.StackSummary) -> str:
    """The innermost frame in vaekit's own code (else the innermost frame): where a fault is to be fixed."""
    frames = [frame for frame in trace if f"{os.sep}vaekit{os.sep}" in frame.filename] or list(trace)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


class Outcome:
    """The messages of the VaekitErrors a case's steps ended with, each with where it was raised."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def attempt(self, step: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return step(*args, **kwargs)
        except VaekitError as error:
            self.messages.append((str(error), where(traceback.extract_tb(error.__traceback__))))
            return None

    def command(self, *args: str) -> None:
        """`vaekit ARGS` in this process: exit 0, or exit 2 with what it printed as the message; any other ending
        (a traceback) is raised again here."""
        result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
        if result.exit_code == 0:
            return
        if result.exit_code == 2 and isinstance(result.exception, SystemExit | None):
            self.messages.append((result.stderr.strip(), f"vaekit {args[0]}"))
            return
        if isinstance(result.exception, Exception):
            raise result.exception
        raise AssertionError(f"`vaekit {' '.join(args)}` exited {result.exit_code}: {result.output}")


def tiny_training(dataset: str, args: dict[str, Any]) -> TrainConfig:
    """A model of a few hundred weights for one epoch: enough to push every image, label and batch through."""
    return TrainConfig(
        model=ModelConfig(hidden=[8], latent_dim=2, condition=args.get("condition", "none")),
        data=DataConfig(dataset=dataset, val_size=args.get("val_size", 2), binarize=args.get("binarize", "none")),
        epochs=1,
        batch_size=args.get("batch_size", 4),
    )


def data_target(args: dict[str, Any], outcome: Outcome) -> None:
    """An image folder, .npy/.npz, Parquet or datasets folder: loaded, trained on (with its pictures), packed, and
    the pack loaded."""
    path, columns = args["path"], {"image_column": args.get("image_column"), "label_column": args.get("label_column")}
    config = tiny_training(path, args)
    config.data.image_column, config.data.label_column = columns["image_column"], columns["label_column"]
    if outcome.attempt(load_dataset, config.data) is not None and args.get("train"):
        outcome.attempt(train_with_pictures, config, "run")
    if outcome.attempt(pack_dataset, path, Path("packed"), **columns) is not None:
        outcome.attempt(load_dataset, DataConfig(dataset="packed", val_size=args.get("val_size", 2)))


def pack_target(args: dict[str, Any], outcome: Outcome) -> None:
    """A pack folder: opened, verified, loaded and trained on."""
    path = Path(args["path"])
    outcome.attempt(open_pack, path)
    outcome.attempt(verify_pack, path)
    config = tiny_training(args["path"], args)
    if outcome.attempt(load_dataset, config.data) is not None and args.get("train"):
        outcome.attempt(train_with_pictures, config, "run")


def image_target(args: dict[str, Any], outcome: Outcome) -> None:
    """One image file given to a command that takes an image (`reconstruct --image`, the explorer)."""
    outcome.attempt(load_image_like, Path(args["path"]), tuple(args["shape"]))


def run_target(args: dict[str, Any], outcome: Outcome) -> None:
    """A run folder: every reader of it, `vaekit info` (tables and JSON), and, when asked, a resume that trains one
    more epoch."""
    run = Path(args["path"])
    outcome.attempt(read_config, run)
    outcome.attempt(read_history, run)
    outcome.attempt(read_final, run)
    outcome.attempt(load_state, run)
    outcome.attempt(load_run, run)
    outcome.command("info", str(run))
    outcome.command("info", "--json", str(run))
    if args.get("resume"):
        saved = outcome.attempt(read_config, run)
        if saved is not None:
            saved.epochs = 2
            outcome.attempt(train, saved, run, resume=True)


def settings_from_file(path: Path) -> TrainConfig:
    """What `vaekit train --config PATH` makes of a TOML file before it trains."""
    from_file = {key.replace("-", "_"): value for key, value in read_toml(path).items()}
    for key in ("out", "logger", "mlflow_uri"):
        from_file.pop(key, None)
    return with_overrides(TrainConfig(), to_settings(from_file, f"config file {path}")).validate()


def toml_target(args: dict[str, Any], outcome: Outcome) -> None:
    """A --config file: read and applied by the library, and by `vaekit train`, stopped by --resume of a folder that
    holds no run before anything trains."""
    outcome.attempt(settings_from_file, Path(args["path"]))
    outcome.command("train", "--config", args["path"], "--resume", "--out", "no-run-here")


TARGETS: dict[str, Callable[[dict[str, Any], Outcome], None]] = {
    "data": data_target,
    "pack": pack_target,
    "image": image_target,
    "run": run_target,
    "toml": toml_target,
}
