"""The model's parts: learned priors against direct mixture computations, the importance-weighted objective and its
DReG gradient, free bits, the networks, and run folders written before the parts (format_version 1)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from tests.conftest import tiny_config
from vaekit import ModelConfig, TrainConfig, VaekitError, load_run, train
from vaekit.config import FORMAT_VERSION
from vaekit.model.objectives import ElboTerms, importance_weighted
from vaekit.model.posteriors import DiagonalGaussian
from vaekit.model.priors import MixtureOfGaussians, StandardNormal, VampPrior
from vaekit.model.vae import VAE


def oracle_mixture(log_weights: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor) -> MixtureSameFamily:
    components = Independent(Normal(means, torch.exp(0.5 * logvars)), 1)
    return MixtureSameFamily(Categorical(logits=log_weights), components)


def test_mixture_of_gaussians_log_prob_matches_torch_distributions() -> None:
    prior = MixtureOfGaussians(latent_dim=3, components=4)
    with torch.no_grad():
        prior.logvars.normal_(0, 0.5)
        prior.logits.normal_()
    z = torch.randn(5, 7, 3)
    expected = oracle_mixture(prior.logits, prior.means, prior.logvars).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), expected, atol=1e-5, rtol=1e-5)


def test_vamp_prior_is_the_mixture_of_the_posteriors_at_its_pseudo_inputs() -> None:
    model = VAE(
        ModelConfig(hidden=[16], latent_dim=3, input_shape=[1, 4, 4], prior="vamp", options={"prior_components": 5})
    )
    assert isinstance(model.prior, VampPrior)
    with torch.no_grad():
        model.prior.pseudo_inputs.uniform_(0, 1)
    posterior = model.encode(model.prior.pseudo_inputs)
    assert isinstance(posterior, DiagonalGaussian)
    z = torch.randn(6, 3)
    expected = oracle_mixture(torch.zeros(5), posterior.mu, posterior.logvar).log_prob(z)
    torch.testing.assert_close(model.prior.log_prob(z), expected, atol=1e-5, rtol=1e-5)
    assert model.prior.sample(8, torch.Generator().manual_seed(0)).shape == (8, 3)
    # the encoder's weights belong to the model once, not again under the prior
    assert not any(name.startswith("prior.encoder") for name in model.state_dict())


def test_a_learned_prior_estimates_the_kl_at_the_posterior_samples_without_bias() -> None:
    """With a mixture of one standard normal, the Monte Carlo KL must average to the closed form."""
    prior = MixtureOfGaussians(latent_dim=2, components=1)
    with torch.no_grad():
        prior.means.zero_()
    q = DiagonalGaussian(torch.tensor([[0.5, -1.0]]), torch.tensor([[-0.5, 0.3]]))
    assert prior.kl_per_unit(q) is None
    z = q.rsample(20000, generator=torch.Generator().manual_seed(0))
    exact = StandardNormal(2).kl(q)
    estimate = prior.kl(q, z).detach()
    spread = (q.log_prob(z) - prior.log_prob(z)).detach().std() / math.sqrt(20000)
    assert abs(float(estimate - exact)) < 4 * float(spread)


def ppca_like_model(images: int = 4) -> tuple[VAE, torch.Tensor]:
    model = VAE(ModelConfig(hidden=[8], latent_dim=2, input_shape=[1, 3, 3])).double()
    x = torch.rand(images, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64).round()
    return model, x


def test_the_importance_weighted_bound_tightens_with_k_and_k1_is_the_sampled_elbo() -> None:
    """Monotone in expectation (Burda et al. 2016, theorem 1): averaged over 2,000 images, each step up in k is
    far larger than the noise."""
    model, x = ppca_like_model(images=2000)
    bounds = []
    with torch.no_grad():
        for k in (1, 4, 16, 64):
            terms = importance_weighted(model, x, k, torch.Generator().manual_seed(0))
            assert terms.bound is not None
            bounds.append(float(terms.bound.mean()))
    assert all(later > earlier + 0.01 for earlier, later in itertools.pairwise(bounds)), bounds
    x = x[:4]
    one = importance_weighted(model, x, 1, torch.Generator().manual_seed(5))
    posterior = model.encode(x)
    z = posterior.rsample(1, generator=torch.Generator().manual_seed(5))
    sampled_elbo = model.decode(z).log_prob(x) + model.prior.log_prob(z) - posterior.log_prob(z)
    torch.testing.assert_close(one.bound, sampled_elbo[0])


def encoder_gradients(model: VAE, x: torch.Tensor, k: int, estimator: str, draws: int) -> torch.Tensor:
    rows = []
    g = torch.Generator().manual_seed(0)
    for _ in range(draws):
        model.zero_grad()
        importance_weighted(model, x, k, g, estimator).objective().sum().backward()
        rows.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))  # type: ignore[union-attr]
    return torch.stack(rows)


@pytest.mark.slow
def test_dreg_has_the_iwae_gradient_in_expectation_and_less_variance() -> None:
    model, x = ppca_like_model()
    iwae, dreg = (encoder_gradients(model, x, 20, estimator, 400) for estimator in ("reparam", "dreg"))
    mean_gap = (iwae.mean(0) - dreg.mean(0)).abs()
    standard_error = ((iwae.var(0) + dreg.var(0)) / len(iwae)).sqrt()
    assert float((mean_gap < 4 * standard_error + 1e-9).double().mean()) > 0.97  # same expectation, entry by entry
    assert float(dreg.var(0).sum()) < 0.5 * float(iwae.var(0).sum())  # and much less spread at k = 20
    decoder = []
    for estimator in ("reparam", "dreg"):  # the decoder's gradient is the IWAE one either way, draw for draw
        model.zero_grad()
        importance_weighted(model, x, 20, torch.Generator().manual_seed(3), estimator).objective().sum().backward()
        decoder.append(torch.cat([p.grad.flatten() for p in model.decoder.parameters()]))  # type: ignore[union-attr]
    torch.testing.assert_close(decoder[0], decoder[1])


@pytest.mark.parametrize("estimator", ["reparam", "dreg"])
def test_the_importance_weighted_gradient_is_log_sum_exps_and_never_subnormal(estimator: str) -> None:
    """A sharp decoder spreads the k log-weights over hundreds of nats, so most normalized weights underflow float32.
    Carried into the backward pass they would make its products subnormal, which x86 CPUs compute many times slower;
    dropped, they change no gradient that float32 can resolve, and the objective stays valued at the bound."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden=[16], latent_dim=4, input_shape=[1, 6, 6]))
    with torch.no_grad():
        [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1].weight.mul_(60.0)
    x = torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(1)).round()
    logit_grads: list[torch.Tensor] = []
    model.decoder.register_full_backward_hook(lambda _m, _gi, go: logit_grads.append(go[0]))
    terms = importance_weighted(model, x, 50, torch.Generator().manual_seed(2), estimator)
    objective = terms.objective()
    objective.sum().backward()
    reaching = logit_grads[0][logit_grads[0] != 0].abs()
    assert len(reaching) > 0 and float(reaching.min()) >= torch.finfo(torch.float32).tiny
    torch.testing.assert_close(objective.detach(), terms.bound)
    if estimator == "reparam":  # the decoder's gradient is the log-sum-exp's, to float32's rounding
        decoder = torch.cat([p.grad.flatten() for p in model.decoder.parameters()])  # type: ignore[union-attr]
        model.zero_grad()
        posterior = model.encode(x)
        z = posterior.rsample(50, generator=torch.Generator().manual_seed(2))
        log_w = model.decode(z).log_prob(x) + model.prior.log_prob(z) - posterior.log_prob(z)
        torch.logsumexp(log_w, dim=0).sum().backward()
        exact = torch.cat([p.grad.flatten() for p in model.decoder.parameters()])  # type: ignore[union-attr]
        assert float((decoder - exact).norm() / exact.norm()) < 1e-5


