"""The top-down hierarchy (`--latent hierarchy`): each factor against torch.distributions, the per-layer KL against
its Monte Carlo estimate, the bounds L>k (LLR>0 is zero by definition), and the tools on a trained run: train,
resume, evaluate's per-layer KL, `vaekit score`'s LLR>k columns, free bits, the importance-weighted objective,
torchrun, export's refusal and the one-line errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.distributions import Normal, kl_divergence

from tests.conftest import invoke, tiny_config
from tests.test_cli import assert_clean_error
from vaekit import ModelConfig, load_run, train
from vaekit.config import TrainConfig
from vaekit.model.hierarchy import (
    HierarchyFamily,
    TopDownGaussian,
    TopDownPrior,
    layer_sizes,
    layer_sizes_of,
    log_weights_above,
    precision_weighted,
)
from vaekit.model.objectives import iwae_bound, log_importance_weights
from vaekit.model.posteriors import DiagonalGaussian
from vaekit.model.priors import StandardNormal
from vaekit.model.randomness import BatchSlice
from vaekit.model.vae import VAE

OPTIONS = {"layers": 3, "ladder_width": 8}
CONFIG = ModelConfig(latent="hierarchy", hidden=[8], latent_dim=4, input_shape=[1, 3, 3], options=OPTIONS)
SIZES = [4, 2, 1]


def hierarchy(rows: int = 5, seed: int = 0) -> tuple[HierarchyFamily, TopDownGaussian, TopDownPrior]:
    torch.manual_seed(seed)
    family = HierarchyFamily(CONFIG).double()
    posterior = family(torch.randn(rows, 8, dtype=torch.float64))
    prior = family.own_prior()
    assert isinstance(prior, TopDownPrior)
    return family, posterior, prior


def normal(gaussian: DiagonalGaussian) -> Normal:
    return Normal(gaussian.mu, gaussian.stddev)


def conditional(family: HierarchyFamily, layer: int, above: Tensor) -> Normal:
    """p(z_layer | z_layer+1) straight from the network's output."""
    mu, logvar = family.top_down.nets[layer](above).chunk(2, -1)
    return Normal(mu, torch.exp(0.5 * logvar))


def test_layer_sizes_halve_from_the_latent_dim() -> None:
    assert layer_sizes(CONFIG) == SIZES
    config = ModelConfig(latent="hierarchy", latent_dim=64, options={"layers": 5})
    assert layer_sizes(config) == [64, 32, 16, 8, 4]


def test_the_precision_weighted_product_is_the_normalized_product_of_the_two_densities() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = (DiagonalGaussian(torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)) for _ in range(2))
    product = precision_weighted(a, b)
    z = torch.randn(6, 3, generator=g)
    # log N(z; a) + log N(z; b) − log Z, with Z = ∫ N(z; a) N(z; b) dz = N(μa; μb, σa² + σb²)
    normalizer = Normal(b.mu, (a.variance + b.variance).sqrt()).log_prob(a.mu)
    expected = normal(a).log_prob(z) + normal(b).log_prob(z) - normalizer
    torch.testing.assert_close(product.log_prob(z), expected.sum(-1), rtol=1e-5, atol=1e-5)


def test_the_posterior_is_q_of_the_top_layer_times_each_layers_q_given_the_one_above() -> None:
    family, posterior, _ = hierarchy()
    z = posterior.rsample(6, generator=torch.Generator().manual_seed(2))
    assert z.shape == (6, 5, sum(SIZES))
    z1, z2, z3 = z.split(SIZES, -1)
    q3 = normal(posterior.bottom_up[2])
    q2 = normal(precision_weighted(posterior.bottom_up[1], family.top_down.conditional(1, z3)))
    q1 = normal(precision_weighted(posterior.bottom_up[0], family.top_down.conditional(0, z2)))
    expected = q3.log_prob(z3).sum(-1) + q2.log_prob(z2).sum(-1) + q1.log_prob(z1).sum(-1)
    torch.testing.assert_close(posterior.log_prob(z), expected)
    with torch.no_grad():  # the draws follow that density: each layer's standardized noise is N(0, 1)
        many = posterior.sample(20000, generator=torch.Generator().manual_seed(3))
        z1, z2, z3 = many.split(SIZES, -1)
        q2 = normal(precision_weighted(posterior.bottom_up[1], family.top_down.conditional(1, z3)))
        q1 = normal(precision_weighted(posterior.bottom_up[0], family.top_down.conditional(0, z2)))
        noise = torch.cat([(z - q.mean) / q.stddev for z, q in ((z1, q1), (z2, q2), (z3, q3))], -1)
    assert float(noise.mean((0, 1)).abs().max()) < 0.02 and float((noise.std((0, 1)) - 1).abs().max()) < 0.02


