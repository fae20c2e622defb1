"""Two stochastic layers (Burda, Grosse & Salakhutdinov 2016): each factor against torch.distributions, the Monte
Carlo KL against the exact KL of a linear-Gaussian case, the importance-weighted bound and DReG on it, and the
`--second-layer` runs from the command line."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from tests.conftest import invoke
from tests.test_cli import assert_clean_error
from vaekit import ModelConfig, load_run
from vaekit.model.objectives import importance_weighted, iwae_bound
from vaekit.model.posteriors import TwoLayerGaussian, TwoLayerGaussianFamily
from vaekit.model.priors import TwoLayerPrior
from vaekit.model.randomness import BatchSlice
from vaekit.model.vae import VAE

D1, D2 = 3, 2
CONFIG = ModelConfig(hidden=[8], latent_dim=D1, second_layer=[5, D2], input_shape=[1, 3, 3], activation="tanh")


def two_layer_posterior(rows: int = 4, seed: int = 0) -> tuple[TwoLayerGaussianFamily, Tensor, TwoLayerGaussian]:
    torch.manual_seed(seed)
    family = TwoLayerGaussianFamily(CONFIG).double()
    features = torch.randn(rows, 2 * D1, dtype=torch.float64)
    posterior = family(features)
    assert isinstance(posterior, TwoLayerGaussian)
    return family, features, posterior


def gaussian_from(features: Tensor) -> Normal:
    mu, logvar = features.chunk(2, dim=-1)
    return Normal(mu, torch.exp(0.5 * logvar))


def test_the_posterior_is_q_z1_given_x_times_q_z2_given_z1() -> None:
    family, features, posterior = two_layer_posterior()
    z = posterior.rsample(6, generator=torch.Generator().manual_seed(1))
    assert z.shape == (6, 4, D1 + D2)
    z1, z2 = z[..., :D1], z[..., D1:]
    expected = gaussian_from(features).log_prob(z1).sum(-1) + gaussian_from(family.upper(z1)).log_prob(z2).sum(-1)
    torch.testing.assert_close(posterior.log_prob(z), expected)
    # the draws follow that density: each layer's standardized noise is N(0, 1)
    with torch.no_grad():
        many = posterior.sample(20000, generator=torch.Generator().manual_seed(2))
        q1, q2 = gaussian_from(features), gaussian_from(family.upper(many[..., :D1]))
        noise = torch.cat([(many[..., :D1] - q1.mean) / q1.stddev, (many[..., D1:] - q2.mean) / q2.stddev], -1)
    assert float(noise.mean((0, 1)).abs().max()) < 0.02 and float((noise.std((0, 1)) - 1).abs().max()) < 0.02
    # the mean path, and per-layer variances at it
    mean_z2 = gaussian_from(family.upper(features[:, :D1]))
    torch.testing.assert_close(posterior.mean, torch.cat([features[:, :D1], mean_z2.mean], -1))
    torch.testing.assert_close(posterior.variance, torch.cat([q1.variance, mean_z2.variance], -1))


def test_the_prior_is_standard_normal_z2_times_p_z1_given_z2() -> None:
    torch.manual_seed(0)
    prior = TwoLayerPrior(CONFIG).double()
    z = torch.randn(7, D1 + D2, dtype=torch.float64)
    z1, z2 = z[..., :D1], z[..., D1:]
    p1 = gaussian_from(prior.lower(z2))
    expected = Normal(0.0, 1.0).log_prob(z2).sum(-1) + p1.log_prob(z1).sum(-1)
    torch.testing.assert_close(prior.log_prob(z), expected)
    drawn = prior.sample(20000, torch.Generator().manual_seed(3))
    assert drawn.shape == (20000, D1 + D2) and not drawn.requires_grad
    with torch.no_grad():
        p1 = gaussian_from(prior.lower(drawn[:, D1:]))
    noise = torch.cat([(drawn[:, :D1] - p1.mean) / p1.stddev, drawn[:, D1:]], -1)
    assert float(noise.mean(0).abs().max()) < 0.03 and float((noise.std(0) - 1).abs().max()) < 0.03
    assert "two-layer" in prior.describe()


def test_noise_for_a_batch_slice_is_the_full_batchs_rows() -> None:
    """Under torchrun each process keeps its rows of one draw for the global batch, through both layers."""
    family, features, posterior = two_layer_posterior(rows=6)
    full = posterior.rsample(3, generator=torch.Generator().manual_seed(4))
    part = family(features[2:5]).rsample(3, generator=BatchSlice(torch.Generator().manual_seed(4), 2, 5, 6))
    torch.testing.assert_close(part, full[:, 2:5])


def linear_gaussian_case() -> tuple[TwoLayerGaussian, TwoLayerPrior, Tensor]:
    """Linear networks with constant variances: q(z1, z2|x) and p(z1, z2) are then joint Gaussians, and
    KL(q ‖ p) is torch.distributions' closed form between two multivariate normals."""
    g = torch.Generator().manual_seed(5)
    config = ModelConfig(latent_dim=D1, second_layer=[D2], input_shape=[1, 3, 3])
    family, prior = TwoLayerGaussianFamily(config).double(), TwoLayerPrior(config).double()
    a, b, log_s2 = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((D2, D1), (D2,), (D2,)))
    c, d, log_t2 = (torch.randn(*shape, generator=g, dtype=torch.float64) for shape in ((D1, D2), (D1,), (D1,)))
    with torch.no_grad():
        for net, weight, bias, logvar in ((family.upper, a, b, log_s2), (prior.lower, c, d, log_t2)):
            layer = net[0]
            layer.weight.zero_()
            layer.weight[: len(bias)] = weight
            layer.bias.copy_(torch.cat([bias, logvar]))
    m1, log_s1 = (
        torch.tensor([0.4, -0.8, 1.1], dtype=torch.float64),
        torch.tensor([-0.6, 0.2, -1.5], dtype=torch.float64),
    )
    posterior = family(torch.cat([m1, log_s1]).unsqueeze(0))
    assert isinstance(posterior, TwoLayerGaussian)
    s1 = torch.diag(log_s1.exp())
    q = MultivariateNormal(
        torch.cat([m1, a @ m1 + b]),
        torch.cat([torch.cat([s1, s1 @ a.T], 1), torch.cat([a @ s1, a @ s1 @ a.T + torch.diag(log_s2.exp())], 1)]),
    )
    p = MultivariateNormal(
        torch.cat([d, torch.zeros(D2, dtype=torch.float64)]),
        torch.cat([torch.cat([c @ c.T + torch.diag(log_t2.exp()), c], 1), torch.cat([c.T, torch.eye(D2)], 1)]),
    )
    return posterior, prior, kl_divergence(q, p)