def test_free_bits_average_to_the_sum_of_floored_unit_means_and_stop_their_gradient() -> None:
    kl_units = torch.tensor([[0.1, 2.0, 0.5], [0.3, 1.0, 0.9]], requires_grad=True)
    terms = ElboTerms(log_px=torch.zeros(2), kl=kl_units.sum(-1), kl_units=kl_units)
    value = terms.objective(beta=1.0, free_bits=0.6)
    # unit means 0.2, 1.5, 0.7 → max(0.6, ·) = 0.6, 1.5, 0.7
    assert float(-value.detach().mean()) == pytest.approx(0.6 + 1.5 + 0.7)
    (-value.mean()).backward()
    assert kl_units.grad is not None and torch.equal(kl_units.grad[:, 0], torch.zeros(2))
    assert bool((kl_units.grad[:, 1:] > 0).all())


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        {"objective": "iwae", "k": 4},
        {"objective": "iwae", "k": 4, "estimator": "dreg"},
        {"free_bits": 0.25},
        {"model": {"prior": "mog", "options": {"prior_components": 3}}},
        {"model": {"prior": "vamp", "options": {"prior_components": 3}, "activation": "tanh"}},
    ],
)
def test_every_objective_and_prior_trains_and_reloads(settings: dict[str, object], tmp_path: Path) -> None:
    config = tiny_config(epochs=2)
    for name, value in settings.items():
        if name == "model":
            for key, inner in value.items():  # type: ignore[attr-defined]
                setattr(config.model, key, inner)
        else:
            setattr(config, name, value)
    run = train(config, tmp_path / "run")
    assert run.history[-1]["train"]["elbo"] > run.history[0]["train"]["elbo"] - 5
    if config.objective == "iwae":  # the bound is recorded, and it is tighter than the ELBO
        assert run.history[-1]["train"]["iwae_bound"] > run.history[-1]["train"]["elbo"]
    loaded = load_run(tmp_path / "run")
    for name, tensor in run.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"estimator": "dreg"}, "add --objective iwae"),
        ({"objective": "iwae", "estimator": "score-function"}, "takes --estimator reparam"),
        ({"objective": "iwae", "free_bits": 1.0}, "free bits apply to a closed-form KL"),
        ({"objective": "iwae", "beta": 4.0}, "drop --beta, --warmup and --samples"),
        ({"free_bits": 0.5, "model": "ae"}, "no KL for free bits"),
    ],
)
def test_settings_that_do_not_fit_together_are_one_line_errors(settings: dict[str, object], message: str) -> None:
    config = TrainConfig()
    for name, value in settings.items():
        if name == "model":
            config.model.kind = str(value)
        else:
            setattr(config, name, value)
    with pytest.raises(VaekitError, match=message):
        config.validate()


@pytest.mark.parametrize("shape", [[1, 28, 28], [3, 32, 32]])
def test_the_residual_conv_network_maps_images_to_likelihoods_of_the_same_shape(shape: list[int]) -> None:
    model = VAE(ModelConfig(network="resconv", hidden=[8, 16], latent_dim=4, input_shape=shape))
    x = torch.rand(2, *shape)
    assert model.decode(model.encode(x).mean).mean.shape == (2, *shape)
    assert any("body" in name for name, _ in model.named_parameters())  # the residual blocks are there


def test_a_version_1_run_folder_still_loads(tmp_path: Path) -> None:
    """Before the parts, config.json had format_version 1 and σ was stored as `log_scale` on the model."""
    config = tiny_config(epochs=1)
    config.model.likelihood = "gaussian-learned"
    run = train(config, tmp_path / "run")
    folder = tmp_path / "run"
    raw = json.loads((folder / "config.json").read_text())
    raw["format_version"] = 1
    options = raw["model"].pop("options")  # version 1 kept the parts' settings beside the model's own
    del options["prior_components"]
    raw["model"].update(options)
    for name in ("activation", "prior"):
        del raw["model"][name]
    for name in ("objective", "k", "free_bits"):
        del raw[name]
    (folder / "config.json").write_text(json.dumps(raw))
    weights = load_file(folder / "model.safetensors")
    weights["log_scale"] = weights.pop("likelihood.log_scale")
    save_file(weights, folder / "model.safetensors", metadata={"epoch": "1"})
    loaded = load_run(folder)
    torch.testing.assert_close(loaded.model.likelihood.log_scale, run.model.likelihood.log_scale)
    assert loaded.config.objective == "elbo" and loaded.config.model.prior == "standard"
    state = torch.load(folder / "state.pt", weights_only=True)  # the checkpoint as version 1 wrote it
    state["model"]["log_scale"] = state["model"].pop("likelihood.log_scale")
    torch.save(state, folder / "state.pt")
    config.epochs = 2
    resumed = train(config, folder, resume=True)  # and it trains on
    assert [record["epoch"] for record in resumed.history] == [1, 2]
    assert json.loads((folder / "config.json").read_text())["format_version"] == FORMAT_VERSION


