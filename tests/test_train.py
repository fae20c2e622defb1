"""Training end to end on tiny data: the run folder, metrics, and exact resume (also after kill -9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import tiny_config
from vaekit import load_run, train
from vaekit.config import FORMAT_VERSION
from vaekit.errors import VaekitError
from vaekit.training.callbacks import Callback, EpochEnd

RUN_FILES = {
    "config.json",
    "model.safetensors",
    "state.pt",
    "metrics.jsonl",
    "metrics.json",
    "samples.png",
    "reconstructions.png",
    "interpolation.png",
    "curves.png",
}


def losses(history: list[dict[str, Any]]) -> list[tuple[float, ...]]:
    """The numbers that must agree between runs (wall-clock seconds do not)."""
    return [(r["train"]["elbo"], r["train"]["kl"], r["val"]["elbo"], r["val"]["kl"]) for r in history]


def test_training_writes_a_complete_run_folder(tmp_path: Path) -> None:
    run = train(tiny_config(epochs=3), tmp_path / "run")
    assert {p.name for p in (tmp_path / "run").iterdir()} == RUN_FILES
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train"]["elbo"] > history[0]["train"]["elbo"]  # it learns
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert final["test"]["elbo"] == pytest.approx(final["test"]["log_px"] - final["test"]["kl"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["format_version"] == FORMAT_VERSION
    assert run.final == final
    assert not list((tmp_path / "run").glob(".*"))  # no temporary files left behind


def test_load_run_rebuilds_the_same_model(tmp_path: Path) -> None:
    run = train(tiny_config(), tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(loaded.model.reconstruct(x), run.model.reconstruct(x))
    assert loaded.history == run.history and loaded.final == run.final


@pytest.mark.slow
def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path: Path) -> None:
    a = train(tiny_config(), tmp_path / "a").history
    b = train(tiny_config(), tmp_path / "b").history
    c = train(tiny_config(seed=1), tmp_path / "c").history
    assert losses(a) == losses(b)
    assert losses(a) != losses(c)


class StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, end: EpochEnd) -> None:
        if end.epoch == self.epochs:
            raise KeyboardInterrupt


@pytest.mark.slow
@pytest.mark.parametrize("binarize", ["none", "dynamic"])
def test_resume_reaches_exactly_the_uninterrupted_metrics(tmp_path: Path, binarize: str) -> None:
    config = tiny_config(epochs=4)
    config.data.binarize = binarize
    full = train(config, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=4, data=config.data), tmp_path / "cut", callbacks=[StopAfter(2)])
    assert len(load_run(tmp_path / "cut").history) == 2
    resumed = train(None, tmp_path / "cut", resume=True)
    assert losses(resumed.history) == losses(full.history)
    assert resumed.final is not None and full.final is not None
    assert resumed.final["test"] == full.final["test"]


def test_resume_with_more_epochs_trains_further(tmp_path: Path) -> None:
    train(tiny_config(epochs=2), tmp_path / "run")
    longer = train(tiny_config(epochs=3), tmp_path / "run", resume=True)
    assert [r["epoch"] for r in longer.history] == [1, 2, 3]
    assert load_run(tmp_path / "run").config.epochs == 3


def test_resume_refuses_a_changed_setting(tmp_path: Path) -> None:
    train(tiny_config(epochs=1), tmp_path / "run")
    with pytest.raises(VaekitError, match="model differs"):
        changed = tiny_config(epochs=2)
        changed.model.latent_dim = 7
        train(changed, tmp_path / "run", resume=True)


def test_a_second_fresh_train_into_a_run_folder_is_refused(tmp_path: Path) -> None:
    train(tiny_config(epochs=1), tmp_path / "run")
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(VaekitError, match="--resume"):
        train(tiny_config(epochs=1), tmp_path / "run")
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_run_files_get_ordinary_permissions(tmp_path: Path) -> None:
    """Atomic writes go through mkstemp (mode 0600); the final files must still be readable by others."""
    from vaekit.files import DEFAULT_MODE

    train(tiny_config(epochs=1), tmp_path / "run")
    for path in (tmp_path / "run").iterdir():
        assert path.stat().st_mode & 0o777 == DEFAULT_MODE, path.name
