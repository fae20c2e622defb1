"""Networks and the VAE: shapes for every supported input, the ELBO's terms, warm-up, and gradients to the encoder."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_config
from vaekit import VAE, ModelConfig
from vaekit.errors import VaekitError
from vaekit.model.likelihoods import LOG_SCALE_MIN, Gaussian
from vaekit.training.epoch import beta_at


@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 32, 32), (3, 28, 28)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian-pixel"])
def test_shapes_for_every_network_and_input(network: str, shape: tuple[int, int, int], likelihood: str) -> None:
    config = ModelConfig(
        network=network,
        hidden=[8, 16] if network == "conv" else [32],
        latent_dim=5,
        likelihood=likelihood,
        input_shape=list(shape),
    )
    model = VAE(config)
    x = torch.rand(3, *shape)
    posterior = model.encode(x)
    assert posterior.mean.shape == (3, 5)
    assert model.decode(posterior.rsample()).mean.shape == (3, *shape)
    assert model.decode(posterior.rsample(4)).mean.shape == (4, 3, *shape)
    terms = model.elbo(x)
    assert terms.elbo.shape == terms.kl.shape == terms.log_px.shape == (3,)
    assert model.sample(6).shape == (6, *shape)
    assert model.reconstruct(x).shape == x.shape


def test_conv_network_rejects_sizes_it_cannot_halve() -> None:
    with pytest.raises(VaekitError, match="divisible by 4"):
        VAE(ModelConfig(network="conv", hidden=[8, 16], input_shape=[1, 30, 30]))


def test_elbo_is_reconstruction_minus_kl_and_kl_is_nonnegative() -> None:
    model = VAE(ModelConfig(hidden=[16], latent_dim=3, input_shape=[1, 8, 8]))
    x = torch.rand(10, 1, 8, 8)
    terms = model.elbo(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms.elbo, terms.log_px - terms.kl)
    assert (terms.kl >= 0).all()
    torch.testing.assert_close(terms.objective(0.5), terms.log_px - 0.5 * terms.kl)


def test_elbo_gradient_reaches_every_encoder_parameter() -> None:
    model = VAE(ModelConfig(hidden=[16], latent_dim=3, input_shape=[1, 8, 8]))
    (-model.elbo(torch.rand(10, 1, 8, 8)).elbo.mean()).backward()
    for name, parameter in model.encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_learned_gaussian_scale_is_a_parameter_and_fixed_is_not() -> None:
    learned = VAE(ModelConfig(likelihood="gaussian-learned", input_shape=[1, 8, 8]))
    fixed = VAE(ModelConfig(likelihood="gaussian", input_shape=[1, 8, 8]))
    assert any(name == "likelihood.log_scale" for name, _ in learned.named_parameters())
    assert all(name != "likelihood.log_scale" for name, _ in fixed.named_parameters())
    assert "likelihood.log_scale" in fixed.state_dict()


@pytest.mark.parametrize("likelihood", ["gaussian-learned", "gaussian-pixel"])
def test_a_learned_gaussian_scale_has_a_floor(likelihood: str) -> None:
    """A σ learned towards 0 (constant pixels of continuous data) would send log p(x|z) to infinity."""
    shape = [1, 4, 4]
    model = VAE(ModelConfig(likelihood=likelihood, hidden=[16], latent_dim=2, input_shape=shape))
    with torch.no_grad():
        model.likelihood.log_scale.fill_(-60.0)
    p_x = model.decode(torch.zeros(3, 2))
    x = p_x.mean.detach() + 0.01
    assert torch.isfinite(p_x.log_prob(x)).all()
    torch.testing.assert_close(p_x.log_prob(x), Gaussian(p_x.mean, torch.tensor(LOG_SCALE_MIN)).log_prob(x))
    fixed = VAE(
        ModelConfig(
            likelihood="gaussian", options={"gaussian_scale": 1e-4}, hidden=[16], latent_dim=2, input_shape=shape
        )
    )
    torch.testing.assert_close(fixed.decode(torch.zeros(3, 2)).stddev, torch.full((3, *shape), 1e-4))  # as chosen


def test_linear_kl_warmup_ramps_to_beta() -> None:
    config = tiny_config(beta=2.0, warmup_epochs=2.0)
    steps_per_epoch = 10
    assert beta_at(config, 0, steps_per_epoch) == 0.0
    assert beta_at(config, 10, steps_per_epoch) == pytest.approx(1.0)
    assert beta_at(config, 20, steps_per_epoch) == pytest.approx(2.0)
    assert beta_at(config, 50, steps_per_epoch) == pytest.approx(2.0)
    assert beta_at(tiny_config(beta=0.5), 0, steps_per_epoch) == 0.5
