"""Verified downloads, against a local HTTP server on 127.0.0.1 serving files the test makes."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SHARED_MNIST, QuietHandler, write_idx_dataset
from tests.test_data import fake_source
from vaekit import DataConfig
from vaekit.data.download import fetch
from vaekit.data.sources import MNIST, load_dataset, locate_idx
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


@pytest.mark.slow
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


class MisbehavingHandler(QuietHandler):
    """Serves its folder, except below /endless/, /slow/, /short/ and /cut/, where each file is sent as named."""

    def do_GET(self) -> None:
        kind, _, name = self.path.strip("/").partition("/")
        if kind not in ("endless", "slow", "short", "cut"):
            super().do_GET()
            return
        body = (Path(self.directory) / name).read_bytes()
        self.send_response(200)
        try:
            if kind == "endless":  # no Content-Length: the body lasts as long as the connection
                self.end_headers()
                while True:
                    self.wfile.write(body)
            elif kind == "slow":  # the right bytes, 8 every 50 ms
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(0, len(body), 8):
                    self.wfile.write(body[i : i + 8])
                    self.wfile.flush()
                    time.sleep(0.05)
            elif kind == "short":  # the connection closes halfway through the promised Content-Length
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
            else:  # a chunked body cut off inside a chunk: http.client raises IncompleteRead
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(body) + 1000:x}\r\n".encode() + body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up, as it should
            pass


@pytest.fixture
def odd_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Like conftest's `http_server` (127.0.0.1, any free port), with the misbehaving routes above."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(MisbehavingHandler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


NAME = "train-labels-idx1-ubyte.gz"


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        ("endless", "it sent more than the 100,000-byte cap"),
        ("short", "the connection closed after {half:,} of {size:,} bytes"),
        ("cut", r"IncompleteRead\(0 bytes read\)"),
    ],
)
def test_a_broken_mirror_is_abandoned_for_the_next_one(
    odd_server: tuple[str, Path], tmp_path: Path, route: str, reason: str
) -> None:
    url, served = odd_server
    sums = write_idx_dataset(served)
    target = tmp_path / "data"
    cap = {"max_bytes": 100_000} if route == "endless" else {}  # the others need no lowered limit
    path = fetch(NAME, sums[NAME], (url + route + "/", url), target, **cap)
    assert path.read_bytes() == (served / NAME).read_bytes()
    assert list(target.iterdir()) == [path]  # no .part left behind
    size = (served / NAME).stat().st_size
    reason = reason.format(half=size // 2, size=size)
    with pytest.raises(VaekitError, match=f"could not download {NAME} \\({url}{route}/{NAME}: {reason}\\)"):
        fetch(NAME, sums[NAME], (url + route + "/",), target / "again", **cap)
    assert list((target / "again").iterdir()) == []


def test_a_file_over_the_size_cap_is_refused_from_its_content_length(
    odd_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, served = odd_server
    sums = write_idx_dataset(served)
    size = (served / NAME).stat().st_size
    with pytest.raises(VaekitError, match=f"it announces {size:,} bytes, over the {size - 1:,}-byte cap"):
        fetch(NAME, sums[NAME], (url,), tmp_path / "data", max_bytes=size - 1)
    assert list((tmp_path / "data").iterdir()) == []
    assert fetch(NAME, sums[NAME], (url,), tmp_path / "data", max_bytes=size).stat().st_size == size


def test_a_slow_mirror_is_given_up_at_the_deadline(odd_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = odd_server
    sums = write_idx_dataset(served)
    size = (served / NAME).stat().st_size  # 64 bytes: at least 0.35 s at the slow route's pace
    assert size > 7 * 8
    start = time.monotonic()
    with pytest.raises(VaekitError, match=f"{url}slow/{NAME}: not complete after 0.1 s"):
        fetch(NAME, sums[NAME], (url + "slow/",), tmp_path / "data", deadline_s=0.1)
    assert time.monotonic() - start < 0.3
    assert list((tmp_path / "data").iterdir()) == []
    assert fetch(NAME, sums[NAME], (url + "slow/",), tmp_path / "data", deadline_s=30).is_file()  # patience pays


def test_an_interrupted_download_leaves_no_part_file(
    http_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = http_server
    sums = write_idx_dataset(served)

    def interrupt(*args: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("vaekit.data.download.content_sha256", interrupt)
    with pytest.raises(KeyboardInterrupt):
        fetch(NAME, sums[NAME], (url,), tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []
