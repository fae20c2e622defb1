"""`vaekit score`: per-image scores of any dataset under a run, as CSV or Parquet, that average to what `vaekit
evaluate` reports, rank data unlike the training data higher, and refuse bad input in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit import load_run, train
from vaekit.analysis.evaluate import likelihood_report
from vaekit.analysis.scores import score_images
from vaekit.data.sources import load_dataset


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
