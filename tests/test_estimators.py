"""Gradient estimators with known answers, the three ELBO estimators on a model, and the gradient lab."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import tiny_config
from vaekit import VAE, ModelConfig, load_run, train
from vaekit.analysis.estimators import CountSketch, gradient_report, ratio_interval, sketched_trace
from vaekit.cli.main import app
from vaekit.errors import VaekitError
from vaekit.model.objectives import leave_one_out_mean, score_term
from vaekit.model.posteriors import DiagonalGaussian

MU, SIGMA = torch.tensor([0.7, -1.3], dtype=torch.float64), torch.tensor([0.5, 1.5], dtype=torch.float64)


def per_sample_gradients(f, estimator: str, n: int = 20000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """n one-sample estimates of ∇_(mu, sigma) E_{z~N(mu, sigma²)}[f(z)], as (n, 2, 2): [sample, (mu, sigma), dim].

    Every sample gets its own copy of (mu, sigma), so one backward pass yields each sample's own gradient.
    """
    mu = MU.expand(n, 2).clone().requires_grad_(True)
    sigma = SIGMA.expand(n, 2).clone().requires_grad_(True)
    q = DiagonalGaussian(mu, 2 * torch.log(sigma))
    g = torch.Generator().manual_seed(seed)
    if estimator == "reparam":
        z = q.rsample(generator=g)  # (n, 2)
        values = f(z)
    else:
        z = q.sample(generator=g)
        log_q = -0.5 * (math.log(2 * math.pi) + 2 * torch.log(sigma) + (z - mu) ** 2 / sigma**2)  # per coordinate
        values = f(z) + score_term(f(z), log_q)
    grad_mu, grad_sigma = torch.autograd.grad(values.sum(), (mu, sigma))
    return torch.stack([grad_mu, grad_sigma], dim=1), z


@pytest.mark.parametrize(
    ("f", "analytic"),
    [
        (lambda z: z**2, torch.stack([2 * MU, 2 * SIGMA])),  # E[z²] = mu² + sigma²
        (lambda z: 3.0 * z - 1.0, torch.stack([torch.full((2,), 3.0), torch.zeros(2)]).double()),  # linear f
    ],
)
def test_both_estimators_are_unbiased_and_reparam_has_lower_variance(f, analytic: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    grads = {e: per_sample_gradients(f, e, n=4000)[0] for e in ("reparam", "score-function")}
    for estimator, g in grads.items():
        mean, stderr = g.mean(0), g.std(0) / math.sqrt(len(g))
        assert ((mean - analytic).abs() <= 4 * stderr + 1e-9).all(), (estimator, mean, analytic)
    assert (grads["reparam"].var(0) < grads["score-function"].var(0)).all()


def test_dropping_the_score_term_loses_the_gradient() -> None:
    """Without the score term, a sample drawn outside the graph gives no gradient at all: zero, so biased."""
    mu = MU.clone().requires_grad_(True)
    q = DiagonalGaussian(mu, 2 * torch.log(SIGMA))
    z = q.sample(1000, generator=torch.Generator().manual_seed(0))
    assert not (z**2).mean(0).sum().requires_grad  # nothing to differentiate: the gradient is lost
    log_q = q.log_prob(z)
    surrogate = ((z**2).sum(-1) + score_term((z**2).sum(-1), log_q)).mean()
    (grad,) = torch.autograd.grad(surrogate, mu)
    assert (grad.sign() == MU.sign()).all() and grad.abs().min() > 0.3  # the true gradient is 2·mu


def test_leave_one_out_baseline_excludes_each_own_sample() -> None:
    values = torch.tensor([[1.0], [2.0], [6.0]])
    torch.testing.assert_close(leave_one_out_mean(values), torch.tensor([[4.0], [3.5], [1.5]]))


@pytest.mark.parametrize("estimator", ["score-function", "score-function-baseline"])
def test_score_function_elbo_gradient_agrees_with_reparam_on_a_model(estimator: str) -> None:
    torch.manual_seed(0)
    model = VAE(
        ModelConfig(
            hidden=[], latent_dim=2, likelihood="gaussian", options={"gaussian_scale": 1.0}, input_shape=[1, 1, 3]
        )
    )
    x = torch.rand(16, 1, 1, 3)
    gradients = {}
    for name in ("reparam", estimator):
        model.zero_grad()
        terms = model.elbo(x, torch.Generator().manual_seed(1), name, samples=20000)
        (-terms.elbo.mean()).backward()
        gradients[name] = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    cosine = torch.nn.functional.cosine_similarity(gradients["reparam"], gradients[estimator], dim=0)
    assert cosine > 0.98
    torch.testing.assert_close(gradients[estimator].norm(), gradients["reparam"].norm(), rtol=0.1, atol=0)


def test_the_estimator_changes_the_gradient_not_the_value() -> None:
    model = VAE(ModelConfig(hidden=[8], latent_dim=2, input_shape=[1, 4, 4]))
    x = torch.rand(5, 1, 4, 4)
    values = [model.elbo(x, torch.Generator().manual_seed(3), e, 3).elbo for e in ("reparam", "score-function")]
    torch.testing.assert_close(values[0], values[1])


@pytest.mark.slow
def test_gradient_report_finds_the_score_function_far_noisier() -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden=[16], latent_dim=3, input_shape=[1, 4, 4]))
    report = gradient_report(model, torch.rand(32, 1, 4, 4), repeats=30, samples=4)
    assert report.overall("reparam").cosine_to_reparam == pytest.approx(1.0)
    assert report.variance_ratio("score-function") > 10
    assert 1 < report.variance_ratio("score-function-baseline") < report.variance_ratio("score-function")
    assert {s.parameter for s in report.stats} == {
        f"encoder.{n}" for n in ("1.weight", "1.bias", "3.weight", "3.bias")
    } | {"all"}


def test_the_ratio_interval_from_sketches_matches_the_bootstrap_of_the_whole_gradients() -> None:
    """On a model small enough to keep every draw, the count sketch's interval agrees with the bootstrap of the
    draws themselves, and it contains the exact ratio."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden=[16], latent_dim=3, input_shape=[1, 4, 4]))
    x = torch.rand(32, 1, 4, 4)
    params = {f"encoder.{n}": p for n, p in model.encoder.named_parameters()}
    sketch = CountSketch(params, buckets=4096, seed=0)
    kept = {}
    for estimator in ("reparam", "score-function-baseline"):
        rows = []
        for _ in range(60):
            model.zero_grad(set_to_none=True)
            (-model.elbo(x, None, estimator, 4).elbo.mean()).backward()
            rows.append(torch.cat([p.grad.flatten() for p in params.values()]))
        kept[estimator] = torch.stack(rows)
    whole, pathwise = kept["score-function-baseline"], kept["reparam"]
    ones = [torch.ones(1, 60, dtype=torch.float64)] * 2
    exact = float(sketched_trace(ones[0], whole)[0] / sketched_trace(ones[1], pathwise)[0])
    truth = ratio_interval(exact, whole, pathwise)  # the draws themselves as the "sketch": the plain bootstrap
    sketched = torch.stack([sketch({n: r[slice_] for n, slice_ in slices(params).items()}) for r in whole])
    sketched_paths = torch.stack([sketch({n: r[slice_] for n, slice_ in slices(params).items()}) for r in pathwise])
    found = ratio_interval(exact, sketched, sketched_paths)
    assert truth[0] < exact < truth[1]
    assert found == pytest.approx(truth, rel=0.05)
    assert truth[1] / truth[0] > 1.2  # 60 draws: an interval of real width, which the comparison above resolves