@pytest.mark.slow
def test_a_version_2_config_keeps_its_parts_settings_beside_the_models_and_they_move_into_options() -> None:
    raw = {"format_version": 2, "model": {"likelihood": "discretized-logistic", "mixtures": 3}, "data": {}}
    config = TrainConfig.from_dict(raw).validate()
    assert config.model.options == {"mixtures": 3}
    assert config.to_dict()["model"]["options"]["mixtures"] == 3 and "mixtures" not in config.to_dict()["model"]
    with pytest.raises(VaekitError, match="mixtures must be between 1 and 256"):
        TrainConfig.from_dict({**raw, "model": {"mixtures": 0}}).validate()


@pytest.mark.parametrize(
    ("likelihood", "scored"),
    [("continuous-bernoulli", "uniformly dequantized"), ("discretized-logistic", "exact probability of each")],
)
def test_the_new_likelihoods_train_and_are_scored_in_bits_per_dim(likelihood: str, scored: str, tmp_path: Path) -> None:
    from vaekit.analysis.evaluate import likelihood_report
    from vaekit.data.sources import load_dataset

    config = tiny_config(epochs=2)
    config.model.likelihood = likelihood
    config.model.options["mixtures"] = 2
    run = train(config, tmp_path / "run")
    assert run.history[-1]["train"]["elbo"] > run.history[0]["train"]["elbo"]
    test = load_dataset(config.data).test.x[:50]
    report = likelihood_report(run.model, test, "test", k=8)
    assert report.data.startswith(scored.split()[0]) or scored in report.data
    assert report.bits_per_dim is not None and 0 < report.bits_per_dim < 8  # a bound on 8-bit data: below 8 bits


def test_every_likelihood_the_config_accepts_has_a_head() -> None:
    from vaekit.config import LIKELIHOODS
    from vaekit.model.heads import HEADS

    assert set(LIKELIHOODS) == set(HEADS)


def test_the_score_function_elbo_refuses_a_prior_without_a_closed_form_kl() -> None:
    """Its sampled KL would need a score term of its own; without one the encoder gradient would be wrong."""
    model = VAE(
        ModelConfig(hidden=[8], latent_dim=2, input_shape=[1, 3, 3], prior="mog", options={"prior_components": 2})
    )
    x = torch.rand(4, 1, 3, 3)
    with pytest.raises(VaekitError, match="need a closed-form KL"):
        model.elbo(x, torch.Generator().manual_seed(0), "score-function", samples=2)
    with pytest.raises(VaekitError, match="unknown estimator 'reparm'"):
        model.elbo(x, torch.Generator().manual_seed(0), "reparm")
