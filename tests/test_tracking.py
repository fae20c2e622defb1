"""The trainer's callbacks, and the TensorBoard and MLflow loggers built on them, read back with each tool's reader."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import invoke, tiny_config
from vaekit import train
from vaekit.data.sources import load_dataset
from vaekit.tracking.mlflow_logger import default_uri
from vaekit.training.callbacks import STEP_EVERY, Callback, EpochEnd, RunEnd, RunStart, StepEnd

RUN_ARGS = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "256", "--quiet"]


class Recorder(Callback):
    """Writes down every moment it hears of, in order."""

    def __init__(self, stop_at_epoch: int = 0) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stop_at_epoch = stop_at_epoch

    def on_run_start(self, start: RunStart) -> None:
        self.events.append(("start", start))

    def on_step_end(self, step: StepEnd) -> None:
        self.events.append(("step", step))

    def on_epoch_end(self, end: EpochEnd) -> None:
        self.events.append(("epoch", end))
        if end.epoch == self.stop_at_epoch:
            raise KeyboardInterrupt

    def on_run_end(self, end: RunEnd) -> None:
        self.events.append(("end", end))

    def of(self, kind: str) -> list[Any]:
        return [event for name, event in self.events if name == kind]


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(record: dict[str, Any]) -> set[str]:
    names = {f"{split}/{key}" for split in ("train", "val") for key in (record[split] or {})}
    return names | {"lr", "samples_per_second", "seconds", "train_seconds"}


@pytest.mark.slow
def test_callbacks_hear_the_run_start_every_step_report_each_epoch_and_the_end(tmp_path: Path) -> None:
    recorder = Recorder()
    run = train(tiny_config(epochs=2, batch_size=16), tmp_path / "run", callbacks=[recorder])
    assert [name for name, _ in recorder.events if name != "step"] == ["start", "epoch", "epoch", "end"]
    assert recorder.of("start")[0].epochs_done == 0 and recorder.of("start")[0].run_dir == tmp_path / "run"
    steps: list[StepEnd] = recorder.of("step")
    per_epoch = math.ceil(len(load_dataset(tiny_config().data).train) / 16)
    reported = [n for n in range(1, per_epoch + 1) if n % STEP_EVERY == 1 or n == per_epoch]  # 1, 21, ..., last
    assert [s.step for s in steps if s.epoch == 1] == reported == [s.step for s in steps if s.epoch == 2]
    assert {s.steps for s in steps} == {per_epoch} and {s.epochs for s in steps} == {2}
    for end, record in zip(recorder.of("epoch"), run.history, strict=True):
        assert end.record == record and end.lr == pytest.approx(1e-3) and end.samples_per_second > 0
        assert set(end.scalars()) == expected_scalars(record)
        assert end.scalars()["train/elbo"] == record["train"]["elbo"] and len(end.held_out) == 8
    (finished,) = recorder.of("end")
    assert finished.status == "finished" and finished.final == run.final and len(finished.history) == 2


def test_the_run_end_says_how_the_run_stopped(tmp_path: Path) -> None:
    stopper = Recorder(stop_at_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=3), tmp_path / "cut", callbacks=[stopper])
    (interrupted,) = stopper.of("end")
    assert interrupted.status == "interrupted" and interrupted.final is None and len(interrupted.history) == 1
    resumed = Recorder()
    train(None, tmp_path / "cut", resume=True, callbacks=[resumed])
    assert resumed.of("start")[0].epochs_done == 1 and [e.epoch for e in resumed.of("epoch")] == [2, 3]


@pytest.mark.slow
def test_logging_leaves_the_training_exactly_as_it_was(tmp_path: Path) -> None:
    """The loggers run the model for their pictures under their own generator: the run's numbers do not move."""
    result = invoke("train", *RUN_ARGS, "--epochs", "2", "--out", tmp_path / "plain")
    assert result.code == 0, result.output
    result = invoke("train", *RUN_ARGS, "--epochs", "2", "--out", tmp_path / "logged", "--logger", "tensorboard,mlflow")
    assert result.code == 0, result.output
    strip = lambda rows: [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]  # noqa: E731
    assert strip(metrics(tmp_path / "logged")) == strip(metrics(tmp_path / "plain"))