def slices(params: dict[str, torch.Tensor]) -> dict[str, slice]:
    """Where each parameter sits in the concatenated gradient."""
    found, start = {}, 0
    for name, p in params.items():
        found[name] = slice(start, start + p.numel())
        start += p.numel()
    return found


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["score-function", "score-function-baseline"])
def test_training_with_each_estimator_improves_the_elbo_and_trains_the_encoder(tmp_path: Path, estimator: str) -> None:
    """The KL stays off zero only if the encoder gets the reconstruction gradient through the estimator: with the
    KL's gradient alone the posterior collapses onto the prior (KL ≈ 0.00 by the third epoch)."""
    config = tiny_config(epochs=3, estimator=estimator, samples=2)
    run = train(config, tmp_path / estimator)
    first, last = run.history[0]["train"], run.history[-1]["train"]
    assert last["elbo"] > first["elbo"] + 3  # about +6 nats in three epochs
    assert last["kl"] > 0.05  # 0.14 (score-function), 1.0 (with the baseline)
    assert load_run(tmp_path / estimator).config.estimator == estimator


def test_baseline_needs_two_samples(tmp_path: Path) -> None:
    with pytest.raises(VaekitError, match="at least 2 samples"):
        train(tiny_config(estimator="score-function-baseline"), tmp_path / "r")


@pytest.mark.slow
def test_gradients_command(tmp_path: Path) -> None:
    train(tiny_config(epochs=1), tmp_path / "run")
    args = ["gradients", str(tmp_path / "run"), "--repeats", "10", "--batch-size", "16", "--at-init"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "score-function-baseline" in result.stdout
    saved = json.loads((tmp_path / "run" / "gradients.json").read_text())
    assert [r["label"] for r in saved] == ["trained", "initialisation"]
    assert (tmp_path / "run" / "gradient_variance.png").stat().st_size > 0
