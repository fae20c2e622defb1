"""Tables: Parquet files and `datasets` save_to_disk folders decode to exactly the pixels and labels written, split
like the other user sources, train and pack through the CLI, and refuse bad input in one line naming row and fix."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import invoke
from vaekit import DataConfig
from vaekit.data.pack import open_pack
from vaekit.data.sources import load_dataset, pack_dataset
from vaekit.data.tables import load_table
from vaekit.errors import VaekitError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # how the datasets Image feature stores one


def pictures(count: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def png(pixels: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG")
    return stream.getvalue()


def image_structs(images: np.ndarray | list[np.ndarray]) -> Any:
    return pa.array([{"bytes": png(p), "path": None} for p in images], type=IMAGE_STRUCT)


def write_parquet(path: Path, **columns: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def chw(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) as the (N, C, H, W) tensor every source gives."""
    return torch.from_numpy(images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2).copy())


# --- the pixels and labels written ------------------------------------------------------------------------------


def test_png_bytes_in_the_image_feature_struct_decode_to_the_pixels_written(tmp_path: Path) -> None:
    images, labels = pictures(12, (5, 7)), np.arange(12) % 3
    path = write_parquet(tmp_path / "d.parquet", caption=[f"c{i}" for i in range(12)], image=image_structs(images),
                         label=pa.array(labels, pa.int64()))  # fmt: skip
    x, y = load_table(path)["train"]
    assert x.dtype == torch.uint8 and torch.equal(x, chw(images))
    assert y is not None and torch.equal(y, torch.from_numpy(labels))


def test_a_table_splits_like_the_same_arrays_in_an_npz(tmp_path: Path) -> None:
    """Test and validation splits are carved by the same seeded rule as from any user source."""
    images, labels = pictures(40, (4, 4)), np.arange(40) % 4
    write_parquet(tmp_path / "d.parquet", image=image_structs(images), label=labels)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    from_table = load_dataset(DataConfig(dataset=str(tmp_path / "d.parquet"), val_size=3))
    from_npz = load_dataset(DataConfig(dataset=str(tmp_path / "d.npz"), val_size=3))
    for role in ("train", "val", "test"):
        table_split, npz_split = getattr(from_table, role), getattr(from_npz, role)
        assert torch.equal(table_split.x, npz_split.x) and torch.equal(table_split.y, npz_split.y), role
    assert (len(from_table.train), len(from_table.val), len(from_table.test)) == (33, 3, 4)


def test_plain_binary_rgb_column_named_img_without_labels(tmp_path: Path) -> None:
    images = pictures(6, (3, 5, 3))
    path = write_parquet(tmp_path / "d.parquet", img=pa.array([png(p) for p in images], pa.binary()))
    x, y = load_table(path)["train"]
    assert y is None and torch.equal(x, chw(images))


def test_grey_and_colour_rows_all_decode_as_rgb(tmp_path: Path) -> None:
    grey, colour = pictures(3, (4, 4)), pictures(3, (4, 4, 3), seed=1)
    mixed = [grey[0], colour[0], grey[1], colour[1], grey[2], colour[2]]
    x, _ = load_table(write_parquet(tmp_path / "d.parquet", image=image_structs(mixed)))["train"]
    assert x.shape == (6, 3, 4, 4)
    assert torch.equal(x[0], torch.from_numpy(grey[0]).expand(3, 4, 4)) and torch.equal(x[1], chw(colour[:1])[0])


@pytest.mark.parametrize(
    ("column", "shape", "make"),
    [
        ("pixels", (5, 7), lambda a: pa.array(a.tolist(), pa.list_(pa.list_(pa.uint8())))),  # nested lists, HxW
        ("image", (5, 7, 3), lambda a: pa.array(a.tolist(), pa.list_(pa.list_(pa.list_(pa.uint8(), 3), 7), 5))),
        ("img", (4, 6), lambda a: pa.array(a.astype(np.int64).tolist())),  # plain Python ints infer int64
    ],
)
def test_pixel_arrays_decode_to_the_pixels_written(tmp_path: Path, column: str, shape: Any, make: Any) -> None:
    images = pictures(5, shape)
    x, _ = load_table(write_parquet(tmp_path / "d.parquet", **{column: make(images)}))["train"]
    assert x.dtype == torch.uint8 and torch.equal(x, chw(images))


def test_float_arrays_in_the_unit_interval_stay_floats(tmp_path: Path) -> None:
    images = np.random.default_rng(0).random((5, 3, 4))
    x, _ = load_table(write_parquet(tmp_path / "d.parquet", pixels=pa.array(images.tolist())))["train"]
    assert x.dtype == torch.float32 and torch.equal(x, chw(images.astype(np.float32)))


