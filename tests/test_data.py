"""Datasets: IDX parsing, lookup order, sklearn digits, image folders, arrays, splits and binarization."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import SHARED_MNIST, idx_bytes, write_idx_dataset
from vaekit import DataConfig
from vaekit.data import sources
from vaekit.data.sources import (
    IdxSource,
    Split,
    check_agree,
    load_dataset,
    load_digits,
    locate_idx,
    read_idx,
    search_dirs,
    split_off,
)
from vaekit.data.userdata import load_arrays, load_image_folder, load_image_like
from vaekit.errors import VaekitError


def fake_source(checksums: dict[str, str], mirrors: tuple[str, ...] = ()) -> IdxSource:
    roles = {
        "train_x": "train-images-idx3-ubyte.gz",
        "train_y": "train-labels-idx1-ubyte.gz",
        "test_x": "t10k-images-idx3-ubyte.gz",
        "test_y": "t10k-labels-idx1-ubyte.gz",
    }
    return IdxSource(files={role: (name, checksums[name]) for role, name in roles.items()}, mirrors=mirrors)


def test_read_idx_round_trips_an_array(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_a_truncated_file(tmp_path: Path) -> None:
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8))[:-3]))
    with pytest.raises(VaekitError, match="truncated"):
        read_idx(tmp_path / "a.gz")


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="the shared MNIST copy is only present on project machines")
def test_real_mnist_files_parse_with_the_published_labels() -> None:
    labels = read_idx(SHARED_MNIST / "train-labels-idx1-ubyte.gz")
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert read_idx(SHARED_MNIST / "train-images-idx3-ubyte.gz").shape == (60000, 28, 28)


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="the shared MNIST copy is only present on project machines")
def test_real_mnist_loads_by_name_from_data_dir_with_checksums() -> None:
    data = load_dataset(DataConfig(dataset="mnist", data_dir=str(SHARED_MNIST.parent)))
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.shape == (1, 28, 28) and data.train.x.dtype == torch.uint8


def test_search_dirs_are_the_named_folder_only_else_cache_then_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "given").mkdir()
    (tmp_path / "env").mkdir()
    source = IdxSource(files={}, mirrors=(), system_dirs=("/usr/share/datasets/x",))
    home = str(Path("~/.cache/vaekit").expanduser())
    assert [str(d) for d in search_dirs("x", None, source)] == [f"{home}/x", home, "/usr/share/datasets/x"]
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "env"))
    assert search_dirs("x", None, source) == [tmp_path / "env" / "x", tmp_path / "env"]
    assert search_dirs("x", str(tmp_path / "given"), source) == [tmp_path / "given" / "x", tmp_path / "given"]


def test_a_missing_data_dir_is_an_error_not_a_fallback_to_another_copy(tmp_path: Path) -> None:
    sums = write_idx_dataset(Path("~/.cache/vaekit/fake").expanduser())  # a copy the loader must not pick instead
    missing = tmp_path / "typo"
    with pytest.raises(VaekitError, match=f"--data-dir {missing} does not exist"):
        locate_idx("fake", fake_source(sums), str(missing))
    (tmp_path / "file").write_text("")
    with pytest.raises(VaekitError, match="is not a folder"):
        locate_idx("fake", fake_source(sums), str(tmp_path / "file"))


def test_a_missing_vaekit_data_is_an_error_not_a_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = write_idx_dataset(Path("~/.cache/vaekit/fake").expanduser())
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "typo"))
    with pytest.raises(VaekitError, match=r"\$VAEKIT_DATA .*typo does not exist"):
        locate_idx("fake", fake_source(sums), None)


def test_a_data_dir_without_the_files_downloads_into_it_and_ignores_other_copies(tmp_path: Path) -> None:
    sums = write_idx_dataset(Path("~/.cache/vaekit/fake").expanduser())
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaekitError, match=f"could not download .* put the file in {tmp_path / 'empty' / 'fake'}"):
        locate_idx("fake", fake_source(sums), str(tmp_path / "empty"))


def test_locate_prefers_data_dir_over_env_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sums = write_idx_dataset(tmp_path / "given" / "fake")
    write_idx_dataset(tmp_path / "env" / "fake")
    write_idx_dataset(Path("~/.cache/vaekit/fake").expanduser())
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "env"))
    source = fake_source(sums)
    assert locate_idx("fake", source, str(tmp_path / "given"))["train_x"].parent == tmp_path / "given" / "fake"
    assert locate_idx("fake", source, None)["train_x"].parent == tmp_path / "env" / "fake"
    monkeypatch.delenv("VAEKIT_DATA")
    assert locate_idx("fake", source, None)["train_x"].parent == Path("~/.cache/vaekit/fake").expanduser()


def test_a_corrupt_local_file_is_reported_not_used(tmp_path: Path) -> None:
    sums = write_idx_dataset(tmp_path / "fake")
    (tmp_path / "fake" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01garbage"))
    with pytest.raises(VaekitError, match="corrupt"):
        locate_idx("fake", fake_source(sums), str(tmp_path))


def test_digits_need_no_files_and_split_deterministically() -> None:
    a = load_dataset(DataConfig(dataset="digits"))
    b = load_dataset(DataConfig(dataset="digits"))
    assert a.shape == (1, 8, 8)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert len(a.val) == min(5000, (1797 - 297) // 10)
    torch.testing.assert_close(a.val.x, b.val.x)
    c = load_dataset(DataConfig(dataset="digits", split_seed=1))
    assert not torch.equal(a.val.x, c.val.x)
    torch.testing.assert_close(a.test.x, c.test.x)  # the test split never depends on the validation seed


@pytest.mark.slow
def test_digits_read_from_the_table_match_scikit_learns_loader_without_importing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    expected = torch.from_numpy(np.rint(bunch.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    read = load_digits()
    assert torch.equal(read.x, expected) and torch.equal(read.y, torch.from_numpy(bunch.target))
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)  # no table found: sklearn's loader
    fallback = load_digits()
    assert torch.equal(fallback.x, expected) and torch.equal(fallback.y, read.y)
    monkeypatch.undo()
    probe = "import sys; from vaekit.data.sources import load_digits; load_digits(); print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_split_off_partitions_without_loss() -> None:
    split = Split(torch.arange(20).view(20, 1, 1, 1), torch.arange(20))
    rest, taken = split_off(split, 5, seed=3)
    assert sorted(rest.y.tolist() + taken.y.tolist()) == list(range(20))
    assert len(taken) == 5


def test_binarization_dynamic_fixes_val_and_test_but_not_train() -> None:
    data = load_dataset(DataConfig(dataset="digits", binarize="dynamic"))
    assert set(data.test.x.unique().tolist()) <= {0, 255}
    assert set(data.val.x.unique().tolist()) <= {0, 255}
    assert len(data.train.x.unique()) > 2
    again = load_dataset(DataConfig(dataset="digits", binarize="dynamic"))
    torch.testing.assert_close(data.test.x, again.test.x)  # the fixed-seed binarized test set
    static = load_dataset(DataConfig(dataset="digits", binarize="static"))
    assert set(static.train.x.unique().tolist()) <= {0, 255}


def write_images(folder: Path, count: int, size: tuple[int, int] = (12, 10), mode: str = "L") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"img{i:03d}.png")


def test_image_folder_with_label_subfolders(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs" / "cat", 12)
    write_images(tmp_path / "imgs" / "dog", 8)
    data = load_dataset(DataConfig(dataset=str(tmp_path / "imgs")))
    assert data.shape == (1, 10, 12)
    labels = torch.cat([data.train.y, data.val.y, data.test.y])
    assert sorted(labels.tolist()) == [0] * 12 + [1] * 8


def test_image_folder_of_rgb_images_without_labels(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 10, size=(8, 8), mode="RGB")
    data = load_dataset(DataConfig(dataset=str(tmp_path / "imgs")))
    assert data.shape == (3, 8, 8) and data.train.y is None


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc", "vectors"])
def test_npy_layouts(tmp_path: Path, layout: str) -> None:
    shapes = {"nhw": (30, 6, 5), "nchw": (30, 3, 6, 5), "nhwc": (30, 6, 5, 3), "vectors": (30, 7)}
    expected = {"nhw": (1, 6, 5), "nchw": (3, 6, 5), "nhwc": (3, 6, 5), "vectors": (1, 1, 7)}
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random(shapes[layout]).astype(np.float32))
    data = load_dataset(DataConfig(dataset=str(tmp_path / "x.npy")))
    assert data.shape == expected[layout]
    assert data.train.x.dtype == torch.float32 and float(data.train.x.max()) <= 1


def test_npz_with_labels_and_its_own_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x=rng.integers(0, 256, (40, 4, 4), dtype=np.uint8),
        y=np.arange(40) % 3,
        x_test=rng.integers(0, 256, (6, 4, 4), dtype=np.uint8),
        y_test=np.arange(6) % 3,
    )
    data = load_dataset(DataConfig(dataset=str(tmp_path / "d.npz")))
    assert len(data.test) == 6 and len(data.train) + len(data.val) == 40
    assert data.test.y.tolist() == [0, 1, 2, 0, 1, 2]


def test_npz_without_a_known_image_key_names_the_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", pictures=np.zeros((10, 4, 4), np.uint8))
    with pytest.raises(VaekitError, match="pictures"):
        load_dataset(DataConfig(dataset=str(tmp_path / "d.npz")))


def test_arrays_outside_unit_interval_are_rejected(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.full((10, 4, 4), 3.0))
    with pytest.raises(VaekitError, match=r"scale them to \[0, 1\]"):
        load_dataset(DataConfig(dataset=str(tmp_path / "x.npy")))


def write_png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height greyscale pixels, with no pixel data: a few dozen bytes on disk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_npz_whose_test_images_differ_in_shape_fails_at_load_naming_both(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 4, 4), np.uint8), x_test=np.zeros((6, 5, 5), np.uint8))
    with pytest.raises(VaekitError, match=r"test images are \(1, 5, 5\) \(C, H, W\), the training images \(1, 4, 4\)"):
        load_dataset(DataConfig(dataset=str(tmp_path / "d.npz")))


def test_npz_of_object_arrays_is_refused_without_unpickling(tmp_path: Path) -> None:
    images = np.empty(10, dtype=object)
    images[:] = [np.zeros((4, 4))] * 10
    np.savez(tmp_path / "d.npz", x=images)
    with pytest.raises(VaekitError, match=r"d.npz\[x\] holds Python objects \(dtype object\)"):
        load_dataset(DataConfig(dataset=str(tmp_path / "d.npz")))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.npz", "npy", "holds .npy content but is named .npz: rename it to x.npy"),
        ("x.npy", "npz", "holds .npz content but is named .npy: rename it to x.npz"),
        ("x.dat", "npy", "holds .npy content but is named .dat: rename it to x.npy"),
        ("x.npy", "png", r"x.npy is not a .npy file \(wrong header\)"),
        ("x.png", "png", "neither an image folder nor a .npy/.npz file"),
    ],
)
def test_array_file_content_must_match_its_suffix(tmp_path: Path, name: str, content: str, message: str) -> None:
    images = np.zeros((10, 4, 4), np.uint8)
    with (tmp_path / name).open("wb") as out:
        if content == "npy":
            np.save(out, images)
        elif content == "npz":
            np.savez(out, x=images)
        else:
            Image.fromarray(images[0]).save(out, format="PNG")
    with pytest.raises(VaekitError, match=message):
        load_dataset(DataConfig(dataset=str(tmp_path / name)))


def test_array_headers_are_checked_before_their_data_is_read(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((10, 4, 4), np.uint8))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:-10])
    with pytest.raises(VaekitError, match=r"cut.npy is truncated \(its header declares \(10, 4, 4\) uint8\)"):
        load_arrays(tmp_path / "cut.npy")
    with pytest.raises(
        VaekitError, match=r"x.npy \(10, 4, 4\) uint8 needs 160 bytes of memory, more than the 100 bytes"
    ):
        load_arrays(tmp_path / "x.npy", max_bytes=100)


def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 4)
    write_png_header(tmp_path / "imgs" / "bomb.png", 100_000, 100_000)  # 10^10 pixels in 57 bytes
    with pytest.raises(VaekitError, match=r"image .*bomb.png is too large to decode safely"):
        load_dataset(DataConfig(dataset=str(tmp_path / "imgs")))


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    write_png_header(tmp_path / "big.png", 5000, 5000)  # under Pillow's own limit, over vaekit's
    with pytest.raises(VaekitError, match=r"big.png is 5000x5000, over the 16,777,216-pixel limit"):
        load_image_like(tmp_path / "big.png", (1, 5000, 5000))


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    wide = np.random.default_rng(0).integers(0, 65536, (6, 5, 7), dtype=np.uint16)
    for i, image in enumerate(wide):
        Image.fromarray(image).save(tmp_path / "imgs" / f"{i}.png")
    x, _ = load_image_folder(tmp_path / "imgs")["train"]
    np.testing.assert_array_equal(x[:, 0].numpy(), wide >> 8)
    one = load_image_like(tmp_path / "imgs" / "0.png", (3, 5, 7))  # to RGB, scaled the same way
    np.testing.assert_array_equal(one[0].numpy(), np.stack([wide[0] >> 8] * 3))


class CountDecodes:
    """Counts Pillow's pixel decodes: a header check must settle a folder's fate before any of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from PIL import ImageFile

        self.count = 0
        load = ImageFile.ImageFile.load

        def counting(image: ImageFile.ImageFile) -> object:
            self.count += 1
            return load(image)

        monkeypatch.setattr(ImageFile.ImageFile, "load", counting)


