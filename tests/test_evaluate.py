"""`vaekit evaluate`: the KL anatomy, sample-quality metrics, a neighbour audit that can fail, and the report."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from typer.testing import CliRunner

from tests.conftest import tiny_config
from vaekit import VAE, DataConfig, ModelConfig, TrainConfig, load_run, train
from vaekit.analysis.classifier import feature_space
from vaekit.analysis.copying import copying_audit
from vaekit.analysis.evaluate import evaluate, kl_report, likelihood_report, scoring_input
from vaekit.analysis.sample_quality import frechet_distance, inception_fid, nearest, precision_recall
from vaekit.data.sources import load_dataset, load_digits, to_float


def test_kl_report_finds_exactly_the_dimensions_the_encoder_uses() -> None:
    model = VAE(ModelConfig(hidden=[], latent_dim=4, input_shape=[1, 1, 3]))
    with torch.no_grad():
        encoder = model.encoder[1]
        encoder.weight.zero_()
        encoder.bias.zero_()
        encoder.weight[0, 0], encoder.weight[1, 1] = 2.0, 0.5  # mu_0, mu_1 follow the input; mu_2, mu_3 do not
        encoder.bias[4 + 0] = -2.0  # a confident q for z_0
    x = torch.rand(500, 1, 1, 3)
    report = kl_report(model, x)
    assert report.active_units == 2 and report.order[0] == 0
    assert report.kl_per_dim[2] == pytest.approx(0.0, abs=1e-9) and report.kl_per_dim[3] == pytest.approx(0.0, abs=1e-9)
    assert sum(report.kl_per_dim) == pytest.approx(float(model.encode(x).kl().mean().detach()), rel=1e-5)
    assert report.aggregate_var[3] == pytest.approx(1.0)  # an unused dimension's aggregate posterior is the prior


def test_frechet_distance_of_a_set_to_itself_is_zero_and_grows_with_a_shift() -> None:
    a = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-6)  # ‖Δμ‖² with identical covariances
    scaled = frechet_distance(a, 2 * a)  # Tr(Σ + 4Σ − 2·2Σ) = Tr(Σ) ≈ 8
    assert scaled == pytest.approx(8.0, rel=0.1)


def test_precision_and_recall_tell_realism_from_coverage() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 2, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    collapsed = 0.1 * torch.randn(1000, 2, generator=g)  # realistic but covers little
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.5
    off = torch.randn(1000, 2, generator=g) + 6  # covers nothing real
    assert precision_recall(real, off)[0] < 0.05


def test_nearest_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    q, r = torch.rand(50, 1, 3, 3, generator=g), torch.rand(70, 1, 3, 3, generator=g)
    d, i = nearest(q, r, k=2)
    brute = torch.cdist(q.flatten(1).double(), r.flatten(1).double())
    torch.testing.assert_close(d.double(), brute.topk(2, largest=False).values, atol=1e-5, rtol=0)
    assert torch.equal(i, brute.topk(2, largest=False).indices)


@pytest.fixture(scope="module")
def digits_space(classifier_cache: Path):  # type: ignore[no-untyped-def]
    """The session's classifier, as every `evaluate` in the suite reads it (trained by whichever test came first)."""
    data = load_dataset(DataConfig(dataset="digits"))
    return data, feature_space(data, cache=classifier_cache)


@pytest.mark.slow
def test_classifier_is_accurate_and_cached(digits_space, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, space = digits_space
    assert space.test_accuracy > 0.9
    again = feature_space(data, cache=tmp_path)  # a new cache: trained afresh, to the classifier the suite shares
    assert (tmp_path / f"{space.key}.safetensors").is_file()
    assert again.test_accuracy == pytest.approx(space.test_accuracy, abs=0.01)
    assert (again.predict(data.test.x) == space.predict(data.test.x)).float().mean() > 0.99  # float sums vary by thread
    loaded = feature_space(data, cache=tmp_path)  # now read from the cache
    torch.testing.assert_close(loaded.embed(data.test.x), again.embed(data.test.x))


@pytest.mark.slow
def test_a_damaged_classifier_cache_is_trained_again_and_a_linked_one_followed(  # type: ignore[no-untyped-def]
    digits_space, tmp_path: Path
) -> None:
    data, space = digits_space
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)  # the user's own link
    (tmp_path / "elsewhere" / f"{space.key}.json").write_text("[" * 100_000)
    (tmp_path / "elsewhere" / f"{space.key}.safetensors").write_bytes(b"not weights")
    again = feature_space(data, cache=tmp_path / "linked")
    assert again.test_accuracy == pytest.approx(space.test_accuracy, abs=0.01)
    assert (tmp_path / "elsewhere" / f"{space.key}.json").read_text().startswith("{")  # rewritten through the link


