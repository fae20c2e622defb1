"""`vaekit train --select best` and `--patience`: the weights a run keeps, and when it stops, judged on validation.

The runs here train at a learning rate high enough that the validation bound wanders from epoch to epoch, so that the
best epoch is not the last and patience runs out well before the last epoch.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit import load_run, train
from vaekit.cli.main import app
from vaekit.config import DataConfig, TrainConfig
from vaekit.data.sources import load_dataset
from vaekit.training.callbacks import Callback, StepEnd
from vaekit.training.loop import evaluate_split
from vaekit.training.selection import best_epoch

EPOCHS = 8
NOISY = {"epochs": EPOCHS, "lr": 0.05, "select": "best"}  # the validation bound peaks, then wanders below the peak
ARGS = ["--dataset", "digits", "--epochs", str(EPOCHS), "--lr", "0.05", "--batch-size", "64", "--hidden", "32"]
ARGS += ["--latent-dim", "4", "--select", "best", "--quiet"]


def noisy_config(**overrides: Any) -> TrainConfig:
    return tiny_config(**{**NOISY, **overrides})


def val_bounds(history: list[dict[str, Any]]) -> list[float]:
    return [record["val"]["elbo"] for record in history]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run with --select best, whose best validation epoch is neither the first nor the last."""
    out = tmp_path_factory.mktemp("select") / "reference"
    run = train(noisy_config(), out)
    best = best_epoch(run.history)
    assert best is not None and 1 < best < EPOCHS - 1, val_bounds(run.history)
    return out


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- what --select best keeps -----------------------------------------------------------------------------------


@pytest.mark.slow  # trains runs of 8 epochs
@pytest.mark.parametrize("average_decay", [0.0, 0.9])  # with an average, the averaged weights are what was scored
def test_the_selected_weights_reproduce_their_recorded_validation_bound(
    reference: Path, tmp_path: Path, average_decay: float
) -> None:
    out = reference if not average_decay else tmp_path / "averaged"
    if average_decay:
        train(noisy_config(average_decay=average_decay), out)
    run = load_run(out)
    chosen = best_epoch(run.history)
    assert chosen is not None and chosen < EPOCHS
    assert run.weights_epoch == chosen and run.final is not None
    assert run.final["selected_epoch"] == chosen and run.final["criterion"] == "the highest validation ELBO"
    assert run.final["val"] == run.history[chosen - 1]["val"]
    data = load_dataset(run.config.data)
    scored = evaluate_split(run.model, data.val.x)
    assert scored["elbo"] == pytest.approx(run.history[chosen - 1]["val"]["elbo"], abs=1e-5)
    assert scored["elbo"] != pytest.approx(run.history[-1]["val"]["elbo"], abs=1e-3)  # not the last epoch's
    assert evaluate_split(run.model, data.test.x)["elbo"] == pytest.approx(run.final["test"]["elbo"], abs=1e-5)
    state = torch.load(out / "state.pt", weights_only=True)  # the last state, which --resume continues
    assert state["epoch"] == EPOCHS and state["selected"]["epoch"] == chosen


@pytest.mark.slow  # trains runs of 8 epochs
def test_select_last_is_the_default_and_keeps_the_last_epoch(tmp_path: Path) -> None:
    run = train(noisy_config(select="last"), tmp_path / "last")
    assert TrainConfig().select == "last"
    assert run.final is not None and run.final["selected_epoch"] == EPOCHS == load_run(run.path).weights_epoch
    assert run.final["criterion"] == "the last epoch" and run.final["val"] == run.history[-1]["val"]
    assert "selected" not in torch.load(tmp_path / "last" / "state.pt", weights_only=True)


@pytest.mark.slow  # trains runs of 8 epochs
def test_info_says_which_epochs_weights_it_shows_and_scored(reference: Path) -> None:
    chosen = load_run(reference).weights_epoch
    words = f"epoch {chosen} of {EPOCHS} (the highest validation ELBO)"
    result = invoke("info", reference)
    assert result.code == 0 and words in " ".join(result.stdout.split()), result.stdout
    assert f"test (epoch {chosen}'s weights)" in result.stdout
    summary = json.loads(invoke("info", reference, "--json").stdout)
    assert summary["weights_epoch"] == chosen and summary["weights"] == words
    assert summary["final"]["selected_epoch"] == chosen


# --- --patience ---------------------------------------------------------------------------------------------------


@pytest.mark.slow  # trains runs of 8 epochs
def test_patience_stops_after_that_many_epochs_without_a_better_bound(reference: Path, tmp_path: Path) -> None:
    history = load_run(reference).history
    patience = 2
    expected = next(n for n in range(1, EPOCHS + 1) if n - (best_epoch(history[:n]) or n) >= patience)
    assert expected < EPOCHS  # the reference run would have stopped early
    run = train(noisy_config(patience=patience), tmp_path / "patient")
    assert run.epochs_done == expected and val_bounds(run.history) == val_bounds(history[:expected])
    assert run.final is not None and run.final["stopped_early"] and run.final["epochs"] == expected
    assert run.final["selected_epoch"] == best_epoch(history[:expected])
    # Resuming a run that patience stopped is refused, and writes nothing, unless --patience is raised or turned off
    before = fingerprint(tmp_path / "patient")
    result = invoke("train", "--resume", "--out", tmp_path / "patient", "--quiet")
    one_line_error(result.code, result.stderr, f"stopped after {patience} epochs without a better validation ELBO")
    assert fingerprint(tmp_path / "patient") == before
    result = invoke("train", "--resume", "--out", tmp_path / "patient", "--patience", "0", "--quiet")
    assert result.code == 0, result.stderr
    resumed = load_run(tmp_path / "patient")
    assert resumed.epochs_done == EPOCHS and val_bounds(resumed.history) == val_bounds(history)
    assert resumed.weights_epoch == best_epoch(history)