def test_the_prior_is_standard_normal_at_the_top_times_each_layer_given_the_one_above() -> None:
    family, _, prior = hierarchy()
    z = torch.randn(7, sum(SIZES), dtype=torch.float64)
    z1, z2, z3 = z.split(SIZES, -1)
    expected = Normal(0.0, 1.0).log_prob(z3).sum(-1)
    expected = (
        expected + conditional(family, 1, z3).log_prob(z2).sum(-1) + conditional(family, 0, z2).log_prob(z1).sum(-1)
    )
    torch.testing.assert_close(prior.log_prob(z), expected)
    drawn = prior.sample(20000, torch.Generator().manual_seed(4))
    assert drawn.shape == (20000, sum(SIZES)) and not drawn.requires_grad
    z1, z2, z3 = drawn.split(SIZES, -1)
    with torch.no_grad():
        p2, p1 = conditional(family, 1, z3), conditional(family, 0, z2)
    noise = torch.cat([(z1 - p1.mean) / p1.stddev, (z2 - p2.mean) / p2.stddev, z3], -1)
    assert float(noise.mean(0).abs().max()) < 0.03 and float((noise.std(0) - 1).abs().max()) < 0.03
    assert "top-down hierarchy" in prior.describe() and "1 → 2 → 4" in prior.describe()


def test_each_layers_kl_is_the_closed_form_given_the_layers_above_and_unbiased_for_the_whole_kl() -> None:
    family, posterior, prior = hierarchy(rows=2)
    z = posterior.rsample(30000, generator=torch.Generator().manual_seed(5)).detach()
    _, z2, z3 = z.split(SIZES, -1)
    q3 = normal(posterior.bottom_up[2])
    q2 = normal(precision_weighted(posterior.bottom_up[1], family.top_down.conditional(1, z3)))
    q1 = normal(precision_weighted(posterior.bottom_up[0], family.top_down.conditional(0, z2)))
    exact = [kl_divergence(q1, conditional(family, 0, z2)), kl_divergence(q2, conditional(family, 1, z3))]
    exact.append(kl_divergence(q3, Normal(0.0, 1.0)).expand(30000, 2, -1))
    torch.testing.assert_close(posterior.kl_at(z), torch.cat(exact, -1).detach())
    # averaged over draws, the analytic per-layer sum and log q − log p estimate the same KL(q ‖ p)
    analytic = prior.kl(posterior, z).detach()
    sampled = (posterior.log_prob(z) - prior.log_prob(z)).detach()
    spread = sampled.std(0) / math.sqrt(len(z))
    assert bool(((analytic - sampled.mean(0)).abs() < 4 * spread).all()), (analytic, sampled.mean(0), spread)
    assert prior.kl_per_unit(posterior, z) is not None and prior.kl_per_unit(posterior).shape == (2, sum(SIZES))


def test_noise_for_a_batch_slice_is_the_full_batchs_rows() -> None:
    """Under torchrun each process keeps its rows of one draw for the global batch, through every layer."""
    torch.manual_seed(0)
    family = HierarchyFamily(CONFIG).double()
    features = torch.randn(6, 8, dtype=torch.float64)
    full = family(features).rsample(3, generator=torch.Generator().manual_seed(6))
    part = family(features[2:5]).rsample(3, generator=BatchSlice(torch.Generator().manual_seed(6), 2, 5, 6))
    torch.testing.assert_close(part, full[:, 2:5])


# z1 as one 2×2 map on the ladder network's half-resolution grid of a 4×4 image: the same sizes, [4, 2, 1]
SPATIAL = ModelConfig(
    network="ladder",
    latent="hierarchy",
    hidden=[4],
    latent_dim=2,
    input_shape=[1, 4, 4],
    options={**OPTIONS, "z1_channels": 1},
)


