"""Polyak averaging (`--average-decay`): the average follows its definition step by step, the run evaluates and saves
it while the optimizer steps the weights themselves (so training is unchanged), and a resume continues both exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor
from typer.testing import CliRunner

import vaekit.training.loop
from tests.conftest import tiny_config
from vaekit import load_run, train
from vaekit.cli.main import app
from vaekit.data.sources import load_dataset
from vaekit.errors import VaekitError
from vaekit.training.averaging import weight_average
from vaekit.training.loop import evaluate_split
from vaekit.training.runs import build_model


def direct_average(steps: list[dict[str, Tensor]], decay: float) -> dict[str, Tensor]:
    """The definition, summed in one go: the plain mean of the first h = 1/(1 − decay) steps' weights, then each
    later step j of T weighted (1 − decay)·decay^(T − j), the mean of the first h decay^(T − h)."""
    horizon = round(1 / (1 - decay))
    head, tail = steps[:horizon], steps[horizon:]
    average = {}
    for name in steps[0]:
        mean = torch.stack([w[name] for w in head]).double().mean(0)
        total = decay ** len(tail) * mean
        for j, weights in enumerate(tail, start=1):
            total = total + (1 - decay) * decay ** (len(tail) - j) * weights[name].double()
        average[name] = total.float()
    return average


@pytest.mark.slow
def test_the_average_is_the_mean_of_the_first_steps_then_exponential() -> None:
    model = build_model(tiny_config())
    average = weight_average(model, decay=0.75)  # a horizon of 4 steps
    assert average is not None and weight_average(model, 0.0) is None
    generator = torch.Generator().manual_seed(0)
    steps = []
    for _ in range(9):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        steps.append({name: p.detach().clone() for name, p in model.named_parameters()})
        average.update()
        for name, p in average.module.named_parameters():
            torch.testing.assert_close(p, direct_average(steps, 0.75)[name], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, Tensor]]]:
    """Two runs alike but for --average-decay 0.9, and the weights after each optimizer step of the averaged one."""
    root = tmp_path_factory.mktemp("averaging")
    train(tiny_config(epochs=2), root / "plain")
    steps: list[dict[str, Tensor]] = []
    original = vaekit.training.loop.make_optimizer

    def recording(model, config):  # type: ignore[no-untyped-def]
        optimizer = original(model, config)
        optimizer.register_step_post_hook(
            lambda *_: steps.append({name: p.detach().clone() for name, p in model.named_parameters()})
        )
        return optimizer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vaekit.training.loop, "make_optimizer", recording)
        train(tiny_config(epochs=2, average_decay=0.9), root / "averaged")
    return root / "plain", root / "averaged", steps


@pytest.mark.slow
def test_a_run_saves_the_average_of_its_steps_and_trains_as_without_it(
    runs: tuple[Path, Path, list[dict[str, Tensor]]],
) -> None:
    plain, averaged, steps = runs
    assert len(steps) == 2 * math.ceil(len(load_dataset(tiny_config().data).train) / 64)  # 2 epochs at batch 64
    saved = load_file(averaged / "model.safetensors")
    for name, want in direct_average(steps, 0.9).items():
        torch.testing.assert_close(saved[name], want, rtol=1e-5, atol=1e-6)
    state = torch.load(averaged / "state.pt", weights_only=True)
    assert state["average"]["steps"] == len(steps)
    for name, raw in steps[-1].items():  # state.pt keeps the optimizer's weights, to train on from
        torch.testing.assert_close(state["model"][name], raw, rtol=0, atol=0)
        assert not torch.equal(saved[name], raw)
    plain_state = torch.load(plain / "state.pt", weights_only=True)
    for name, tensor in plain_state["model"].items():  # averaging does not touch training
        torch.testing.assert_close(state["model"][name], tensor, rtol=0, atol=0)


@pytest.mark.slow
def test_validation_and_the_test_split_score_the_average(runs: tuple[Path, Path, list[dict[str, Tensor]]]) -> None:
    _, averaged, _ = runs
    run = load_run(averaged)
    data = load_dataset(run.config.data)
    assert run.final is not None
    assert run.final["test"] == pytest.approx(evaluate_split(run.model, data.test.x), rel=1e-6)
    assert run.history[-1]["val"] == pytest.approx(evaluate_split(run.model, data.val.x), rel=1e-6)


@pytest.mark.slow
def test_a_resume_without_the_average_its_config_asks_for_is_one_line(
    runs: tuple[Path, Path, list[dict[str, Tensor]]], tmp_path: Path
) -> None:
    _, averaged, _ = runs
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl", "model.safetensors"):
        (run / name).write_bytes((averaged / name).read_bytes())
    state = torch.load(averaged / "state.pt", weights_only=True)
    del state["average"]
    torch.save(state, run / "state.pt")
    with pytest.raises(VaekitError, match=r"holds no weight average, but .* sets average_decay: restore"):
        train(tiny_config(epochs=3, average_decay=0.9), run, resume=True)


@pytest.mark.parametrize("decay", ["1", "-0.5", "1.5"])
def test_a_decay_outside_zero_to_one_is_a_one_line_error(tmp_path: Path, decay: str) -> None:
    result = CliRunner().invoke(
        app, ["train", "--dataset", "digits", "--epochs", "1", "--average-decay", decay, "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == "error: average_decay must be at least 0 and below 1: use 0.999, say, or 0 for none"
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_info_says_the_weights_are_an_average(runs: tuple[Path, Path, list[dict[str, Tensor]]]) -> None:
    plain, averaged, _ = runs
    shown = [CliRunner().invoke(app, ["info", str(run)], env={"COLUMNS": "200"}).output for run in (averaged, plain)]
    assert "weights: their average (decay 0.9)" in shown[0] and "average" not in shown[1]