def test_a_folder_of_parquet_files_is_one_table_in_name_order(tmp_path: Path) -> None:
    images, labels = pictures(10, (4, 4)), np.arange(10)
    write_parquet(tmp_path / "t" / "part-1.parquet", image=image_structs(images[6:]), label=labels[6:])
    write_parquet(tmp_path / "t" / "part-0.parquet", image=image_structs(images[:6]), label=labels[:6])
    parts = load_table(tmp_path / "t")
    assert list(parts) == ["train"] and torch.equal(parts["train"][0], chw(images))


def test_hub_named_parquet_files_bring_their_own_test_split(tmp_path: Path) -> None:
    train, test = pictures(20, (4, 4)), pictures(5, (4, 4), seed=1)
    folder = tmp_path / "hub" / "data"
    write_parquet(folder / "train-00000-of-00001.parquet", image=image_structs(train), label=np.arange(20) % 2)
    write_parquet(folder / "test-00000-of-00001.parquet", image=image_structs(test), label=np.arange(5) % 2)
    data = load_dataset(DataConfig(dataset=str(tmp_path / "hub"), val_size=2))
    assert torch.equal(data.test.x, chw(test)) and torch.equal(data.test.y, torch.arange(5) % 2)
    assert len(data.train) == 18 and len(data.val) == 2


# --- folders written by datasets.save_to_disk -------------------------------------------------------------------


def test_a_saved_dataset_with_image_feature_and_class_labels(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    images, labels = pictures(8, (5, 6, 3)), [i % 3 for i in range(8)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    saved = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in images], "label": labels}, features)
    saved.save_to_disk(str(tmp_path / "saved"))
    x, y = load_table(tmp_path / "saved")["train"]
    assert torch.equal(x, chw(images)) and y is not None and y.tolist() == labels


def test_a_saved_dataset_dict_uses_its_own_train_and_test_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    train, test = pictures(20, (4, 4)), pictures(6, (4, 4), seed=1)
    features = datasets.Features({"pixels": datasets.Array2D((4, 4), "uint8"), "y": datasets.Value("int64")})
    splits = {
        "train": datasets.Dataset.from_dict({"pixels": train, "y": list(range(20))}, features),
        "test": datasets.Dataset.from_dict({"pixels": test, "y": list(range(6))}, features),
        "validation": datasets.Dataset.from_dict({"pixels": test[:4], "y": list(range(4))}, features),
    }
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    data = load_dataset(DataConfig(dataset=str(tmp_path / "saved"), val_size=2))
    assert torch.equal(data.test.x, chw(test)) and data.test.y.tolist() == list(range(6))
    together = torch.cat([data.train.x, data.val.x])
    assert len(together) == 20 and sorted(map(bytes, together.numpy())) == sorted(map(bytes, chw(train).numpy()))


# --- through the command line -----------------------------------------------------------------------------------


