"""Verified downloads, against a local HTTP server on 127.0.0.1 serving files the test makes."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_MNIST, write_idx_dataset
from tests.test_data import fake_source
from vaekit import DataConfig
from vaekit.data import MNIST, load_dataset, locate_idx
from vaekit.download import fetch
from vaekit.errors import VaekitError


def test_missing_dataset_is_downloaded_verified_and_cached(http_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = http_server
    sums = write_idx_dataset(served)
    (tmp_path / "data").mkdir()
    paths = locate_idx("fake", fake_source(sums, mirrors=(url,)), str(tmp_path / "data"))
    assert paths["train_x"] == tmp_path / "data" / "fake" / "train-images-idx3-ubyte.gz"
    assert paths["train_x"].read_bytes() == (served / "train-images-idx3-ubyte.gz").read_bytes()
    (served / "train-images-idx3-ubyte.gz").unlink()  # a second load must not need the network
    assert locate_idx("fake", fake_source(sums, mirrors=(url,)), str(tmp_path / "data")) == paths


def test_corrupted_download_fails_and_leaves_nothing_behind(http_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = http_server
    sums = write_idx_dataset(served)
    (served / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not the labels"))
    target = tmp_path / "data"
    with pytest.raises(VaekitError, match="checksum mismatch"):
        fetch("train-labels-idx1-ubyte.gz", sums["train-labels-idx1-ubyte.gz"], (url,), target)
    assert list(target.iterdir()) == []  # no partial file, no temp file


def test_a_bad_mirror_is_skipped_for_a_good_one(http_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = http_server
    sums = write_idx_dataset(served / "good")
    write_idx_dataset(served / "bad", seed=99)  # same names, other content
    name = "t10k-images-idx3-ubyte.gz"
    path = fetch(name, sums[name], (url + "bad/", url + "missing/", url + "good/"), tmp_path)
    assert path.read_bytes() == (served / "good" / name).read_bytes()


def test_unreachable_mirror_gives_one_actionable_error(tmp_path: Path) -> None:
    with pytest.raises(VaekitError, match="--data-dir"):
        fetch("x.gz", "0" * 64, ("http://127.0.0.1:9/",), tmp_path)


def test_named_dataset_downloads_through_mirrors_env(
    http_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real MNIST checksums guard the real loader: a server with wrong content is refused."""
    url, served = http_server
    write_idx_dataset(served)  # MNIST's file names, random content
    monkeypatch.setenv("VAEKIT_MIRRORS", url)
    (tmp_path / "data").mkdir()
    with pytest.raises(VaekitError, match="checksum mismatch"):
        load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path / "data")))
    assert not any(p.is_file() for p in (tmp_path / "data").rglob("*"))


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="the shared MNIST copy is only present on project machines")
def test_real_mnist_downloads_from_a_local_mirror(
    http_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = http_server
    for name, _ in MNIST.files.values():
        shutil.copy(SHARED_MNIST / name, served / name)
    monkeypatch.setenv("VAEKIT_MIRRORS", f"http://127.0.0.1:9/,{url}")  # the first mirror is down
    data = load_dataset(DataConfig(dataset="mnist", data_dir=str(tmp_path)))
    assert len(data.test) == 10000
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(n for n, _ in MNIST.files.values())
