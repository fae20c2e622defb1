"""The registry of data readers: one registry that loading and packing both ask, in an order that settles the paths
more than one reader could read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import DataConfig
from vaekit.data import readers
from vaekit.data.pack import open_pack
from vaekit.data.readers import reader_for, register
from vaekit.data.rows import Rows, Source
from vaekit.data.sources import load_dataset, pack_dataset
from vaekit.errors import VaekitError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


class ToyReader:
    """A made-up format: a `.toy` file whose text is a number n, read as n 2x3 grey images whose pixels are their
    row number, labelled by row number mod 2."""

    name = "toy"
    takes_columns = False
    refuses_packing = ""

    def __init__(self) -> None:
        self.opened: list[Path] = []

    def recognizes(self, path: Path) -> bool:
        return path.suffix == ".toy"

    def open(self, path: Path, image_column: str | None = None, label_column: str | None = None) -> Source:
        self.opened.append(path)
        count = int(path.read_text())

        def read(start: int, stop: int) -> np.ndarray:
            return np.broadcast_to(np.arange(start, stop, dtype=np.uint8)[:, None, None, None], (stop - start, 1, 2, 3))

        return Source({"train": Rows(count, (1, 2, 3), read, np.arange(count, dtype=np.int64) % 2)})


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyReader:
    """A toy reader registered for this test only."""
    monkeypatch.setattr(readers, "READERS", list(readers.READERS))
    reader = ToyReader()
    register(reader)
    return reader


def test_a_registered_reader_is_used_by_loading_and_by_packing(tmp_path: Path, toy: ToyReader) -> None:
    source = tmp_path / "numbers.toy"
    source.write_text("40")
    data = load_dataset(DataConfig(dataset=str(source), val_size=4))
    assert data.shape == (1, 2, 3) and len(data.train) + len(data.val) + len(data.test) == 40
    rows = torch.cat([data.train.x, data.val.x, data.test.x])[:, 0, 0, 0]
    assert sorted(rows.tolist()) == list(range(40))  # every row the reader gave, once
    manifest = pack_dataset(str(source), tmp_path / "pack")
    pack = open_pack(tmp_path / "pack")
    assert manifest["shape"] == [40, 1, 2, 3] and pack.images[:, 0, 0, 0].tolist() == list(range(40))
    assert pack.labels is not None and pack.labels.tolist() == [i % 2 for i in range(40)]
    assert toy.opened == [source, source]
    packed = load_dataset(DataConfig(dataset=str(tmp_path / "pack"), val_size=4))  # and the pack reads the same
    assert torch.equal(packed.test.x, data.test.x)


def test_a_second_reader_of_one_name_is_refused(toy: ToyReader) -> None:
    with pytest.raises(ValueError, match="two data readers are named 'toy'"):
        register(ToyReader())


def pngs(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((size, size), i * 10, np.uint8)).save(folder / f"img{i:03d}.png")


def test_the_registry_order_settles_paths_two_readers_could_read(tmp_path: Path) -> None:
    # A folder of Parquet files that also holds images is a table (4x4 rows), not an image folder (5x5 files).
    mixed = tmp_path / "mixed"
    pngs(mixed, 8, 5)
    rows = np.arange(8 * 16, dtype=np.uint8).reshape(8, 4, 4)
    pq.write_table(pa.table({"image": pa.array(rows.tolist())}), mixed / "train.parquet")
    assert reader_for(mixed).name == "table"  # type: ignore[union-attr]
    assert load_dataset(DataConfig(dataset=str(mixed), val_size=1)).shape == (1, 4, 4)
    # A folder of images alone is an image folder.
    images = tmp_path / "images"
    pngs(images, 8, 5)
    assert reader_for(images).name == "image folder"  # type: ignore[union-attr]
    assert load_dataset(DataConfig(dataset=str(images), val_size=1)).shape == (1, 5, 5)
    # A pack is a pack, even with images (or a .parquet file) beside its files.
    pack = tmp_path / "pack"
    pack_dataset(str(images), pack)
    pngs(pack, 8, 3)
    (pack / "stray.parquet").write_bytes(b"")
    assert reader_for(pack).name == "pack"  # type: ignore[union-attr]
    assert load_dataset(DataConfig(dataset=str(pack), val_size=1)).shape == (1, 5, 5)
    # A folder saved by `datasets` (its marker files) is a table, whatever else it holds.
    saved = tmp_path / "saved"
    pngs(saved, 8, 5)
    (saved / "state.json").write_text("{}")
    assert reader_for(saved).name == "table"  # type: ignore[union-attr]
    # A folder with a pack's images but no manifest is refused, not read as an image folder.
    broken = tmp_path / "broken"
    pngs(broken, 8, 5)
    (broken / "images.u8").write_bytes(b"")
    with pytest.raises(VaekitError, match=r"holds images\.u8 but no manifest\.json, so it is not a whole pack"):
        reader_for(broken)
    # Any other file is arrays; a path that does not exist has no reader.
    np.save(tmp_path / "x.npy", rows)
    assert reader_for(tmp_path / "x.npy").name == "arrays"  # type: ignore[union-attr]
    assert reader_for(tmp_path / "missing") is None
