"""`vaekit sample --sampler gmm`: a Gaussian mixture fitted to an autoencoder's codes, its samples, its JSON cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from tests.conftest import invoke, tiny_config
from tests.test_cli import assert_clean_error
from vaekit import VAE, load_run, train
from vaekit.analysis import aggregate_sampler
from vaekit.analysis.aggregate_sampler import CACHE, AggregateGMM, fit_aggregate_gmm
from vaekit.data.sources import load_dataset, to_float
from vaekit.errors import VaekitError
from vaekit.training.runs import WEIGHTS, Run


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(epochs=3)
    config.model.kind = "ae"
    out = tmp_path_factory.mktemp("gmm") / "ae"
    train(config, out)
    return out


@pytest.fixture
def run_copy(ae_run: Path, tmp_path: Path) -> Path:
    """A private copy, so that each test starts without a cache."""
    return Path(shutil.copytree(ae_run, tmp_path / "run"))


@pytest.mark.slow
def test_mixture_models_autoencoder_test_codes_better_than_the_prior(ae_run: Path) -> None:
    run = load_run(ae_run)
    gmm = fit_aggregate_gmm(run, components=5, seed=0, cache=False)
    test_x = load_dataset(run.config.data).test.x
    with torch.no_grad():
        z = run.model.encode(to_float(test_x)).mean
    under_gmm, under_prior = gmm.log_prob(z).mean(), run.model.prior_log_prob(z).mean()
    assert under_gmm > under_prior + 5  # nats per code: an autoencoder's codes do not fill N(0, I)
    assert not (ae_run / CACHE).exists()


def test_log_prob_matches_torch_distributions() -> None:
    generator = torch.Generator().manual_seed(1)
    k, d = 3, 4
    factors = torch.randn(k, d, d, generator=generator, dtype=torch.float64)
    covariances = factors @ factors.transpose(1, 2) + 0.1 * torch.eye(d, dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    means = torch.randn(k, d, generator=generator, dtype=torch.float64)
    gmm = AggregateGMM(weights, means, covariances, {}, images=0, converged=True)
    oracle = MixtureSameFamily(Categorical(weights), MultivariateNormal(means, covariance_matrix=covariances))
    z = torch.randn(2, 7, d, generator=generator)
    torch.testing.assert_close(gmm.log_prob(z), oracle.log_prob(z.double()), rtol=1e-10, atol=1e-10)


def test_samples_have_the_mixture_moments_and_repeat_for_a_seed() -> None:
    weights = torch.tensor([0.25, 0.75], dtype=torch.float64)
    means = torch.tensor([[-4.0, 0.0], [2.0, 1.0]], dtype=torch.float64)
    covariances = torch.tensor([[[1.0, 0.5], [0.5, 1.0]], [[0.25, 0.0], [0.0, 4.0]]], dtype=torch.float64)
    gmm = AggregateGMM(weights, means, covariances, {}, images=0, converged=True)
    z = gmm.sample(40_000, torch.Generator().manual_seed(3))
    assert z.shape == (40_000, 2) and z.dtype == torch.float32
    assert torch.equal(z, gmm.sample(40_000, torch.Generator().manual_seed(3)))
    assert not torch.equal(z, gmm.sample(40_000, torch.Generator().manual_seed(4)))
    first = z[:, 0] < -1  # the components barely overlap along the first axis
    assert float(first.double().mean()) == pytest.approx(0.25, abs=0.01)
    for k, rows in enumerate((first, ~first)):
        torch.testing.assert_close(z[rows].mean(0).double(), means[k], atol=0.05, rtol=0)
        torch.testing.assert_close(z[rows].T.double().cov(), covariances[k], atol=0.1, rtol=0.05)


@pytest.mark.slow
def test_fitted_samples_have_the_code_shape_and_the_fit_is_deterministic(ae_run: Path) -> None:
    run = load_run(ae_run)
    a = fit_aggregate_gmm(run, components=4, fit_images=500, seed=2, cache=False)
    b = fit_aggregate_gmm(run, components=4, fit_images=500, seed=2, cache=False)
    assert a.images == 500 and a.components == 4
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    z = a.sample(9, torch.Generator().manual_seed(0))
    assert z.shape == (9, run.model.latent_dim)
    assert torch.equal(z, b.sample(9, torch.Generator().manual_seed(0)))


@pytest.mark.slow
def test_cache_round_trips_exactly_is_reused_and_refit_when_anything_changes(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fits = []
    real_fit = aggregate_sampler.fit_mixture

    def counting_fit(*args: object, **kwargs: object) -> AggregateGMM:
        fits.append(1)
        return real_fit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aggregate_sampler, "fit_mixture", counting_fit)
    run = load_run(run_copy)
    fitted = fit_aggregate_gmm(run, components=3, seed=0)
    saved = json.loads((run_copy / CACHE).read_text())
    assert saved["key"]["components"] == 3 and len(saved["key"]["weights_sha256"]) == 64
    reused = fit_aggregate_gmm(run, components=3, seed=0)
    assert len(fits) == 1 and reused.cached and not fitted.cached
    for name in ("weights", "means", "covariances"):
        assert torch.equal(getattr(reused, name), getattr(fitted, name))  # bit for bit through JSON

    fit_aggregate_gmm(run, components=2, seed=0)
    fit_aggregate_gmm(run, components=2, seed=1)
    assert len(fits) == 3 and json.loads((run_copy / CACHE).read_text())["key"]["seed"] == 1

    tensors = load_file(run_copy / WEIGHTS)  # the run trained further: other weights, same config
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, run_copy / WEIGHTS, metadata={"epoch": "3"})
    fit_aggregate_gmm(load_run(run_copy), components=2, seed=1)
    assert len(fits) == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(means=d["means"][:-1]),
        lambda d: d.update(covariances=[[[float(i == j) * -1 for j in range(4)] for i in range(4)]] * 2),
        lambda d: d.update(weights=[0.9, 0.9]),
        lambda d: d.pop("weights"),
    ],
)
def test_a_damaged_cache_is_fitted_again(run_copy: Path, damage: object) -> None:
    run = load_run(run_copy)
    fitted = fit_aggregate_gmm(run, components=2)
    data = json.loads((run_copy / CACHE).read_text())
    damage(data)  # type: ignore[operator]
    (run_copy / CACHE).write_text(json.dumps(data))
    again = fit_aggregate_gmm(run, components=2)
    assert not again.cached and torch.equal(again.means, fitted.means)
    assert json.loads((run_copy / CACHE).read_text()) == fitted.to_json()


@pytest.mark.slow
def test_bad_settings_and_categorical_runs_are_refused_in_one_line(ae_run: Path, tmp_path: Path) -> None:
    run = load_run(ae_run)
    with pytest.raises(VaekitError, match="at least one component"):
        fit_aggregate_gmm(run, components=0)
    with pytest.raises(VaekitError, match="exceeds the 1350 training images"):
        fit_aggregate_gmm(run, components=2000, fit_images=20_000, cache=False)
    config = tiny_config()
    config.model.latent, config.model.options = "categorical", {"latent_vars": 3, "categories": 4}
    config.model.input_shape = [1, 8, 8]
    categorical = Run(tmp_path, config, VAE(config.model))
    with pytest.raises(VaekitError, match="categorical") as error:
        fit_aggregate_gmm(categorical)
    assert "\n" not in str(error.value) and "--sampler prior" in str(error.value)


@pytest.mark.slow
def test_sample_command_writes_a_gmm_grid_and_reuses_the_fit(run_copy: Path, tmp_path: Path) -> None:
    gmm_png, prior_png = tmp_path / "gmm.png", tmp_path / "prior.png"
    gmm_args = ("--sampler", "gmm", "--components", "3", "--n", "9")
    code, stdout, stderr = invoke("sample", run_copy, *gmm_args, "--out", gmm_png)
    assert code == 0, stderr
    assert "fitted: 3-component mixture of 1350 training codes" in stdout and (run_copy / CACHE).is_file()
    code, stdout, stderr = invoke("sample", run_copy, "--n", "9", "--out", prior_png)
    assert code == 0, stderr
    gmm_picture, prior_picture = Image.open(gmm_png), Image.open(prior_png)
    assert gmm_picture.size == prior_picture.size  # the same 3×3 grid of the same tiles
    assert not np.array_equal(np.asarray(gmm_picture), np.asarray(prior_picture))
    again = tmp_path / "again.png"
    code, stdout, _ = invoke("sample", run_copy, *gmm_args, "--out", again)
    assert code == 0 and stdout.startswith("cached:") and again.read_bytes() == gmm_png.read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--sampler", "gmm", "--components", "0"), "--components 0"),
        (("--sampler", "gmm", "--fit-images", "2"), "--fit-images 2"),
        (("--sampler", "vamp"), "unknown sampler 'vamp'"),
        (("--components", "3"), "add --sampler gmm"),
    ],
)
def test_sample_command_refuses_bad_gmm_settings_in_one_line(
    run_copy: Path, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    code, _, stderr = invoke("sample", run_copy, *args, "--out", tmp_path / "s.png")
    assert_clean_error(code, stderr, fragment)
    assert not (tmp_path / "s.png").exists() and not (run_copy / CACHE).exists()
