"""Hostile data files: only the PNG and JPEG decoders ever run, and every malformed source is one line, at once."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image

from tests.conftest import invoke
from vaekit import DataConfig
from vaekit.data.pack import Rows, write_pack
from vaekit.data.sources import Dataset, load_dataset, pack_dataset
from vaekit.data.userdata import load_arrays, load_image_folder, load_image_like
from vaekit.errors import VaekitError

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def picture(seed: int = 0, format: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format=format)
    return stream.getvalue()


def image_folder(folder: Path, count: int = 5) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{i}.png").write_bytes(picture(i))
    return folder


@pytest.fixture
def ghostscript_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `gs` first on PATH that records every call, and Pillow's memory of where gs is forgotten."""
    bin_dir, log = tmp_path / "fake-bin", tmp_path / "gs-calls"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit 1\n')
    (bin_dir / "gs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    return log


# --- item 1: PNG and JPEG only ----------------------------------------------------------------------------------


def test_an_eps_file_named_png_in_an_image_folder_is_refused_without_ghostscript(
    tmp_path: Path, ghostscript_log: Path
) -> None:
    folder = image_folder(tmp_path / "images")
    (folder / "a.png").write_bytes(EPS)
    with pytest.raises(VaekitError, match=r"a\.png is an EPS file, not PNG or JPEG: convert it to PNG"):
        load_image_folder(folder)
    assert not ghostscript_log.exists()


def test_eps_bytes_in_a_parquet_image_column_are_refused_naming_the_row(tmp_path: Path, ghostscript_log: Path) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"image": [picture(i) for i in range(5)] + [EPS]}), tmp_path / "t.parquet")
    result = invoke("train", "--dataset", tmp_path / "t.parquet", "--out", tmp_path / "run")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "row 5 of column 'image' in" in result.stderr and "is an EPS file, not PNG or JPEG" in result.stderr
    assert not ghostscript_log.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("format", ["GIF", "TIFF", "BMP"])
def test_other_formats_named_png_are_refused_naming_their_real_format(tmp_path: Path, format: str) -> None:
    folder = image_folder(tmp_path / "images")
    (folder / "b.png").write_bytes(picture(9, format))
    with pytest.raises(VaekitError, match=rf"b\.png is an? {format} file, not PNG or JPEG: convert it to PNG"):
        load_dataset(DataConfig(dataset=str(folder)))


def test_a_jpeg_named_png_is_still_an_image(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    (folder / "c.png").write_bytes(picture(9, "JPEG"))
    x, _ = load_image_folder(folder)["train"]
    assert x.shape == (6, 1, 8, 8)


def test_an_image_file_given_to_a_command_is_refused_unless_png_or_jpeg(tmp_path: Path, ghostscript_log: Path) -> None:
    (tmp_path / "one.png").write_bytes(EPS)
    with pytest.raises(VaekitError, match=r"one\.png is an EPS file, not PNG or JPEG"):
        load_image_like(tmp_path / "one.png", (1, 8, 8))
    (tmp_path / "two.jpg").write_bytes(b"\x00" * 64)
    with pytest.raises(VaekitError, match=r"cannot decode .*two\.jpg: not a PNG or JPEG image \(nor any format"):
        load_image_like(tmp_path / "two.jpg", (1, 8, 8))
    assert not ghostscript_log.exists()


# --- item 7: malformed sources ----------------------------------------------------------------------------------


def test_a_parquet_column_of_empty_nested_lists_is_one_line(tmp_path: Path) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    empty = pa.array([[] for _ in range(6)], pa.list_(pa.list_(pa.uint8())))
    pq.write_table(pa.table({"image": empty}), tmp_path / "e.parquet")
    with pytest.raises(VaekitError, match=r"column 'image' of .*e\.parquet holds empty rows: store each image as HxW"):
        load_dataset(DataConfig(dataset=str(tmp_path / "e.parquet")))


@pytest.mark.parametrize("dict_split", [None, "train"])
def test_a_datasets_folder_whose_state_lists_no_data_files_is_one_line(tmp_path: Path, dict_split: str | None) -> None:
    datasets = pytest.importorskip("datasets")
    rows = datasets.Dataset.from_dict({"image": [picture(i) for i in range(6)]})
    saved = tmp_path / "saved"
    (datasets.DatasetDict({"train": rows}) if dict_split else rows).save_to_disk(str(saved))
    state = saved / (dict_split or "") / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "_data_files": []}))
    with pytest.raises(VaekitError, match=r"state\.json lists no data files: save the dataset again \(save_to_disk\)"):
        load_dataset(DataConfig(dataset=str(saved)))


def test_a_label_column_that_is_the_image_column_is_one_line(tmp_path: Path) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"image": [picture(i) for i in range(6)]}), tmp_path / "t.parquet")
    with pytest.raises(VaekitError, match=r"--label-column and --image-column both name the column 'image'"):
        load_dataset(DataConfig(dataset=str(tmp_path / "t.parquet"), label_column="image"))


def test_a_datasets_info_file_that_is_not_an_object_is_one_line(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"image": [picture(i) for i in range(6)]}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "saved" / "dataset_info.json").write_text("[]")  # `datasets` calls .items() on it
    with pytest.raises(VaekitError, match=r"dataset_info\.json holds list, not a JSON object"):
        load_dataset(DataConfig(dataset=str(tmp_path / "saved")))


