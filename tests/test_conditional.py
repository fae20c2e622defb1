"""The conditional VAE: q(z|x, y) and p(x|z, y) see the class label, training and scoring pass each image's own.

The oracle that the label is used: a trained model scores test images better with their true labels than with the
same labels shuffled. Unconditional models are checked against networks built straight from the registry.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import invoke, tiny_config
from tests.test_cli import assert_clean_error
from vaekit import ModelConfig, load_run, train
from vaekit.data.sources import load_dataset
from vaekit.model.networks import network as network_family
from vaekit.model.vae import VAE
from vaekit.training.loop import evaluate_split
from vaekit.training.runs import Run

TINY = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--quiet"]
DIGITS = 10  # sklearn's digits: labels 0..9, 8x8 images
TILE = 8 * 7 + 2 * 7  # an 8-pixel image enlarged 7x to 56 px, and its 2 px padding enlarged with it


@pytest.fixture(scope="module")
def conditional(tmp_path_factory: pytest.TempPathFactory) -> Run:
    config = tiny_config(epochs=15)
    config.model.condition = "label"
    return train(config, tmp_path_factory.mktemp("cvae") / "run")


@pytest.mark.slow
def test_training_fills_in_the_classes_and_a_reload_has_identical_weights(conditional: Run) -> None:
    assert conditional.config.model.classes == DIGITS
    loaded = load_run(conditional.path)
    assert loaded.config.model.condition == "label" and loaded.model.classes == DIGITS
    trained, reloaded = conditional.model.state_dict(), loaded.model.state_dict()
    assert trained.keys() == reloaded.keys()
    for name, tensor in trained.items():
        assert torch.equal(tensor, reloaded[name]), name
    assert {"samples.png", "reconstructions.png", "curves.png"} <= {p.name for p in conditional.path.iterdir()}


@pytest.mark.slow
def test_the_true_labels_score_better_than_shuffled_ones(conditional: Run) -> None:
    test = load_dataset(conditional.config.data).test
    assert test.y is not None
    shuffled = test.y[torch.randperm(len(test.y), generator=torch.Generator().manual_seed(0))]
    assert (shuffled != test.y).float().mean() > 0.8  # most images get another class
    true = evaluate_split(conditional.model, test.x, y=test.y)
    wrong = evaluate_split(conditional.model, test.x, y=shuffled)
    assert true["elbo"] > wrong["elbo"] + 1.0, (true, wrong)  # nats per image
    assert conditional.final is not None and conditional.final["test"]["elbo"] == pytest.approx(true["elbo"])


@pytest.mark.slow
def test_a_conditional_model_refuses_to_run_without_labels(conditional: Run) -> None:
    from vaekit.errors import VaekitError

    x = torch.rand(3, 1, 8, 8)
    with pytest.raises(VaekitError, match="pass y"):
        conditional.model.encode(x)
    with pytest.raises(VaekitError, match="pass y"):
        conditional.model.sample(3)


@pytest.mark.slow
@pytest.mark.parametrize("network", ["mlp", "conv", "resconv"])
def test_an_unconditional_model_is_built_and_runs_as_the_networks_alone(network: str) -> None:
    config = ModelConfig(network=network, hidden=[8, 16], latent_dim=3, input_shape=[1, 8, 8])
    model = VAE(config).eval()
    build_encoder, build_decoder = network_family(network).encoder, network_family(network).decoder
    encoder = build_encoder((1, 8, 8), [8, 16], model.posterior.features, "relu")
    decoder = build_decoder(model.output_shape, [8, 16], 3, "relu")
    expected = {f"encoder.{k}": v.shape for k, v in encoder.state_dict().items()}
    expected |= {f"decoder.{k}": v.shape for k, v in decoder.state_dict().items()}
    got = {k: v.shape for k, v in model.state_dict().items() if k.startswith(("encoder.", "decoder."))}
    assert got == expected
    encoder.load_state_dict(model.encoder.state_dict())
    decoder.load_state_dict(model.decoder.state_dict())
    x, z, labels = torch.rand(5, 1, 8, 8), torch.randn(2, 5, 3), torch.arange(5)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(x).mean, model.posterior(encoder(x)).mean, rtol=0, atol=0)
        direct = model.likelihood(decoder(z.flatten(0, 1))).mean.view(2, 5, 1, 8, 8)
        torch.testing.assert_close(model.decode(z).mean, direct, rtol=0, atol=0)
        torch.testing.assert_close(model.encode(x, labels).mean, model.encode(x).mean, rtol=0, atol=0)  # y ignored

    conditioned = VAE(ModelConfig(**{**config.__dict__, "condition": "label", "classes": 4}))
    shapes = {k: v.shape for k, v in conditioned.state_dict().items()}
    assert shapes.keys() == model.state_dict().keys()  # the same names: only two input widths grow
    grown = {k for k, v in shapes.items() if v != model.state_dict()[k].shape}
    first_encoder = next(k for k in got if k.startswith("encoder.") and k.endswith("weight"))
    first_decoder = next(k for k in got if k.startswith("decoder.") and k.endswith("weight"))
    assert grown == {first_encoder, first_decoder}
    assert shapes[first_encoder][1] == got[first_encoder][1] + 4  # one-hot inputs (MLP) or constant channels (conv)
    assert shapes[first_decoder][1] == 3 + 4


@pytest.mark.slow
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_the_label_changes_what_both_networks_compute(network: str) -> None:
    config = ModelConfig(network=network, hidden=[8, 16], latent_dim=3, input_shape=[1, 8, 8], condition="label")
    config.classes = 4
    model = VAE(config).eval()
    x, z = torch.rand(2, 1, 8, 8), torch.randn(2, 3)
    zeros, threes = torch.zeros(2, dtype=torch.long), torch.full((2,), 3)
    with torch.no_grad():
        assert not torch.allclose(model.encode(x, zeros).mean, model.encode(x, threes).mean)
        assert not torch.allclose(model.decode(z, zeros).mean, model.decode(z, threes).mean)
        samples = model.decode(torch.randn(6, 2, 3), zeros).mean  # leading sample dimensions keep their labels
    assert samples.shape == (6, 2, 1, 8, 8)


@pytest.mark.slow
def test_cli_trains_a_conditional_run_and_samples_one_class(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, stdout, stderr = invoke("train", *TINY, "--epochs", "1", "--condition", "label", "--out", run)
    assert code == 0, stderr
    assert "test ELBO" in stdout
    for label in ("3", "5"):
        code, _, stderr = invoke("sample", run, "--label", label, "--n", "9", "--out", tmp_path / f"{label}.png")
        assert code == 0, stderr
    three, five = (np.asarray(Image.open(tmp_path / f"{label}.png")) for label in ("3", "5"))
    assert three.shape == five.shape == (3 * TILE + 14, 3 * TILE + 14)
    assert not np.array_equal(three, five)  # same seed, same codes: only the label differs

    code, _, stderr = invoke("sample", run, "--n", "20", "--out", tmp_path / "grid.png")
    assert code == 0, stderr
    with Image.open(tmp_path / "grid.png") as grid:  # one row per class, ⌈20 / 10⌉ = 2 samples each
        assert (grid.height - 14) / TILE == DIGITS and (grid.width - 14) / TILE == math.ceil(20 / DIGITS)

    code, _, stderr = invoke("reconstruct", run, "--n", "4", "--out", tmp_path / "r.png")
    assert code == 0, stderr
    code, stdout, stderr = invoke("evaluate", run, "--k", "5", "--prior-samples", "20", "--split", "test", "--json")
    assert code == 0, stderr

    assert_clean_error(*invoke("sample", run, "--label", "10")[::2], "--label 10", "classes 0 to 9")
    assert_clean_error(*invoke("sample", run, "--sampler", "gmm")[::2], "--sampler prior")
    for command in (["latent", "interpolate"], ["latent", "traverse"], ["serve"]):
        assert_clean_error(*invoke(*command, run)[::2], "conditional run", "--condition none")


def test_bad_conditional_input_is_one_line(tmp_path: Path) -> None:
    run = tmp_path / "plain"
    assert invoke("train", *TINY, "--epochs", "1", "--out", run)[0] == 0
    assert_clean_error(*invoke("sample", run, "--label", "3")[::2], "--label needs a conditional run")
    assert_clean_error(*invoke("train", *TINY, "--condition", "class")[::2], "unknown condition", "'label'")
    assert_clean_error(
        *invoke("train", *TINY, "--condition", "label", "--prior", "vamp")[::2], "VampPrior", "--prior standard"
    )
    unlabelled = tmp_path / "images.npy"
    np.save(unlabelled, np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    args = ["--dataset", unlabelled, "--hidden", "8", "--latent-dim", "2", "--quiet", "--condition", "label"]
    assert_clean_error(*invoke("train", *args, "--out", tmp_path / "x")[::2], "needs a class label", "labelled")
    labels = np.zeros(40, dtype=np.int64)
    np.savez(tmp_path / "one.npz", x=np.zeros((40, 8, 8), np.uint8), y=labels)
    args[1] = tmp_path / "one.npz"
    assert_clean_error(*invoke("train", *args, "--out", tmp_path / "y")[::2], "single class")