# --- interrupted and resumed runs select what uninterrupted ones do ---------------------------------------------


class StopInEpoch(Callback):
    """Interrupts the run at the `n`-th progress update of epoch `epoch` (a crash in the middle of an epoch)."""

    def __init__(self, epoch: int, n: int) -> None:
        self.epoch, self.n, self.seen = epoch, n, 0

    def on_step_end(self, step: StepEnd) -> None:
        if step.epoch == self.epoch:
            self.seen += 1
            if self.seen == self.n:
                raise KeyboardInterrupt


def assert_same_run(resumed: Path, reference: Path) -> None:
    ours, theirs = load_run(resumed), load_run(reference)
    assert val_bounds(ours.history) == val_bounds(theirs.history)
    assert ours.final is not None and theirs.final is not None
    assert ours.final["selected_epoch"] == theirs.final["selected_epoch"] and ours.final["test"] == theirs.final["test"]
    for name, tensor in theirs.model.state_dict().items():
        torch.testing.assert_close(ours.model.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.slow  # trains runs of 8 epochs
def test_a_run_resumed_after_its_best_epoch_selects_the_same_weights(reference: Path, tmp_path: Path) -> None:
    """Interrupted inside a later epoch (a checkpoint at every sync point), then resumed: the same best epoch and the
    same weights, which only state.pt could have kept by then."""
    best = best_epoch(load_run(reference).history)
    assert best is not None
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(noisy_config(checkpoint_every=1e-9), cut, callbacks=[StopInEpoch(epoch=best + 2, n=2)])
    state = torch.load(cut / "state.pt", weights_only=True)
    assert state["epoch"] == best + 1 and "partial" in state and state["selected"]["epoch"] == best
    assert load_run(cut).weights_epoch == best  # readers see the selected weights meanwhile
    train(None, cut, resume=True)
    assert_same_run(cut, reference)


def _child(run_dir: str, kill_at: int) -> None:
    """One `vaekit train --select best` process, killed just after its `kill_at`-th atomic rename."""
    torch.set_num_threads(1)
    real_replace, count = os.replace, [0]

    def replace(src: Any, dst: Any, **folders: Any) -> None:
        real_replace(src, dst, **folders)
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace  # type: ignore[assignment]
    resume = ["--resume"] if (Path(run_dir) / "config.json").exists() else []
    app(["train", *ARGS, "--out", run_dir, *resume], prog_name="vaekit")


def run_child(run_dir: Path, kill_at: int) -> int | None:
    process = multiprocessing.get_context("fork").Process(target=_child, args=(str(run_dir), kill_at))
    process.start()
    process.join(timeout=120)
    return process.exitcode


@pytest.mark.slow
def test_runs_killed_at_any_write_resume_to_the_same_selection(tmp_path: Path) -> None:
    """Killed after the config, in the middle of each epoch's three writes, and among the pictures: each resumed
    run ends with the uninterrupted run's selected epoch, weights and test numbers."""
    assert run_child(tmp_path / "reference", 0) == 0  # in a child too: one thread, as the killed runs train
    for kill_at in (1, 3, 9, 13, 1 + 3 * EPOCHS + 2):
        run_dir = tmp_path / f"killed-{kill_at}"
        assert run_child(run_dir, kill_at) == -signal.SIGKILL
        assert run_child(run_dir, 0) == 0
        assert_same_run(run_dir, tmp_path / "reference")


# --- refusals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--select", "best"], "--select best judges epochs by the validation ELBO"),
        (["--patience", "3"], "--patience 3 judges epochs by the validation ELBO"),
    ],
)
def test_selection_without_a_validation_split_is_refused(tmp_path: Path, flags: list[str], fragment: str) -> None:
    result = invoke("train", "--dataset", "digits", "--val-size", "0", *flags, "--out", tmp_path / "run")
    one_line_error(result.code, result.stderr, fragment, "set --val-size above 0")
    assert not (tmp_path / "run").exists()


def test_selection_on_a_dataset_too_small_for_a_validation_split_is_refused(tmp_path: Path) -> None:
    digits = load_dataset(DataConfig(dataset="digits", val_size=0))
    np.savez(tmp_path / "few.npz", x=digits.train.x[:9, 0].numpy(), x_test=digits.test.x[:4, 0].numpy())
    result = invoke("train", "--dataset", tmp_path / "few.npz", "--select", "best", "--out", tmp_path / "run")
    one_line_error(result.code, result.stderr, "too few training images for a validation split")
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow  # trains runs of 8 epochs
def test_select_cannot_change_on_resume(reference: Path, tmp_path: Path) -> None:
    before = fingerprint(reference)
    result = invoke("train", "--resume", "--out", reference, "--select", "last", "--epochs", "9", "--quiet")
    one_line_error(result.code, result.stderr, "select differs")
    assert fingerprint(reference) == before
