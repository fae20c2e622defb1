"""Categorical latents by the Gumbel-softmax relaxation: the distribution against torch.distributions, and a VAE."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Categorical, OneHotCategorical, kl_divergence

from tests.conftest import tiny_config
from vaekit import TrainConfig, load_run, train
from vaekit.analysis.evaluate import likelihood_report
from vaekit.config import options_of
from vaekit.model.posteriors import CategoricalFamily, CategoricalSettings, RelaxedCategorical
from vaekit.model.priors import UniformCategorical

V, K = 5, 4


def logits(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, V, K, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_relaxed_samples_lie_on_the_simplex_and_harden_as_temperature_falls() -> None:
    g = torch.Generator().manual_seed(0)
    for temperature in (5.0, 1.0, 0.1):
        y = RelaxedCategorical(logits(), temperature).rsample(200, generator=g).view(200, 3, V, K)
        assert (y >= 0).all()
        torch.testing.assert_close(y.sum(-1), torch.ones(200, 3, V, dtype=torch.float64))
    cold = RelaxedCategorical(logits(), 0.01).rsample(200, generator=g).view(200, 3, V, K)
    warm = RelaxedCategorical(logits(), 5.0).rsample(200, generator=g).view(200, 3, V, K)
    assert cold.max(-1).values.mean() > 0.99 > 0.6 > warm.max(-1).values.mean()


@pytest.mark.parametrize("straight_through", [False, True])
def test_gradients_reach_the_logits(straight_through: bool) -> None:
    raw = logits().requires_grad_(True)
    y = RelaxedCategorical(raw, 0.5, straight_through).rsample(generator=torch.Generator().manual_seed(1))
    if straight_through:
        assert set(y.detach().unique().tolist()) <= {0.0, 1.0}  # hard one-hot forward
    (y * torch.arange(V * K, dtype=torch.float64)).sum().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_kl_to_uniform_matches_torch_distributions() -> None:
    raw = logits()
    expected = kl_divergence(Categorical(logits=raw), Categorical(logits=torch.zeros_like(raw))).sum(-1)
    torch.testing.assert_close(UniformCategorical(V, K).kl(RelaxedCategorical(raw, 1.0)), expected)


@pytest.mark.slow
def test_log_prob_and_exact_samples_match_one_hot_categorical() -> None:
    raw = logits()
    q = RelaxedCategorical(raw, 1.0)
    z = q.sample(20000, generator=torch.Generator().manual_seed(2))  # (S, 3, V·K)
    oracle = OneHotCategorical(logits=raw)
    torch.testing.assert_close(q.log_prob(z), oracle.log_prob(z.view(20000, 3, V, K)).sum(-1))
    frequencies = z.view(20000, 3, V, K).mean(0)
    assert (frequencies - q.probs).abs().max() < 0.02


def test_evaluation_mode_draws_exact_one_hot_codes() -> None:
    q = RelaxedCategorical(logits(), 1.0, hard=True)
    z = q.rsample(generator=torch.Generator().manual_seed(3)).view(3, V, K)
    assert set(z.unique().tolist()) == {0.0, 1.0} and (z.sum(-1) == 1).all()


def test_temperature_anneals_exponentially_to_its_floor() -> None:
    config = TrainConfig().validate()
    family = CategoricalFamily(config.model)
    temperatures = []
    for step in (0, 1000, 10**7):
        family.at_step(step)
        temperatures.append(family.temperature)
    assert temperatures[0] == 1.0
    codes = options_of(config.model, CategoricalSettings)  # the defaults, as none is given
    assert temperatures[1] == pytest.approx(math.exp(-1000 * codes.anneal_rate))
    assert temperatures[2] == codes.temperature_min == 0.5


def categorical_config(epochs: int = 3) -> TrainConfig:
    config = tiny_config(epochs=epochs)
    config.model.latent, config.model.options = "categorical", {"categories": 4, "latent_vars": 6}
    return config


@pytest.mark.slow
def test_a_categorical_vae_trains_samples_reconstructs_and_evaluates(tmp_path: Path) -> None:
    run = train(categorical_config(), tmp_path / "cat")
    assert run.config.model.latent_dim == 24 and "temperature" in run.history[-1]["train"]
    loaded = load_run(tmp_path / "cat")
    samples = loaded.model.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, 8, 8)
    codes = loaded.model.prior_sample(5).view(5, 6, 4)
    assert (codes.sum(-1) == 1).all()
    x = torch.rand(4, 1, 8, 8)
    assert loaded.model.reconstruct(x).shape == x.shape
    report = likelihood_report(loaded.model, (x * 255).to(torch.uint8), "test", k=50)
    assert report.nll <= report.neg_elbo + 3 * report.neg_elbo_se


@pytest.mark.slow
def test_categorical_resume_is_exact(tmp_path: Path) -> None:
    from tests.test_train import StopAfter, losses

    full = train(categorical_config(epochs=3), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(categorical_config(epochs=3), tmp_path / "cut", callbacks=[StopAfter(1)])
    resumed = train(None, tmp_path / "cut", resume=True)
    assert losses(resumed.history) == losses(full.history)
    assert [r["train"]["temperature"] for r in resumed.history] == [r["train"]["temperature"] for r in full.history]


@pytest.mark.slow
def test_gaussian_only_tools_refuse_categorical_runs_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vaekit.cli.main import app

    train(categorical_config(epochs=1), tmp_path / "cat")
    for args in (["latent", "traverse"], ["latent", "manifold"], ["serve"], ["gradients"]):
        result = CliRunner().invoke(app, [*args, str(tmp_path / "cat")])
        assert result.exit_code == 2 and "categorical" in result.stderr, (args, result.stderr)
