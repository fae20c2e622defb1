"""What the likelihood scores, decided once: binarization, dequantization, one bits/dim, and the categorical record."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config
from vaekit import DataConfig, ModelConfig, load_run, train
from vaekit.analysis.evaluate import evaluate
from vaekit.data.scoring import Scoring, bernoulli_draw
from vaekit.data.sources import load_dataset, to_float
from vaekit.model.objectives import bits_per_dim
from vaekit.training.epoch import train_epoch
from vaekit.training.loop import evaluate_split
from vaekit.training.runs import build_model

GREY = torch.randint(1, 255, (50, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_grey_values_for_a_bernoulli_are_the_pixels_scaled_exactly_as_before() -> None:
    scored = Scoring.of(ModelConfig(), DataConfig()).input(GREY, torch.Generator().manual_seed(0))
    assert torch.equal(scored, GREY.float() / 255)
    assert Scoring.of(ModelConfig()).offset(GREY) == 0.0


def test_dynamic_binarization_is_a_draw_that_the_generator_fixes() -> None:
    scoring = Scoring.of(ModelConfig(), DataConfig(binarize="dynamic"))
    first, again = (scoring.input(GREY, torch.Generator().manual_seed(3)) for _ in range(2))
    other = scoring.input(GREY, torch.Generator().manual_seed(4))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert abs(float(first.mean()) - float(GREY.float().mean() / 255)) < 0.05  # a draw of the grey values
    assert scoring.describe(GREY) == "fixed-seed binarized images"


def test_a_fresh_draw_is_bernoulli_of_each_pixel_and_a_seeded_one_keeps_torch_bernoullis_stream() -> None:
    p = torch.tensor([0.0, 0.02, 0.3, 0.5, 0.97, 1.0]).repeat(20_000, 1)
    fresh = bernoulli_draw(p, torch.Generator().manual_seed(5), fresh=True)
    assert fresh.dtype == p.dtype and set(fresh.unique().tolist()) == {0.0, 1.0}
    assert fresh[:, 0].sum() == 0 and fresh[:, -1].sum() == len(p)  # never at p = 0, always at p = 1
    standard_errors = (p[0] * (1 - p[0]) / len(p)).sqrt()
    assert ((fresh.mean(0) - p[0]).abs() <= 4 * standard_errors).all()
    assert torch.equal(fresh, bernoulli_draw(p, torch.Generator().manual_seed(5), fresh=True))
    seeded = bernoulli_draw(p, torch.Generator().manual_seed(5), fresh=False)
    assert torch.equal(seeded, torch.bernoulli(p, generator=torch.Generator().manual_seed(5)))
    scoring = Scoring.of(ModelConfig(), DataConfig(binarize="dynamic"))
    draw = scoring.input(GREY, torch.Generator().manual_seed(3), fresh=True)
    assert torch.equal(draw, bernoulli_draw(GREY.float() / 255, torch.Generator().manual_seed(3), fresh=True))


def test_a_gaussian_scores_dequantized_pixels_with_the_log_256_term() -> None:
    scoring = Scoring.of(ModelConfig(likelihood="gaussian-learned"), DataConfig())
    scored = scoring.input(GREY, torch.Generator().manual_seed(0))
    assert (scored >= GREY.float() / 256).all() and (scored < (GREY.float() + 1) / 256).all()
    assert scoring.offset(GREY) == pytest.approx(-64 * math.log(256))
    floats = to_float(GREY)
    assert torch.equal(scoring.input(floats), floats) and scoring.offset(floats) == 0.0  # continuous data as given


@pytest.mark.slow
def test_evaluate_scores_the_train_subset_of_a_dynamic_run_on_a_binarized_draw_too(tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    config.data.binarize = "dynamic"
    run = train(config, tmp_path / "dynamic")
    test, train_side = evaluate(load_run(run.path), k=5, prior_samples=50, write=False).likelihood
    assert test.data == train_side.data == "fixed-seed binarized images"
    # The train subset is scored like test: a binarized draw, whose −ELBO lies near the test split's, not the grey
    # values' (a Bernoulli on grey targets pays their entropy, tens of nats per 8x8 digit).
    grey = evaluate_split(run.model, load_dataset(config.data).train.x[:297])
    assert abs(train_side.neg_elbo - test.neg_elbo) < abs(-grey["elbo"] - test.neg_elbo)  # type: ignore[operator]


@pytest.mark.slow
def test_a_gaussian_run_reports_one_bits_per_dim_in_training_and_evaluation(tmp_path: Path) -> None:
    config = tiny_config(epochs=3)
    config.model.likelihood = "gaussian-learned"
    run = train(config, tmp_path / "gaussian")
    assert run.final is not None
    recorded = run.final["test"]["bits_per_dim"]
    test = evaluate(load_run(run.path), k=20, prior_samples=50, split="test", write=False).likelihood[0]
    assert test.neg_elbo is not None and test.bits_per_dim is not None
    assert recorded > 0 and test.bits_per_dim > 0
    # The same quantity: the ELBO of the dequantized test split agrees to noise, and the k-sample bound is tighter by
    # the small gap between the bounds (the ELBO on k/255 values without −D·log 256 was 8 bits/dim lower).
    assert float(bits_per_dim(test.neg_elbo, 64)) == pytest.approx(recorded, abs=0.05)
    assert recorded - 0.5 < test.bits_per_dim < recorded + 0.05
    assert all(r["val"]["bits_per_dim"] > 0 and r["train"]["elbo"] < -64 * math.log(2) for r in run.history)


def test_a_categorical_training_record_holds_the_discrete_elbo() -> None:
    """With relaxed codes far from one-hot (τ = 5), a decoder that reads them (weights scaled up) and the weights
    held still, the record's ELBO is the one evaluation computes with exact samples; what the relaxed codes scored
    is kept apart under its own name."""
    config = tiny_config()
    config.model.latent = "categorical"
    config.model.options.update(categories=4, latent_vars=6, temperature=5.0, temperature_min=5.0)
    config.model.input_shape = [1, 8, 8]
    model = build_model(config.validate())
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(5)
    data = load_dataset(config.data)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    record = train_epoch(model, frozen, data, config, 0, torch.Generator().manual_seed(0))
    exact = evaluate_split(model, data.train.x)
    assert record["elbo"] == pytest.approx(exact["elbo"], abs=1.0)
    assert record["elbo"] == pytest.approx(record["log_px"] - record["kl"])
    assert record["relaxed_log_px"] - record["log_px"] > 5.0  # the relaxed term alone would overstate the ELBO
