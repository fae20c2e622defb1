"""Hostile data files: only the PNG and JPEG decoders ever run, and every malformed source is one line, at once."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image
from typer.testing import CliRunner

from vaekit import DataConfig
from vaekit.cli.main import app
from vaekit.data.sources import load_dataset
from vaekit.data.userdata import load_image_folder, load_image_like
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


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


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
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
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