def test_the_monte_carlo_kl_is_unbiased_against_the_exact_linear_gaussian_kl() -> None:
    posterior, prior, exact = linear_gaussian_case()
    assert prior.kl_per_unit(posterior) is None  # the Monte Carlo path is taken
    z = posterior.rsample(20000, generator=torch.Generator().manual_seed(6))
    estimate = prior.kl(posterior, z).detach()
    spread = (posterior.log_prob(z) - prior.log_prob(z)).detach().std() / math.sqrt(20000)
    assert float(exact) > 1.0  # a case far from trivial
    assert abs(float(estimate[0] - exact)) < 4 * float(spread), (float(estimate[0]), float(exact))


def tiny_two_layer_model() -> tuple[VAE, Tensor]:
    torch.manual_seed(0)
    model = VAE(CONFIG).double()
    x = torch.rand(2000, 1, 3, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64).round()
    return model, x


@torch.no_grad()
def test_the_importance_weighted_bound_is_above_the_elbo_and_tightens_with_k() -> None:
    """Averaged over 2,000 images, each step up in k must exceed four standard errors of the per-image gaps."""
    model, x = tiny_two_layer_model()
    values = [model.elbo(x, torch.Generator().manual_seed(8)).elbo]
    values += [iwae_bound(model, x, k, torch.Generator().manual_seed(9 + k)) for k in (4, 16, 64)]
    for earlier, later in itertools.pairwise(values):
        gaps = later - earlier
        assert float(gaps.mean()) > 4 * float(gaps.std() / math.sqrt(len(gaps))), float(gaps.mean())


def encoder_gradients(model: VAE, x: Tensor, k: int, estimator: str, draws: int) -> Tensor:
    """The gradient reaching q's parameters (the encoder and the q(z2|z1) network), one row per draw."""
    parameters = [*model.encoder.parameters(), *model.posterior.parameters()]
    rows = []
    g = torch.Generator().manual_seed(0)
    for _ in range(draws):
        model.zero_grad()
        importance_weighted(model, x, k, g, estimator).objective().sum().backward()
        rows.append(torch.cat([p.grad.flatten() for p in parameters]))  # type: ignore[union-attr]
    return torch.stack(rows)