def tiny_model(config: ModelConfig = CONFIG) -> tuple[VAE, Tensor]:
    torch.manual_seed(0)
    model = VAE(config).double()
    shape = config.input_shape
    x = torch.rand(500, *shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).round()
    return model, x


@torch.no_grad()
@pytest.mark.parametrize("config", [CONFIG, SPATIAL], ids=["flat", "spatial"])
def test_llr_above_zero_is_zero_and_each_bound_above_k_is_a_bound_of_its_own(config: ModelConfig) -> None:
    model, x = tiny_model(config)
    assert layer_sizes(config) == SIZES
    ordinary = log_importance_weights(model, x, 16, torch.Generator().manual_seed(8))
    above_zero = log_weights_above(model, x, 0, 16, torch.Generator().manual_seed(8))
    torch.testing.assert_close(above_zero, ordinary)  # LLR>0 = L − L>0 = 0, draw for draw
    # L>k bounds log p(x) too: with the lower layers from the prior, the weights still average to p(x) (here with
    # many samples: the mean of w over 4,000 draws against the k = 4,000 bound of the ordinary weights)
    truth = iwae_bound(model, x[:20], 4000, torch.Generator().manual_seed(9))
    for k in (1, 2):
        bound = torch.logsumexp(log_weights_above(model, x[:20], k, 4000, torch.Generator().manual_seed(10)), 0)
        bound = bound - math.log(4000)
        assert float((bound - truth).mean()) < 0.05, (k, float((bound - truth).mean()))


@torch.no_grad()
@pytest.mark.parametrize("config", [CONFIG, SPATIAL], ids=["flat", "spatial"])
def test_at_the_mean_the_lower_layers_are_their_conditional_priors_mean_and_leave_the_weight(
    config: ModelConfig,
) -> None:
    model, x = tiny_model(config)
    posterior = model.encode(x[:6])
    z, log_ratio = posterior.draw(3, torch.Generator().manual_seed(4), prior_below=1, at_mean=True)
    z1, z2, z3 = model.posterior.top_down.split(z)
    p1 = conditional(model.posterior, 0, z2)
    torch.testing.assert_close(z1, p1.mean)  # z1 set to the mean of p(z1 | z2)
    _, (q2, p2), (q3, _) = posterior.pairs(z)
    assert p2 is not None
    expected = StandardNormal.log_density(z3) - q3.log_prob(z3) + p2.log_prob(z2) - q2.log_prob(z2)  # z1 adds nothing
    torch.testing.assert_close(log_ratio, expected)
    weights = log_weights_above(model, x[:6], 1, 3, torch.Generator().manual_seed(4), at_mean=True)
    torch.testing.assert_close(weights, model.decode(z).log_prob(x[:6]) + log_ratio)


@torch.no_grad()
def test_the_importance_weighted_bound_is_above_the_elbo() -> None:
    model, x = tiny_model()
    elbo = model.elbo(x, torch.Generator().manual_seed(11), samples=8).elbo
    bound = iwae_bound(model, x, 64, torch.Generator().manual_seed(12))
    gaps = bound - elbo
    assert float(gaps.mean()) > 4 * float(gaps.std() / math.sqrt(len(gaps)))


def test_dreg_holds_qs_parameters_fixed_and_keeps_the_path_through_z() -> None:
    model, x = tiny_model()
    posterior = model.encode(x[:4])
    z = posterior.rsample(3)
    frozen = posterior.detached().log_prob(z.detach())
    torch.testing.assert_close(frozen, posterior.log_prob(z.detach()))
    assert not frozen.requires_grad  # no path to the encoder or the shared networks but through z
    assert posterior.detached().log_prob(z).requires_grad


TRAIN = ["train", "--latent", "hierarchy", "--layers", "3", "--ladder-width", "16", "--hidden", "32"]
TRAIN += ["--latent-dim", "8", "--dataset", "digits", "--binarize", "dynamic", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hierarchy") / "run"
    code, stdout, stderr = invoke(*TRAIN, "--epochs", "3", "--warmup", "1", "--out", out)
    assert code == 0, stderr
    assert "test ELBO" in stdout
    return out


def test_a_hierarchy_trains_and_reloads_with_its_settings(trained: Path) -> None:
    run = load_run(trained)
    assert run.config.model.options["layers"] == 3 and run.config.model.options["ladder_width"] == 16
    assert run.model.latent_dim == 8 + 4 + 2 and isinstance(run.model.prior, TopDownPrior)
    assert run.history[-1]["val"]["elbo"] > run.history[0]["val"]["elbo"]
    assert run.model.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)
    assert "--layers" in invoke("train", "--help").stdout