def test_an_image_folder_of_mixed_sizes_fails_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_images(tmp_path / "imgs", 6)
    write_images(tmp_path / "imgs" / "z", 1, size=(9, 9))
    decodes = CountDecodes(monkeypatch)
    with pytest.raises(VaekitError, match=r"img000.png is 12x10, z/img000.png is 9x9: resize them all to one size"):
        load_image_folder(tmp_path / "imgs")
    assert decodes.count == 0


def test_an_image_folder_too_big_for_memory_fails_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "imgs", 8, mode="RGB")
    decodes = CountDecodes(monkeypatch)
    with pytest.raises(VaekitError, match=r"\(8 RGB images of 12x10\) needs 2.9 kB of memory, more than the 2.0 kB"):
        load_image_folder(tmp_path / "imgs", max_bytes=2000)
    assert decodes.count == 0
    x, _ = load_image_folder(tmp_path / "imgs", max_bytes=8 * 3 * 12 * 10)["train"]
    assert x.shape == (8, 3, 10, 12) and decodes.count >= 8  # the counter does see decodes


def test_read_idx_reads_no_more_than_its_cap(tmp_path: Path) -> None:
    """A gzip bomb: 20 MB of zeros in 20 kB; refused from the header, with memory bounded by the cap."""
    import tracemalloc

    (tmp_path / "bomb.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((20, 1000, 1000), np.uint8))))
    tracemalloc.start()
    try:
        with pytest.raises(VaekitError, match=r"declares \[20, 1000, 1000\] = 20,000,000 bytes, over the 1,000,000"):
            read_idx(tmp_path / "bomb.gz", max_bytes=1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000
    (tmp_path / "long.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((4, 5), np.uint8)) + b"extra"))
    with pytest.raises(VaekitError, match="more bytes than its header declares"):
        read_idx(tmp_path / "long.gz")
    (tmp_path / "plain.gz").write_bytes(idx_bytes(np.zeros((4, 5), np.uint8)))
    with pytest.raises(VaekitError, match=r"cannot read .*plain.gz \(Not a gzipped file"):
        read_idx(tmp_path / "plain.gz")


def test_labels_must_number_the_images() -> None:
    images = torch.zeros(10, 1, 4, 4, dtype=torch.uint8)
    check_agree("d", Split(images, torch.zeros(10, dtype=torch.int64)), Split(images, None))
    with pytest.raises(VaekitError, match="dataset d: 10 test images but 9 labels: give one label per image"):
        check_agree("d", Split(images, None), Split(images, torch.zeros(9, dtype=torch.int64)))


def test_data_errors_reach_the_command_line_whole(tmp_path: Path) -> None:
    """One line on stderr, exit 2, nothing trained: the array name in brackets survives the console's markup."""
    from typer.testing import CliRunner

    from vaekit.cli.main import app

    images = np.empty(10, dtype=object)
    images[:] = [np.zeros((4, 4))] * 10
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 4, 4), np.uint8), x_test=images)
    result = CliRunner().invoke(app, ["train", "--dataset", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "d.npz[x_test] holds Python objects" in result.stderr
    assert not (tmp_path / "run").exists()
