"""`vaekit score`: per-image scores of any dataset under a run, as CSV or Parquet, that average to what `vaekit
evaluate` reports, rank data unlike the training data higher, and refuse bad input in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit import load_run, train
from vaekit.analysis.detection import calibrate, separation, typicality, wilson
from vaekit.analysis.evaluate import likelihood_report
from vaekit.analysis.scores import score_images
from vaekit.data.sources import load_dataset
from vaekit.errors import VaekitError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("score") / "run"
    train(tiny_config(epochs=3), folder)
    return folder


def read_csv(path: Path) -> dict[str, np.ndarray]:
    with path.open() as f:
        rows = list(csv.reader(f))
    return {name: np.array([float(row[i]) for row in rows[1:]]) for i, name in enumerate(rows[0])}


def test_the_rows_average_to_the_evaluate_report_of_the_same_images(run_dir: Path) -> None:
    run = load_run(run_dir)
    columns = score_images(run, "digits", "test", k=10, seed=3)
    test = load_dataset(run.config.data).test
    report = likelihood_report(run.model, test.x, "test", 10, 3, run.config.data)
    assert report.nll == pytest.approx(columns["nll"].mean())
    assert report.neg_elbo == pytest.approx(columns["neg_elbo"].mean())
    assert report.mse == pytest.approx(columns["mse"].mean())
    np.testing.assert_array_equal(columns["label"], test.y.numpy())
    np.testing.assert_allclose(columns["neg_elbo"], columns["reconstruction_nll"] + columns["kl"])
    np.testing.assert_allclose(columns["bits_per_dim"], columns["nll"] / (64 * np.log(2)))


def test_csv_and_parquet_hold_the_same_table(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    code, stdout, stderr = invoke("score", run_dir, "--dataset", "digits", "--k", "5", "--out", tmp_path / "s.csv")
    assert code == 0, stderr
    assert "297 images × nll, bits_per_dim, neg_elbo, kl, reconstruction_nll, mse" in stdout
    code, _, stderr = invoke("score", run_dir, "--dataset", "digits", "--k", "5", "--out", tmp_path / "s.parquet")
    assert code == 0, stderr
    table, parquet = read_csv(tmp_path / "s.csv"), pq.read_table(tmp_path / "s.parquet").to_pydict()
    assert list(table) == list(parquet) == ["index", "label", "nll", "bits_per_dim", "neg_elbo", "kl",
                                            "reconstruction_nll", "mse"]  # fmt: skip
    for name, values in table.items():
        np.testing.assert_allclose(values, parquet[name], rtol=1e-12)


def test_images_unlike_the_training_data_score_worse(run_dir: Path, tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(400, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise[:300], x_test=noise[300:])
    run = load_run(run_dir)
    own, other = (score_images(run, d, "test", k=5)["nll"] for d in ("digits", str(tmp_path / "noise.npz")))
    assert np.median(other) > np.quantile(own, 0.99)


def test_bad_requests_are_one_line_errors_and_write_nothing(run_dir: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke("score", run_dir, "--dataset", "digits", "--out", tmp_path / "s.xlsx")
    one_line_error(code, stderr, "--out", "name a .csv or .parquet file")
    np.savez(tmp_path / "big.npz", x=np.zeros((20, 10, 10), dtype=np.uint8))
    code, _, stderr = invoke("score", run_dir, "--dataset", tmp_path / "big.npz", "--out", tmp_path / "s.csv")
    one_line_error(code, stderr, "[1, 10, 10] images and the run takes [1, 8, 8]")
    code, _, stderr = invoke("score", run_dir, "--dataset", "digits", "--split", "holdout", "--out", tmp_path / "s.csv")
    one_line_error(code, stderr, "--split 'holdout'", "test, train, val")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npz"]


def test_an_autoencoder_has_only_its_reconstruction_scores(tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    config.model.kind = "ae"
    run = train(config, tmp_path / "ae")
    columns = score_images(run, "digits", "test", k=5)
    assert list(columns) == ["index", "label", "reconstruction_nll", "mse"]


@pytest.mark.slow  # a bootstrap of three metrics over thousands of images
def test_separation_of_two_known_laws_matches_their_formulas() -> None:
    """N(0, 1) inliers against N(2, 1) outliers: AUROC Φ(2/√2) = 0.921; at 95% true positives the threshold is
    2 − 1.645, where 1 − Φ(0.355) = 36% of the inliers are flagged; a reversed score has AUROC 1 − 0.921."""
    rng = np.random.default_rng(0)
    inliers, outliers = rng.normal(0, 1, 4000), rng.normal(2, 1, 4000)
    found = separation("x", inliers, outliers)
    assert found.auroc == pytest.approx(0.921, abs=0.01)
    assert found.auroc_interval[0] < 0.921 < found.auroc_interval[1]
    assert found.fpr_at_95_tpr == pytest.approx(0.361, abs=0.03)
    assert found.fpr_interval[0] < found.fpr_at_95_tpr < found.fpr_interval[1]
    assert separation("x", -inliers, -outliers).auroc == pytest.approx(1 - found.auroc)
    with pytest.raises(VaekitError, match="NaN or an infinity"):
        separation("x", np.array([1.0, np.nan]), outliers)


@pytest.mark.slow  # a bootstrap of three metrics over thousands of images
def test_ood_scores_both_sets_and_reports_each_scores_separation(run_dir: Path, tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(400, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise[:300], x_test=noise[300:])
    out = tmp_path / "both.csv"
    code, stdout, stderr = invoke("score", run_dir, "--dataset", "digits", "--ood", tmp_path / "noise.npz", "--k", "5",
                                  "--out", out)  # fmt: skip
    assert code == 0, stderr
    table = read_csv(out)
    assert (table["set"] == 0).sum() == 297 and (table["set"] == 1).sum() == 100
    report = json.loads((tmp_path / "both-separation.json").read_text())
    by_score = {s["score"]: s for s in report["scores"]}
    assert set(by_score) == {"nll", "neg_elbo", "kl", "reconstruction_nll", "mse"}
    nll = table["nll"]
    expected = separation("nll", nll[table["set"] == 0], nll[table["set"] == 1])
    assert by_score["nll"]["auroc"] == pytest.approx(expected.auroc) and by_score["nll"]["auroc"] > 0.99
    assert "nll" in stdout and "AUROC" in stdout
    with Image.open(tmp_path / "both-separation.png") as figure:  # histograms per score and the ROC curves
        assert figure.format == "PNG" and figure.width > 800 and figure.height > 400


def test_wilson_intervals_and_calibration_on_a_known_law() -> None:
    assert wilson(50, 100) == pytest.approx((0.404, 0.596), abs=0.001)
    low, high = wilson(0, 100)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.037, abs=0.001)
    rng = np.random.default_rng(0)
    found = calibrate("x", rng.normal(size=20000), rng.normal(size=20000), 0.05)
    assert found.threshold == pytest.approx(1.645, abs=0.03)  # the 95th percentile of N(0, 1)
    assert found.measured_interval[0] < 0.05 < found.measured_interval[1]
    with pytest.raises(VaekitError, match=r"--fpr 1\.5"):
        calibrate("x", rng.normal(size=10), rng.normal(size=10), 1.5)


def test_reference_thresholds_flag_the_scored_rows_and_report_the_measured_rate(run_dir: Path, tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(400, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise[:300], x_test=noise[300:])
    out = tmp_path / "flags.csv"
    code, stdout, stderr = invoke("score", run_dir, "--dataset", tmp_path / "noise.npz", "--reference", "digits",
                                  "--fpr", "0.1", "--k", "5", "--batch", "20", "--out", out)  # fmt: skip
    assert code == 0, stderr
    table = read_csv(out)
    assert table["flag_nll"].mean() == 1.0  # every noise image lies above the digits' threshold
    thresholds = {s["score"]: s for s in json.loads((tmp_path / "flags-thresholds.json").read_text())["scores"]}
    run = load_run(run_dir)
    validation = score_images(run, "digits", "val", k=5)["nll"]
    assert thresholds["nll"]["threshold"] == pytest.approx(np.quantile(validation, 0.9))
    assert thresholds["nll"]["held_out_images"] == 297 and 0.02 < thresholds["nll"]["measured_fpr"] < 0.25
    assert "FPR on its test split" in stdout and "typicality of 5 batches of 20 by nll: 100% with p < 0.1" in stdout
    tested = json.loads((tmp_path / "flags-thresholds.json").read_text())["typicality"]
    assert tested[0]["score"] == "nll" and len(tested[0]["p_values"]) == 5


def test_the_typicality_test_holds_its_level_and_flags_batches_too_likely_as_well_as_too_unlikely() -> None:
    """In-distribution batches are rejected at about the test's level; a batch of images *more* likely than typical
    (an NLL far below the mean, as MNIST's under a Fashion-MNIST model) is rejected like an unlikely one."""
    rng = np.random.default_rng(0)
    validation, held_out = rng.normal(100, 10, 5000), rng.normal(100, 10, 5000)
    typical = typicality("nll", rng.normal(100, 10, 25 * 400), validation, held_out, 25)
    assert len(typical.p_values) == 400
    assert np.mean(np.array(typical.p_values) < 0.05) == pytest.approx(0.05, abs=0.025)
    for shift in (-8.0, 8.0):  # each image is within the usual range; the batch's mean is not
        shifted = typicality("nll", rng.normal(100 + shift, 10, 250), validation, held_out, 25)
        assert max(shifted.p_values) < 0.05, shift
    with pytest.raises(VaekitError, match="--batch 300"):
        typicality("nll", rng.normal(size=250), validation, held_out, 300)


@pytest.mark.slow  # a bootstrap of three metrics over thousands of images
def test_ood_and_reference_together_flag_both_sets_and_batch_needs_a_reference(run_dir: Path, tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(400, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "noise.npz", x=noise[:300], x_test=noise[300:])
    out = tmp_path / "all.csv"
    code, _, stderr = invoke("score", run_dir, "--dataset", "digits", "--ood", tmp_path / "noise.npz",
                             "--reference", "digits", "--k", "5", "--out", out)  # fmt: skip
    assert code == 0, stderr
    table = read_csv(out)
    inside, outside = table["flag_nll"][table["set"] == 0], table["flag_nll"][table["set"] == 1]
    assert len(inside) == 297 and outside.mean() == 1.0 and inside.mean() < 0.2
    scores = {s["score"] for s in json.loads((tmp_path / "all-separation.json").read_text())["scores"]}
    assert not any(score.startswith("flag_") for score in scores)
    code, _, stderr = invoke("score", run_dir, "--dataset", "digits", "--batch", "10", "--out", tmp_path / "b.csv")
    one_line_error(code, stderr, "--batch", "add --reference D")