def test_a_npy_header_that_is_not_a_python_literal_is_one_line(tmp_path: Path) -> None:
    text = b"{'descr': '|u1', 'fortran_order': False, (shape': (8, 2, 2), }"
    header = text + b" " * (117 - len(text)) + b"\n"  # numpy's parser meets an unterminated string
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(32))
    with pytest.raises(VaekitError, match=r"x\.npy as a \.npy file \(a damaged header"):
        load_dataset(DataConfig(dataset=str(tmp_path / "x.npy")))


def test_a_datasets_state_file_naming_a_file_outside_its_folder_is_refused(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"image": [picture(i) for i in range(6)]}).save_to_disk(str(tmp_path / "saved"))
    state = tmp_path / "saved" / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "_data_files": [{"filename": "../x.arrow"}]}))
    with pytest.raises(VaekitError, match=r"names the data file '../x.arrow', which is not a file in .*saved"):
        load_dataset(DataConfig(dataset=str(tmp_path / "saved")))


@pytest.mark.parametrize(("train", "test", "small"), [(1, 0, "train"), (3, 0, "train"), (4, 1, "test")])
def test_a_pack_too_small_to_split_is_refused_when_opened(tmp_path: Path, train: int, test: int, small: str) -> None:
    x = np.zeros((train + test, 1, 4, 4), np.uint8)
    parts = {"train": Rows(train, (1, 4, 4), lambda a, b: x[a:b], None)}
    if test:
        parts["test"] = Rows(test, (1, 4, 4), lambda a, b: x[train + a : train + b], None)
    write_pack(tmp_path / "pack", parts, "test")
    result = invoke("train", "--dataset", tmp_path / "pack", "--epochs", "1", "--out", tmp_path / "run")
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    count = train if small == "train" else test
    assert f"its {small} split holds {count} images: vaekit needs at least 4" in result.stderr


def test_a_parquet_fifo_in_an_image_folder_is_not_read(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "images")
    os.mkfifo(folder / "x.parquet")
    (dataset,) = load_in_thread(folder)
    assert isinstance(dataset, Dataset), dataset  # the five pictures, the FIFO left alone


def test_an_npy_that_is_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    outcome = load_in_thread(fifo)
    assert len(outcome) == 1 and isinstance(outcome[0], VaekitError)
    assert str(outcome[0]) == f"{fifo} is not a regular file (a FIFO): give an image folder or a .npy/.npz file"


def load_in_thread(source: Path) -> list[Any]:
    """Loads `source` in a thread and fails the test if it waits on a FIFO; returns the dataset or the error."""
    fifo = next((p for p in [source, *source.glob("*")] if p.is_fifo()), None)
    outcome: list[Any] = []

    def load() -> None:
        try:
            outcome.append(load_dataset(DataConfig(dataset=str(source))))
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive() and fifo is not None:  # blocked in open(): a writer that opens and closes sets it free
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=10)
        pytest.fail("reading a FIFO waited for a writer")
    return outcome


def test_an_empty_dataset_name_is_refused_rather_than_reading_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(image_folder(tmp_path / "cwd"))
    with pytest.raises(VaekitError, match=r"^--dataset is empty: name a dataset \(mnist, fashion-mnist, digits\) or"):
        load_dataset(DataConfig(dataset=""))
    with pytest.raises(VaekitError, match=r"^the source to pack is empty: name a dataset"):
        pack_dataset(" ", tmp_path / "pack")
    result = invoke("train", "--dataset", "", "--out", tmp_path / "run")
    assert result.code == 2 and result.stderr.startswith("error: --dataset is empty"), result.stderr


# --- item 8: values that would be silently changed -------------------------------------------------------------


def test_complex_arrays_are_refused_rather_than_losing_their_imaginary_part(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.full((6, 4, 4), 0.5 + 0.25j, np.complex64))
    with pytest.raises(VaekitError, match=r"c\.npy holds complex numbers \(complex64\): store real pixels"):
        load_arrays(tmp_path / "c.npy")
    np.savez(tmp_path / "c.npz", x=np.zeros((6, 4, 4), np.float32), x_test=np.zeros((6, 4, 4), np.complex128))
    with pytest.raises(VaekitError, match=r"c\.npz\[x_test\] holds complex numbers \(complex128\)"):
        load_arrays(tmp_path / "c.npz")


def test_labels_beyond_int64_are_reported_as_too_large_not_negative(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2**63 + 5, 1, 0, 1], dtype=np.uint64)
    np.savez(tmp_path / "d.npz", x=np.zeros((6, 4, 4), np.uint8), y=labels)
    message = r"d\.npz\[y\] has the label 9223372036854775813, too large for a class number: number the classes 0, 1"
    with pytest.raises(VaekitError, match=message):
        load_arrays(tmp_path / "d.npz")
    np.savez(tmp_path / "ok.npz", x=np.zeros((6, 4, 4), np.uint8), y=np.arange(6, dtype=np.uint64))
    _, y = load_arrays(tmp_path / "ok.npz")["train"]
    assert y is not None and y.dtype == torch.int64 and y.tolist() == list(range(6))


def test_parquet_labels_beyond_int64_are_reported_as_too_large(tmp_path: Path) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    labels = pa.array([0, 1, 2**63 + 5, 1, 0, 1], pa.uint64())
    pq.write_table(pa.table({"image": [picture(i) for i in range(6)], "label": labels}), tmp_path / "t.parquet")
    with pytest.raises(VaekitError, match=r"label column 'label' of .*t\.parquet has the label 9223372036854775813"):
        load_dataset(DataConfig(dataset=str(tmp_path / "t.parquet")))
