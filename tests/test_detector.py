"""`vaekit.Detector`: the scikit-learn/PyOD outlier-detector interface over a VAE, trained from arrays or built on a run
folder; it survives `clone` and a `Pipeline`, and tells digits from noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from tests.conftest import tiny_config
from vaekit import Detector, VaekitError, load_run, train


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits as PyOD users hold them, rows of 64 features with values 0 to 16; 1,500 to fit, the rest and as many
    rows of uniform noise to score."""
    x = load_digits().data
    noise = np.random.default_rng(0).uniform(0, 16, size=(297, 64))
    return x[:1500], x[1500:], noise


def scaled(x: np.ndarray) -> np.ndarray:
    return x / 16.0


def test_a_pipeline_fits_it_on_arrays_and_it_flags_noise(
    digits: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    fit_rows, held_out, noise = digits
    detector = Detector(contamination=0.05, epochs=15, k=20, hidden=(64,), latent_dim=4, work_dir=tmp_path)
    pipeline = Pipeline([("scale", FunctionTransformer(scaled)), ("detect", detector)])
    pipeline.fit(fit_rows)
    fitted = pipeline.named_steps["detect"]
    assert fitted.labels_.mean() == pytest.approx(0.05, abs=0.01)  # the contamination share of X is flagged
    assert (fitted.decision_scores_ > fitted.threshold_).sum() == fitted.labels_.sum()
    scores = np.concatenate([pipeline.decision_function(held_out), pipeline.decision_function(noise)])
    truth = np.r_[np.zeros(len(held_out)), np.ones(len(noise))]
    assert roc_auc_score(truth, scores) > 0.99
    assert pipeline.predict(noise).mean() > 0.95 and pipeline.predict(held_out).mean() < 0.2
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_clone_gives_an_unfitted_copy_with_the_same_settings() -> None:
    detector = Detector(score="mse", contamination=0.2, hidden=(32, 16), epochs=3)
    copy = clone(detector)
    assert copy is not detector and copy.get_params() == detector.get_params()
    assert not hasattr(copy, "threshold_")
    with pytest.raises(VaekitError, match="not fitted yet"):
        copy.decision_function(np.zeros((2, 64)))


def test_it_scores_with_a_trained_run_folder_and_checks_its_input(
    digits: tuple[np.ndarray, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    run = train(tiny_config(epochs=2), tmp_path / "run")
    images = load_digits().images[:200] / 16.0  # (N, 8, 8), as the run was trained on
    detector = Detector(run=run.path, score="mse", k=5).fit(images)
    assert detector.decision_function(images[:3]).shape == (3,)
    with pytest.raises(VaekitError, match="rows of shape \\[1, 1, 64\\] and the model takes \\[1, 8, 8\\]"):
        detector.decision_function(digits[1] / 16.0)
    for bad, message in ((Detector(run=run.path, score="likelihood"), "score='likelihood'"),
                         (Detector(run=run.path, contamination=0.7), "contamination=0.7")):  # fmt: skip
        with pytest.raises(VaekitError, match=message):
            bad.fit(images)


@pytest.mark.parametrize(("z1_channels", "network"), [(0, "mlp"), (2, "ladder")])
def test_a_hierarchy_detector_scores_by_llr_and_names_the_ks_it_allows(
    z1_channels: int, network: str, tmp_path: Path
) -> None:
    images = load_digits().images[:300] / 16.0
    detector = Detector(score="llr>1", layers=3, z1_channels=z1_channels, latent_dim=4, hidden=(8,), epochs=2, k=4,
                        work_dir=tmp_path / "h")  # fmt: skip
    scores = detector.fit(images).decision_function(images[:5])
    assert scores.shape == (5,) and np.isfinite(scores).all()
    model = load_run(tmp_path / "h" / "run").config.model
    assert (model.latent, model.network, model.options.get("z1_channels", 0)) == ("hierarchy", network, z1_channels)
    with pytest.raises(VaekitError, match="its hierarchy allows llr>1, llr>2"):
        Detector(run=tmp_path / "h" / "run", score="llr>3", k=2).fit(images)
    plain = train(tiny_config(epochs=1), tmp_path / "plain")
    with pytest.raises(VaekitError, match="LLR>k needs layers ≥ 2"):
        Detector(run=plain.path, score="llr>1", k=2).fit(images)
    with pytest.raises(VaekitError, match="score='llr>0'"):
        Detector(score="llr>0").fit(images)