def test_evaluate_reports_each_layers_kl_and_active_units(trained: Path) -> None:
    code, stdout, stderr = invoke("evaluate", trained, "--k", "8", "--prior-samples", "50", "--split", "test", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["kl"]["layer_sizes"] == [8, 4, 2] and len(report["kl"]["kl_per_dim"]) == 14
    test = report["likelihood"][0]
    assert test["nll"] < test["neg_elbo"] and abs(sum(report["kl"]["kl_per_dim"]) - test["kl"]) < 0.5 * test["kl"] + 1
    code, stdout, _ = invoke("evaluate", trained, "--k", "2", "--prior-samples", "50", "--split", "test")
    assert code == 0 and "per layer" in stdout and "z3:" in stdout


def test_score_writes_llr_above_each_k_and_each_layers_kl(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    code, _, stderr = invoke("score", trained, "--dataset", "digits", "--k", "8", "--out", out)
    assert code == 0, stderr
    header = out.read_text().splitlines()[0].split(",")
    assert {"llr>1", "llr>2", "kl_z1", "kl_z2", "kl_z3"} <= set(header)
    table = np.genfromtxt(out, delimiter=",", names=True, deletechars="")
    assert np.isfinite(table["llr>1"]).all() and np.isfinite(table["llr>2"]).all()
    # the per-layer KLs add up to the KL column (the same draw)
    layers = table["kl_z1"] + table["kl_z2"] + table["kl_z3"]
    np.testing.assert_allclose(layers, table["kl"], rtol=1e-4, atol=1e-4)


def hierarchy_config(**overrides: object) -> TrainConfig:
    config = tiny_config(**overrides)
    config.model.latent, config.model.options = "hierarchy", {"layers": 3, "ladder_width": 16}
    return config


@pytest.mark.slow
def test_resume_is_exact(tmp_path: Path) -> None:
    from tests.test_train import StopAfter, losses

    full = train(hierarchy_config(epochs=3), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(hierarchy_config(epochs=3), tmp_path / "cut", callbacks=[StopAfter(1)])
    resumed = train(None, tmp_path / "cut", resume=True)
    assert losses(resumed.history) == losses(full.history)


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{"objective": "iwae", "k": 4, "estimator": "dreg"}, {"free_bits": 0.1}])
def test_the_importance_weighted_objective_and_free_bits_train_a_hierarchy(
    extra: dict[str, object], tmp_path: Path
) -> None:
    record = train(hierarchy_config(epochs=2, **extra), tmp_path / "run").history[-1]["train"]
    assert math.isfinite(record["elbo"])
    if "k" in extra:
        assert record["iwae_bound"] > record["elbo"]


@pytest.mark.slow
def test_two_processes_train_the_same_hierarchy_as_one(tmp_path: Path) -> None:
    one = train(hierarchy_config(epochs=2, batch_size=64), tmp_path / "one")
    args = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "64", "--latent", "hierarchy"]
    args += ["--layers", "3", "--ladder-width", "16", "--epochs", "2", "--quiet", "--out", str(tmp_path / "two")]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launcher, "-m", "vaekit", "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    two = load_run(tmp_path / "two")
    for got, want in zip(two.history, one.history, strict=True):
        assert got["train"]["elbo"] == pytest.approx(want["train"]["elbo"], rel=1e-5)