@pytest.mark.slow
def test_dreg_holds_both_layers_parameters_fixed_and_keeps_the_iwae_gradient_in_expectation() -> None:
    model, x = tiny_two_layer_model()
    x = x[:4]
    posterior = model.encode(x)
    assert isinstance(posterior, TwoLayerGaussian)
    z = posterior.rsample(3).detach()
    frozen = posterior.detached().log_prob(z)
    torch.testing.assert_close(frozen, posterior.log_prob(z))
    assert not frozen.requires_grad  # no path to the encoder or the q(z2|z1) network but through z
    iwae, dreg = (encoder_gradients(model, x, 10, estimator, 300) for estimator in ("reparam", "dreg"))
    mean_gap = (iwae.mean(0) - dreg.mean(0)).abs()
    standard_error = ((iwae.var(0) + dreg.var(0)) / len(iwae)).sqrt()
    assert float((mean_gap < 4 * standard_error + 1e-9).double().mean()) > 0.97
    assert float(dreg.var(0).sum()) < float(iwae.var(0).sum())


TRAIN = ["train", "--second-layer", "8,4", "--hidden", "16", "--latent-dim", "6", "--dataset", "digits", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("two-layer") / "run"
    code, stdout, stderr = invoke(*TRAIN, "--epochs", "2", "--out", out)
    assert code == 0, stderr
    assert "test ELBO" in stdout
    return out


def test_a_two_layer_run_trains_and_reloads_with_identical_weights(trained: Path) -> None:
    run = load_run(trained)
    assert run.config.model.second_layer == [8, 4] and run.model.latent_dim == 10
    assert isinstance(run.model.prior, TwoLayerPrior)
    assert run.history[-1]["train"]["elbo"] > run.history[0]["train"]["elbo"]
    assert run.history[-1]["val"]["elbo"] > run.history[0]["val"]["elbo"]
    stored, loaded = load_file(trained / "model.safetensors"), run.model.state_dict()
    assert set(stored) == set(loaded) and any(name.startswith("prior.lower") for name in stored)
    assert all(torch.equal(stored[name], loaded[name]) for name in stored)
    assert run.model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)
    code, stdout, _ = invoke("info", trained)
    assert code == 0 and "second layer [8, 4]" in stdout


@pytest.mark.slow
def test_evaluate_scores_a_two_layer_run(trained: Path) -> None:
    code, stdout, stderr = invoke("evaluate", trained, "--k", "8", "--prior-samples", "50", "--split", "test", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    test = report["likelihood"][0]
    assert test["k"] == 8 and test["nll"] < test["neg_elbo"]  # the bound is tighter than the ELBO
    assert len(report["kl"]["kl_per_dim"]) == 10 and "two-layer" in report["kl"]["prior"]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["reparam", "dreg"])
def test_the_importance_weighted_objective_trains_a_two_layer_run(estimator: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, stderr = invoke(*TRAIN, "--epochs", "2", "--objective", "iwae", "--k", "4", "--estimator", estimator,
                             "--out", out)  # fmt: skip
    assert code == 0, stderr
    record = load_run(out).history[-1]["train"]
    assert math.isfinite(record["elbo"]) and record["iwae_bound"] > record["elbo"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--second-layer", "8,x"], "--second-layer '8,x' is not a comma-separated list"),
        (["--second-layer", "8,0"], "second_layer widths and size must be between 1"),
        (["--second-layer", "4", "--model", "ae"], "use it with --model vae --latent gaussian"),
        (["--second-layer", "4", "--latent", "categorical"], "use it with --model vae --latent gaussian"),
        (["--second-layer", "4", "--prior", "mog"], "drop --prior mog"),
        (["--second-layer", "4", "--estimator", "score-function"], "use --estimator reparam"),
        (["--second-layer", "4", "--free-bits", "0.5"], "drop --free-bits"),
    ],
)
def test_bad_two_layer_settings_are_one_line_errors(args: list[str], fragment: str, tmp_path: Path) -> None:
    code, _, stderr = invoke("train", "--dataset", "digits", "--quiet", "--out", tmp_path / "run", *args)
    assert_clean_error(code, stderr, fragment)
    assert not (tmp_path / "run" / "model.safetensors").exists()