def test_train_on_a_parquet_file_through_the_cli_saves_the_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", photo=image_structs(pictures(30, (6, 6))), cls=np.arange(30) % 2)
    code, _, stderr = invoke("train", "--dataset", path, "--image-column", "photo", "--label-column", "cls",
                             "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--batch-size", "8", "--quiet",
                             "--out", tmp_path / "run")  # fmt: skip
    assert code == 0, stderr
    data = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert (data["image_column"], data["label_column"]) == ("photo", "cls")
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_a_pack_of_a_parquet_file_gives_the_same_splits(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", image=image_structs(pictures(30, (4, 5))), label=np.arange(30) % 3)
    code, _, stderr = invoke("pack", path, tmp_path / "pack")
    assert code == 0, stderr
    packed = load_dataset(DataConfig(dataset=str(tmp_path / "pack"), val_size=2))
    source = load_dataset(DataConfig(dataset=str(path), val_size=2))
    for role in ("train", "val", "test"):
        a, b = getattr(packed, role), getattr(source, role)
        assert torch.equal(a.x[torch.arange(len(a))], b.x) and torch.equal(a.y, b.y), role


def test_pack_dataset_takes_the_columns_as_train_does(tmp_path: Path) -> None:
    images, labels = pictures(12, (4, 4)), np.arange(12) % 2
    path = write_parquet(tmp_path / "d.parquet", photo=image_structs(images), cls=labels)
    manifest = pack_dataset(str(path), tmp_path / "pack", image_column="photo", label_column="cls")
    pack = open_pack(tmp_path / "pack")
    assert manifest["shape"] == [12, 1, 4, 4] and torch.equal(pack.images, chw(images))
    assert pack.labels is not None and pack.labels.tolist() == labels.tolist()
    code, _, stderr = invoke("pack", path, tmp_path / "cli", "--image-column", "photo", "--label-column", "cls")
    assert code == 0, stderr
    assert torch.equal(open_pack(tmp_path / "cli").images, pack.images)


# --- bad input: one line naming the problem and the fix ---------------------------------------------------------


def one_line(tmp_path: Path, dataset: Path, *flags: str) -> str:
    code, _, stderr = invoke("train", "--dataset", dataset, *flags, "--out", tmp_path / "run")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert not (tmp_path / "run").exists()
    return lines[0]


def test_no_image_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", photo=image_structs(pictures(5, (4, 4))), kind=np.arange(5))
    line = one_line(tmp_path, path)
    assert "has no column named image or img or pixels (its columns: photo, kind)" in line
    assert "--image-column NAME" in line
    line = one_line(tmp_path, path, "--image-column", "picture")
    assert "has no column 'picture' (its columns: photo, kind): fix --image-column" in line


def test_a_label_column_named_but_missing(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", image=image_structs(pictures(5, (4, 4))))
    with pytest.raises(VaekitError, match=r"no column 'class' \(its columns: image\): fix --label-column"):
        load_table(path, label_column="class")


def test_images_of_unequal_size_name_both_rows(tmp_path: Path) -> None:
    images = [*pictures(4, (4, 4)), pictures(1, (5, 4))[0]]
    line = one_line(tmp_path, write_parquet(tmp_path / "d.parquet", image=image_structs(images)))
    assert "images differ in size: row 4 of column 'image' in" in line
    assert "d.parquet is 4x5, the first image 4x4: resize them all to one size first" in line


def test_arrays_of_unequal_shape_name_the_row(tmp_path: Path) -> None:
    rows = [np.zeros((3, 3), np.uint8).tolist()] * 5
    rows[3] = np.zeros((3, 4), np.uint8).tolist()
    with pytest.raises(VaekitError, match=r"row 3 of column 'pixels' in .* differs in shape from the first image"):
        load_table(write_parquet(tmp_path / "d.parquet", pixels=pa.array(rows, pa.list_(pa.list_(pa.uint8())))))


def test_undecodable_bytes_name_the_row(tmp_path: Path) -> None:
    blobs = [png(p) for p in pictures(6, (4, 4))]
    blobs[4] = b"not an image"
    line = one_line(tmp_path, write_parquet(tmp_path / "d.parquet", image=pa.array(blobs, pa.binary())))
    assert "cannot decode row 4 of column 'image' in" in line
    assert ": not a PNG or JPEG image (nor any format known): convert it to PNG or remove it" in line


def test_a_folder_names_the_file_and_its_row(tmp_path: Path) -> None:
    blobs = [png(p) for p in pictures(8, (4, 4))]
    blobs[6] = b"\x89PNG broken"
    write_parquet(tmp_path / "t" / "a.parquet", image=pa.array(blobs[:4], pa.binary()))
    write_parquet(tmp_path / "t" / "b.parquet", image=pa.array(blobs[4:], pa.binary()))
    with pytest.raises(VaekitError, match=r"cannot decode row 2 of column 'image' in b\.parquet"):
        load_table(tmp_path / "t")


def test_a_label_column_with_nulls(tmp_path: Path) -> None:
    labels = pa.array([0, 1, None, 1, None], pa.int64())
    path = write_parquet(tmp_path / "d.parquet", image=image_structs(pictures(5, (4, 4))), label=labels)
    line = one_line(tmp_path, path)
    assert "label column 'label' of" in line and "2 empty (null) values, the first at row 2 of column 'label'" in line
    assert "fill them in or drop those rows" in line


def test_an_empty_table(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", image=pa.array([], IMAGE_STRUCT))
    assert f"{path} holds 0 rows: vaekit needs at least 4 images" in one_line(tmp_path, path)


def test_a_path_instead_of_bytes_says_to_embed_the_images(tmp_path: Path) -> None:
    rows = [{"bytes": png(p), "path": None} for p in pictures(4, (4, 4))] + [{"bytes": None, "path": "x.png"}]
    column = pa.array(rows, IMAGE_STRUCT)
    with pytest.raises(VaekitError, match=r"row 4 of column 'image' in .* names the file x\.png instead of holding"):
        load_table(write_parquet(tmp_path / "d.parquet", image=column))


def test_without_pyarrow_one_line_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_parquet(tmp_path / "d.parquet", image=image_structs(pictures(5, (4, 4))))
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    assert one_line(tmp_path, path) == "error: reading Parquet needs pyarrow: pip install 'vaekit[hf]'"


def test_column_flags_on_a_source_without_columns(tmp_path: Path) -> None:
    with pytest.raises(VaekitError, match="--image-column and --label-column choose columns of a table"):
        load_dataset(DataConfig(dataset="digits", image_column="image"))