def test_export_refuses_a_hierarchy_in_one_line(trained: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke("export", trained, "--out", tmp_path / "onnx")
    assert_clean_error(code, stderr, "one stochastic layer", "--latent gaussian")
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--layers", "1"], "--layers"),
        (["--prior", "mog"], "drop --prior mog"),
        (["--model", "ae"], "--model ae takes a gaussian latent"),
        (["--estimator", "score-function"], "use --estimator reparam"),
        (["--second-layer", "8,4"], "drop it, or use --layers 2"),
    ],
)
def test_bad_hierarchy_settings_are_one_line_errors(args: list[str], fragment: str, tmp_path: Path) -> None:
    code, _, stderr = invoke(*TRAIN, "--out", tmp_path / "run", *args)
    assert_clean_error(code, stderr, fragment)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_convolutional_hierarchy_trains_from_the_conv_encoders_features(tmp_path: Path) -> None:
    args = ["train", "--dataset", "digits", "--network", "conv", "--hidden", "8,16", "--latent", "hierarchy"]
    code, _, stderr = invoke(*args, "--layers", "3", "--ladder-width", "16", "--epochs", "1", "--quiet", "--out",
                             tmp_path / "conv")  # fmt: skip
    assert code == 0, stderr
    model = load_run(tmp_path / "conv").model
    assert isinstance(model.encoder[0], torch.nn.Conv2d) and model.posterior.features == 16
    assert model.sample(2).shape == (2, 1, 8, 8)


@torch.no_grad()
def test_a_spatial_z1_reads_its_own_neighbourhood_and_the_decoder_reads_the_maps_above() -> None:
    config = ModelConfig(
        network="ladder", latent="hierarchy", hidden=[4], latent_dim=3, input_shape=[1, 16, 16],
        options={"layers": 3, "ladder_width": 8, "z1_channels": 2},
    )  # fmt: skip
    torch.manual_seed(0)
    model = VAE(config)
    assert layer_sizes(config) == [2 * 8 * 8, 3, 1]
    x = torch.rand(1, 1, 16, 16)
    nudged = x.clone()
    nudged[0, 0, 0, 0] += 1.0  # one corner pixel
    before, after = (model.encode(image).bottom_up[0].mu.reshape(2, 8, 8) for image in (x, nudged))
    changed = (before - after).abs().amax(0) > 0
    assert changed[0, 0] and not changed[5:, :].any() and not changed[:, 5:].any()  # the far corner stays
    z = model.encode(x).rsample(5)
    read = model.posterior.decoder_input(z)
    assert read.shape == (5, 1, (2 + 4) * 8 * 8)
    torch.testing.assert_close(read[..., : 2 * 64], z[..., : 2 * 64])  # z1, then the maps p(z1 | z2) is read from
    torch.testing.assert_close(read[..., 2 * 64 :], model.posterior.top_down.nets[0].features(z[..., 128:131]))


@pytest.mark.slow
def test_a_ladder_hierarchy_with_a_spatial_z1_trains_and_scores(tmp_path: Path) -> None:
    args = ["train", "--dataset", "digits", "--network", "ladder", "--hidden", "8", "--latent", "hierarchy"]
    args += ["--z1-channels", "2", "--latent-dim", "4", "--ladder-width", "16", "--binarize", "dynamic"]
    code, _, stderr = invoke(*args, "--epochs", "1", "--quiet", "--out", tmp_path / "ladder")
    assert code == 0, stderr
    model = load_run(tmp_path / "ladder").model
    assert layer_sizes_of(model) == [2 * 4 * 4, 4, 2]  # z1: two 4×4 maps of the 8×8 digits
    assert model.sample(2).shape == (2, 1, 8, 8)
    code, _, stderr = invoke("score", tmp_path / "ladder", "--dataset", "digits", "--k", "4", "--out",
                             tmp_path / "scores.csv")  # fmt: skip
    assert code == 0, stderr
    header = (tmp_path / "scores.csv").read_text().splitlines()[0].split(",")
    assert {"llr>1", "llr>2", "kl_z1", "kl_z3"} <= set(header)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--latent", "hierarchy", "--z1-channels", "2"], "add --network ladder"),
        (["--network", "ladder"], "add --latent hierarchy --z1-channels C"),
        (["--network", "ladder", "--latent", "hierarchy", "--z1-channels", "2", "--condition", "label"], "--condition"),
    ],
)
def test_a_spatial_z1_and_the_ladder_network_go_together(args: list[str], fragment: str, tmp_path: Path) -> None:
    code, _, stderr = invoke("train", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "run", *args)
    assert_clean_error(code, stderr, fragment)
    assert not (tmp_path / "run" / "model.safetensors").exists()
