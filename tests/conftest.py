"""Shared fixtures: tiny seeded configs, IDX files made on the spot, a local HTTP server on 127.0.0.1, and `invoke`,
which runs a `vaekit` command in this process."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vaekit import DataConfig, ModelConfig, TrainConfig
from vaekit.cli.main import app

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def classifier_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature classifier cache for the whole session: every `evaluate` on digits would otherwise train the same
    classifier again, 11 to 13 s each on 2 cores (tests/test_evaluate.py trains a fresh one and checks it predicts as
    this one does)."""
    return tmp_path_factory.mktemp("classifiers")


def make_home(home: Path, classifier_cache: Path) -> Path:
    """A fresh home folder whose classifier cache (and only that) is the session's."""
    (home / ".cache" / "vaekit").mkdir(parents=True, exist_ok=True)
    (home / ".cache" / "vaekit" / "classifiers").symlink_to(classifier_cache, target_is_directory=True)
    return home


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, classifier_cache: Path
) -> None:
    """No test reads or writes the real ~/.cache/vaekit, $VAEKIT_DATA or mirrors: each has a home of its own, in
    this process and in those it starts."""
    monkeypatch.setenv("HOME", str(make_home(tmp_path_factory.mktemp("home"), classifier_cache)))
    monkeypatch.delenv("VAEKIT_DATA", raising=False)
    monkeypatch.delenv("VAEKIT_MIRRORS", raising=False)
    torch.manual_seed(0)


DEVICE = "cpu"  # `pytest --device cuda` trains every tiny run there (see pytest_configure)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="device the tiny training runs use: cpu | cuda | cuda:N | mps")


def pytest_configure(config: pytest.Config) -> None:
    global DEVICE
    DEVICE = str(config.getoption("--device"))


def tiny_config(**overrides: object) -> TrainConfig:
    """A model and dataset small enough that a few epochs take well under a second."""
    config = TrainConfig(
        model=ModelConfig(hidden=[32], latent_dim=4),
        data=DataConfig(dataset="digits"),
        epochs=2,
        batch_size=64,
        device=DEVICE,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format: 0x00 0x00 0x08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict[str, str]:
    """Four MNIST-named IDX gz files of random 28x28 images; returns file name -> sha256 of the content."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test),
    }
    checksums = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        (folder / name).write_bytes(gzip.compress(raw))
        checksums[name] = hashlib.sha256(raw).hexdigest()
    return checksums


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serve a fresh folder on 127.0.0.1 (any free port); yields (base URL, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # serve_forever's default poll of 0.5 s would make each test wait that long for shutdown()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


class Invoked(NamedTuple):
    """What a `vaekit` command did: `code, stdout, stderr = invoke(...)`, or `.output` for both streams together."""

    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(*args: str | Path, env: Mapping[str, str] | None = None) -> Invoked:
    """Run `vaekit ARGS` in this process (typer's CliRunner), stdout and stderr kept apart."""
    result = CliRunner().invoke(app, [str(arg) for arg in args], env=env)
    return Invoked(result.exit_code, result.stdout, result.stderr)


def one_line_error(code: int, stderr: str, *fragments: str) -> str:
    """A refusal as vaekit makes one: exit 2, one line naming each fragment, no traceback. Returns the line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, (code, stderr)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