@pytest.mark.slow
def test_real_images_score_better_than_blurred_or_shuffled(digits_space) -> None:  # type: ignore[no-untyped-def]
    data, space = digits_space
    test, train = to_float(data.test.x), to_float(data.train.x[: len(data.test)])
    blurred = F.avg_pool2d(F.pad(train, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = train.flatten(1)[:, order].view_as(train)
    real_features = space.embed(test)
    scores = {name: frechet_distance(real_features, space.embed(x)) for name, x in
              (("train", train), ("blurred", blurred), ("shuffled", shuffled))}  # fmt: skip
    assert scores["train"] < scores["blurred"] < scores["shuffled"]
    assert (
        precision_recall(real_features, space.embed(train))[0]
        > precision_recall(real_features, space.embed(shuffled))[0]
    )


def test_the_copying_audit_sees_copies_of_any_training_image_and_not_fresh_draws() -> None:
    """Copies of training images, against the whole training set, sit nearer it than held-out images: far below 50%;
    held-out images of the same law, in the samples' place, are the farther one half the time."""
    images = to_float(load_digits().x).flatten(1)
    train_images, held_out, fresh = images[:1000], images[1000:1300], images[1300:1600]
    noise = torch.randn(300, images.shape[1], generator=torch.Generator().manual_seed(0)) * 0.01
    copies = train_images[torch.randperm(1000, generator=torch.Generator().manual_seed(1))[:300]] + noise
    copied = copying_audit(copies, train_images, held_out, "pixels")
    assert copied.farther < 0.05 and copied.farther_interval[1] < 0.1 and copied.ratio < 0.2
    assert copied.training_images == 1000
    unseen = copying_audit(fresh, train_images, held_out, "pixels")
    low, high = unseen.farther_interval
    assert low < 0.5 < high and 0.85 < unseen.ratio < 1.15
    subset = copying_audit(copies, train_images[:100], held_out, "pixels")  # a subset misses most copies
    assert subset.farther > 10 * copied.farther


@pytest.mark.slow
def test_the_copying_audit_catches_a_model_that_memorized(tmp_path: Path) -> None:
    """A VAE fit to 32 images (each seen 2,400 times) reproduces them; one trained on 1,400 images does not."""
    images = load_digits().x[:, 0].numpy()
    train_pool, test_images = images[:1400], images[1497:]

    def audit(train_images: np.ndarray, repeats: int, epochs: int) -> float:
        np.savez(tmp_path / "d.npz", x=np.repeat(train_images, repeats, axis=0), x_test=test_images)
        data = DataConfig(dataset=str(tmp_path / "d.npz"), val_size=0)
        config = TrainConfig(model=ModelConfig(hidden=[256], latent_dim=8), data=data, epochs=epochs, batch_size=64)
        run = train(config, tmp_path / f"run-{len(train_images)}")
        samples = run.model.sample(300, generator=torch.Generator().manual_seed(0))
        reference = [to_float(torch.from_numpy(a)).unsqueeze(1) for a in (train_images, test_images)]
        return copying_audit(samples, *reference, "pixels").farther

    memorizer = audit(train_pool[:32], repeats=40, epochs=60)
    generalizer = audit(train_pool, repeats=1, epochs=20)
    assert generalizer > 0.4
    assert memorizer < 0.5 * generalizer


def test_gaussian_likelihood_is_scored_on_dequantized_pixels() -> None:
    model = VAE(ModelConfig(likelihood="gaussian-learned", input_shape=[1, 4, 4]))
    x = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    scored, offset, what = scoring_input(model, x, torch.Generator().manual_seed(0))
    assert offset == pytest.approx(-16 * np.log(256)) and "dequantized" in what
    assert (scored >= x.float() / 256).all() and (scored < (x.float() + 1) / 256).all()


def test_inception_fid_says_why_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # importing it now raises ImportError
    value, note = inception_fid(torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8))
    assert value is None and "vaekit[fid]" in note


def test_inception_fid_hands_torch_fidelity_rgb_bytes_and_reports_its_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in torch_fidelity records what it is given: generated images first, 3-channel uint8, x·255 rounded."""
    seen: dict[str, list[torch.Tensor]] = {}

    def calculate_metrics(
        input1: Dataset[torch.Tensor], input2: Dataset[torch.Tensor], fid: bool, verbose: bool
    ) -> dict[str, float]:
        seen["fake"], seen["real"] = [input1[i] for i in range(len(input1))], [input2[i] for i in range(len(input2))]
        return {"frechet_inception_distance": 12.5}

    monkeypatch.setitem(sys.modules, "torch_fidelity", types.SimpleNamespace(calculate_metrics=calculate_metrics))
    real = torch.full((2, 1, 3, 3), 0.2)
    fake = torch.tensor([0.0, 1 / 255, 0.5, 1.0]).view(4, 1, 1, 1).expand(4, 1, 3, 3)
    assert inception_fid(real, fake) == (12.5, "Inception FID via torch-fidelity")
    assert len(seen["fake"]) == 4 and len(seen["real"]) == 2
    expected = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)  # 0.5·255 = 127.5 rounds (half to even) to 128
    for image, level in zip(seen["fake"], expected, strict=True):
        assert image.dtype == torch.uint8 and image.shape == (3, 3, 3) and (image == level).all()
    assert all((image == 51).all() for image in seen["real"])  # 0.2·255 = 51

    def failing(**_: object) -> None:
        raise RuntimeError("weights not downloadable\nsecond line")

    monkeypatch.setitem(sys.modules, "torch_fidelity", types.SimpleNamespace(calculate_metrics=failing))
    value, note = inception_fid(real, fake)
    assert value is None and note.endswith("could not run (weights not downloadable)")


def test_a_fair_coin_model_costs_exactly_one_bit_per_pixel() -> None:
    """All weights zero: q(z|x) = p(z) = N(0, I), so log p(z) − log q(z|x) = 0, and every pixel is a Bernoulli(½)
    whatever z is; log p(x) = −D·ln 2 exactly, for every image, every k and every draw."""
    model = VAE(ModelConfig(hidden=[8], latent_dim=3, input_shape=[2, 3, 4]))  # D = 24 pixels over two channels
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)
    x = torch.randint(0, 256, (5, 2, 3, 4), dtype=torch.uint8)
    report = likelihood_report(model, x, "test", k=7)
    assert report.bits_per_dim == pytest.approx(1.0, abs=1e-6)
    assert report.nll == pytest.approx(24 * np.log(2), abs=1e-5) and report.nll_se == pytest.approx(0.0, abs=1e-6)
    assert report.neg_elbo == pytest.approx(24 * np.log(2), abs=1e-5) and report.kl == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    train(tiny_config(epochs=3), out)
    return out


@pytest.mark.slow
def test_evaluate_answers_all_four_questions_and_writes_its_files(evaluated_run: Path) -> None:
    before = {p.name: p.read_bytes() for p in evaluated_run.iterdir()}
    evaluation = evaluate(load_run(evaluated_run), k=20, prior_samples=100)
    test, train_report = evaluation.likelihood
    assert test.split == "test" and train_report.split == "train" and test.images == 297
    assert test.nll <= test.neg_elbo + 3 * test.neg_elbo_se  # the bound is at least as tight as the ELBO
    run = load_run(evaluated_run)
    means = run.model.encode(to_float(load_dataset(run.config.data).test.x)).mean.detach().double().numpy()
    activity = np.var(means, axis=0)  # Burda et al. 2016: Var_x(E_q[z_d]) over the test images
    np.testing.assert_allclose(evaluation.kl.activity, activity, rtol=1e-6)
    assert evaluation.kl.active_units == int((activity > evaluation.kl.threshold).sum())
    assert evaluation.generalization is not None and len(evaluation.generalization.audits) == 2
    assert evaluation.sample_quality is not None and evaluation.sample_quality.classifier_test_accuracy > 0.9
    saved = json.loads((evaluated_run / "evaluation.json").read_text())
    assert saved == json.loads(json.dumps(evaluation.to_dict()))
    for picture in ("kl_per_dim.png", "neighbours.png"):
        assert (evaluated_run / picture).stat().st_size > 0
    for name, content in before.items():  # the foundation's files are untouched
        assert (evaluated_run / name).read_bytes() == content


@pytest.mark.slow
def test_vaekit_evaluate_in_python_gives_the_commands_numbers(evaluated_run: Path) -> None:
    import vaekit
    from vaekit.cli.main import app

    assert [name for name in vaekit.__all__ if not hasattr(vaekit, name)] == []
    parts = {"DiagonalGaussian", "StandardNormal", "VampPrior", "Bernoulli", "DiscretizedLogisticMixture"}
    assert {"evaluate", "train", "load_run", *parts} <= set(vaekit.__all__)
    args = ["--k", "5", "--prior-samples", "50", "--split", "test", "--seed", "2", "--device", "cpu"]
    result = CliRunner().invoke(app, ["evaluate", str(evaluated_run), *args, "--json"])
    assert result.exit_code == 0, result.stderr
    report = vaekit.evaluate(evaluated_run, k=5, prior_samples=50, split="test", seed=2, device="cpu")
    assert json.loads(json.dumps(report.to_dict())) == json.loads(result.stdout)
    assert report.likelihood[0].k == 5 and report.sample_quality is not None


@pytest.mark.slow
def test_evaluate_command_prints_tables_or_json(evaluated_run: Path) -> None:
    from vaekit.cli.main import app

    result = CliRunner().invoke(app, ["evaluate", str(evaluated_run), "--k", "5", "--prior-samples", "50", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["likelihood"][0]["k"] == 5
    args = ["evaluate", str(evaluated_run), "--k", "5", "--prior-samples", "50", "--split", "test"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "held-out" in result.stdout and "E_q[z_d]" in result.stdout
    result = CliRunner().invoke(app, ["evaluate", str(evaluated_run), "--split", "validation"])
    assert result.exit_code == 2 and "use test, train or both" in result.stderr


def test_a_paired_difference_cancels_the_images_own_spread() -> None:
    from vaekit.analysis.evaluate import paired_difference
    from vaekit.errors import VaekitError

    images = [80.0 + 10 * i for i in range(50)]  # the images differ a lot; the two runs by 0.5 nats on each, ± 0.1
    other = [value + 0.5 + (0.1 if i % 2 else -0.1) for i, value in enumerate(images)]
    mean, low, high = paired_difference(other, images)
    assert mean == pytest.approx(0.5) and 0.45 < low < 0.5 < high < 0.55  # unpaired, the interval would span ±40
    with pytest.raises(VaekitError, match="the same images on both sides, got 3 and 2"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.slow
@pytest.mark.parametrize(("split", "titles"), [("test", 3), ("both", 5)])
def test_the_printed_report_is_numbered_as_shown_and_fits_80_columns(
    evaluated_run: Path, split: str, titles: int
) -> None:
    from tests.conftest import invoke

    args = ("evaluate", evaluated_run, "--k", "5", "--prior-samples", "50", "--split", split)
    code, stdout, stderr = invoke(*args, env={"COLUMNS": "80"})
    assert code == 0, stderr
    numbered = [line.split(".")[0] for line in stdout.splitlines() if line[:2] in {f"{n}." for n in range(1, 9)}]
    assert numbered == [str(n) for n in range(1, titles + 1)]  # a test-split report has no section 3 to skip
    assert max(len(line) for line in stdout.splitlines() if not line.startswith("wrote ")) <= 80
    assert not re.search(r"…\s*[│┃]", stdout)  # no header or cell cut short (rich ends those with …)
    assert "NLL (importance-weighted bound)" in stdout and "bits/dim" in stdout


def test_scoring_reports_its_progress_call_by_call_up_to_the_total() -> None:
    """What the progress bar of `vaekit evaluate` shows: every call of a split counted once, in order, to its total,
    and the same bound as without a bar."""
    from vaekit.analysis.evaluate import MAX_ROWS, likelihood_scores

    model = VAE(ModelConfig(hidden=[8], latent_dim=2, input_shape=[1, 3, 3]))
    x = torch.rand(50, 1, 3, 3)
    k = MAX_ROWS // 10  # 10 images a call: 5 calls
    seen: list[tuple[str, int, int]] = []
    report, _ = likelihood_scores(model, x, "test", k, progress=lambda *step: seen.append(step))
    assert seen == [("scoring the test split, k = 409", done, 5) for done in range(1, 6)]
    assert report.nll == likelihood_scores(model, x, "test", k)[0].nll