def test_tensorboard_event_files_hold_every_scalar_and_picture_at_every_epoch(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = invoke("train", *RUN_ARGS, "--epochs", "3", "--out", tmp_path / "run", "--logger", "tensorboard")
    assert result.code == 0, result.output
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    records = metrics(tmp_path / "run")
    assert set(events.Tags()["scalars"]) == expected_scalars(records[0])
    for tag in events.Tags()["scalars"]:
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag
    for split, key in (("train", "elbo"), ("train", "kl"), ("val", "elbo"), ("val", "log_px"), ("train", "beta")):
        logged = [e.value for e in events.Scalars(f"{split}/{key}")]
        assert logged == pytest.approx([r[split][key] for r in records], rel=1e-6)
    assert set(events.Tags()["images"]) == {"samples", "reconstructions"}
    for tag in ("samples", "reconstructions"):
        pictures = events.Images(tag)
        assert [p.step for p in pictures] == [1, 2, 3] and pictures[0].width > 0 and pictures[0].height > 0


@pytest.mark.slow
def test_mlflow_file_store_holds_params_metrics_pictures_and_the_run_folder(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    result = invoke("train", *RUN_ARGS, "--epochs", "2", "--out", out, "--logger", "mlflow")
    assert result.code == 0, result.output
    client = MlflowClient(tracking_uri=default_uri(out))
    (experiment,) = [e for e in client.search_experiments() if e.name == "vaekit"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model.latent_dim"] == "4" and run.data.params["batch_size"] == "256"
    records = metrics(out)
    history = client.get_metric_history(run.info.run_id, "train/elbo")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([r["train"]["elbo"] for r in records])
    assert set(run.data.metrics) == expected_scalars(records[0])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {"run/config.json", "run/metrics.json", "run/model.safetensors"} <= artifacts
    assert not any(path.startswith("run/mlruns") for path in artifacts)  # the store is not copied into itself
    pictures = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert pictures == {"samples/epoch_0001.png", "samples/epoch_0002.png"}


@pytest.mark.slow
def test_a_resumed_run_logs_on_into_the_same_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    assert invoke("train", *RUN_ARGS, "--epochs", "1", "--out", out, "--logger", "mlflow").code == 0
    result = invoke("train", "--resume", "--epochs", "2", "--out", out, "--logger", "mlflow", "--quiet")
    assert result.code == 0, result.output
    client = MlflowClient(tracking_uri=default_uri(out))
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/elbo")] == [1, 2]
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize(
    ("log", "hidden", "extra"),
    [("tensorboard", "torch.utils.tensorboard", "tensorboard"), ("mlflow", "mlflow.tracking", "mlflow")],
)
def test_a_missing_logger_package_is_one_line_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: str, hidden: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)  # `import` of it now raises ImportError
    result = invoke("train", *RUN_ARGS, "--epochs", "1", "--out", tmp_path / "run", "--logger", log)
    lines = result.output.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and f"pip install 'vaekit[{extra}]'" in lines[0]
    assert not (tmp_path / "run").exists()


def test_log_names_are_checked(tmp_path: Path) -> None:
    result = invoke("train", *RUN_ARGS, "--out", tmp_path / "run", "--logger", "wandb")
    assert result.code == 2 and "--logger wandb is unknown" in result.output
    result = invoke("train", *RUN_ARGS, "--out", tmp_path / "run", "--mlflow-uri", "file:///tmp/x")
    assert result.code == 2 and "add --logger mlflow" in result.output


def test_a_toml_file_may_choose_the_loggers_and_the_command_line_wins(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('dataset = "digits"\nepochs = 1\nhidden = [16]\nlogger = "tensorboard"\n')
    result = invoke("train", "--config", tmp_path / "c.toml", "--quiet", "--out", tmp_path / "run")
    assert result.code == 0, result.output
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    result = invoke("train", "--config", tmp_path / "c.toml", "--logger", "wandb", "--out", tmp_path / "other")
    assert result.code == 2 and "--logger wandb is unknown" in result.output
