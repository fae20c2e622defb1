"""Hypothesis strategies for malformed inputs: each draws a whole case, the files to write and the reader to run.

A case is plain data (see `worker.materialize`): {"target": name in `targets.TARGETS`, "args": {...},
"files": {relative path: bytes | None (a folder) | {"fifo": True} | {"symlink": target} | {"sparse": size, "head": b}},
"changed": [the paths worth showing in a report, when the other files are a valid template]}.
Most cases start from something valid (an array numpy wrote, an image Pillow encoded, a pack, a run folder vaekit
trained) and break one part of it, so the readers get past their first check; some are bytes with no structure at
all.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import json
import math
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from PIL import Image

Case = dict[str, Any]
Files = dict[str, Any]

# --- building blocks ----------------------------------------------------------------------------------------------

SPECIAL_ENTRIES = st.sampled_from([None, {"fifo": True}, {"symlink": "missing"}, {"symlink": "/dev/zero"}])
HUGE_INTS = st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63 + 5, 2**64, 10**23, -(2**63) - 1])
ODD_FLOATS = st.sampled_from([0.0, -0.0, 0.5, 1.5, -1.0, 1e-30, 1e300, math.inf, -math.inf, math.nan])


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data`, or it damaged: cut short, a byte changed, bytes inserted, or garbage appended."""
    how = draw(st.sampled_from(["same", "same", "truncate", "flip", "insert", "append"]))
    if how == "same" or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    extra = draw(st.binary(min_size=1, max_size=16))
    return data[:at] + extra + data[at:] if how == "insert" else data + extra


def deeply_nested(depth: int) -> str:
    return "[" * depth + "]" * depth


json_scalars = st.one_of(st.none(), st.booleans(), HUGE_INTS, st.integers(-3, 70000), ODD_FLOATS, st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def json_document(draw: st.DrawFn, template: Any) -> bytes:
    """JSON text made from `template`: values replaced, keys dropped or added, or another document entirely."""
    how = draw(st.sampled_from(["edit", "edit", "edit", "value", "deep", "garbage", "non-utf8", "empty"]))
    if how == "value":
        return json.dumps(draw(json_values)).encode()
    if how == "deep":
        return deeply_nested(draw(st.sampled_from([10, 1000, 100_000]))).encode()
    if how == "garbage":
        return draw(st.binary(max_size=64))
    if how == "non-utf8":
        return b'{"a": "\xff\xfe"}'
    if how == "empty":
        return b""
    document = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 3))):
        document = draw(edited(document))
    return json.dumps(document).encode()  # NaN and Infinity as JSON's non-standard tokens: readers meet them too


@st.composite
def edited(draw: st.DrawFn, value: Any) -> Any:
    """`value` with one thing inside it changed: a leaf replaced, a key dropped or added, a list grown or emptied."""
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value, key=str)))
        how = draw(st.sampled_from(["inside", "inside", "replace", "drop", "add"]))
        changed = dict(value)
        if how == "inside":
            changed[key] = draw(edited(value[key]))
        elif how == "replace":
            changed[key] = draw(json_values)
        elif how == "drop":
            del changed[key]
        else:
            changed[draw(st.text(max_size=8))] = draw(json_values)
        return changed
    if isinstance(value, list) and value:
        at = draw(st.integers(0, len(value) - 1))
        how = draw(st.sampled_from(["inside", "inside", "empty", "append", "drop"]))
        if how == "inside":
            return [*value[:at], draw(edited(value[at])), *value[at + 1 :]]
        if how == "empty":
            return []
        if how == "append":
            return [*value, draw(json_values)]
        return value[:at] + value[at + 1 :]
    return draw(json_values)


# --- arrays: .npy and .npz ----------------------------------------------------------------------------------------

DTYPES = ["|u1", "|b1", "<f4", "<f8", "<f2", ">f4", "<i8", "<u8", "<i2", "<c8", "|O", "<U3", "|S2", "|V4", "<M8[s]"]
SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple) | st.sampled_from(
    [(4, 5, 5), (4, 1, 5, 5), (4, 5, 5, 3), (4, 25), (1, 5, 5), (10**9, 10, 10), (4, 2**40, 2**40), (2**62, 4)]
)


def npy_header(descr: str, fortran: bool, shape: tuple[int, ...], version: int = 1) -> bytes:
    text = f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}"
    size = 2 if version == 1 else 4
    pad = -(6 + 2 + size + len(text) + 1) % 64
    text += " " * pad + "\n"
    length = len(text).to_bytes(size, "little")
    return b"\x93NUMPY" + bytes([version, 0]) + length + text.encode("latin-1")


@st.composite
def array_values(draw: st.DrawFn) -> np.ndarray:
    """An array as numpy saves it: pixels, floats in or out of [0, 1], NaN, odd dtypes, any layout."""
    shape = draw(st.sampled_from([(4, 5, 5), (5, 1, 4, 4), (4, 3, 3, 3), (6, 4, 4, 1), (4, 9), (3, 4, 4), (8, 2, 2)]))
    kind = draw(st.sampled_from(["uint8", "uint8", "float01", "float", "bool", "int", "complex", "nan", "f16"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "float01":
        return rng.random(shape, dtype=np.float32)
    if kind == "float":
        return rng.normal(size=shape) * 10
    if kind == "bool":
        return rng.random(shape) > 0.5
    if kind == "int":
        return rng.integers(-300, 300, shape)
    if kind == "complex":
        return (rng.random(shape) + 1j * rng.random(shape)).astype(np.complex64)
    if kind == "f16":
        return rng.random(shape).astype(np.float16)
    values = rng.random(shape)
    values.flat[0] = np.nan
    return values


@st.composite
def npy_bytes(draw: st.DrawFn) -> bytes:
    """An .npy numpy wrote (perhaps damaged), or one whose header says anything at all."""
    if draw(st.booleans()):
        buffer = io.BytesIO()
        np.save(buffer, draw(array_values()), allow_pickle=False)
        return draw(mutated(buffer.getvalue()))
    descr, shape = draw(st.sampled_from(DTYPES)), draw(SHAPES)
    header = npy_header(descr, draw(st.booleans()), shape, draw(st.sampled_from([1, 1, 2])))
    if draw(st.integers(0, 9)) == 0:
        header = header[:10] + draw(st.binary(max_size=40))  # not a Python literal at all
    try:
        size = math.prod(shape) * np.dtype(descr).itemsize
    except TypeError:
        size = 0
    body = bytes(min(size, 4096)) if draw(st.booleans()) else draw(st.binary(max_size=64))
    return header + body


@st.composite
def label_bytes(draw: st.DrawFn) -> bytes:
    labels = draw(
        st.lists(st.integers(-2, 5) | HUGE_INTS.filter(lambda v: -(2**63) <= v < 2**64), min_size=0, max_size=9)
    )
    dtype = draw(st.sampled_from(["<i8", "<u8", "<i1", "<f4", "|b1"]))
    buffer = io.BytesIO()
    try:
        np.save(buffer, np.array(labels, dtype=np.uint64 if any(v >= 2**63 for v in labels) else None).astype(dtype))
    except (OverflowError, ValueError):
        np.save(buffer, np.zeros(len(labels), dtype=dtype))
    return draw(mutated(buffer.getvalue()))


@st.composite
def npz_bytes(draw: st.DrawFn) -> bytes:
    """A zip of .npy members named as vaekit looks for them (or not), stored or deflated, perhaps damaged."""
    names = draw(
        st.lists(
            st.sampled_from(["x", "images", "x_train", "arr_0", "y", "labels", "y_train", "x_test", "y_test", "z"]),
            min_size=0,
            max_size=4,
            unique=True,
        )
    )
    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name in names:
            member = draw(label_bytes()) if name.startswith(("y", "labels")) else draw(npy_bytes())
            archive.writestr(f"{name}.npy" if draw(st.integers(0, 9)) else name, member)
    return draw(mutated(buffer.getvalue()))


@st.composite
def array_cases(draw: st.DrawFn) -> Case:
    """A .npy or .npz file given as --dataset (and packed), or a special file where one is expected."""
    name = draw(st.sampled_from(["data.npy", "data.npz", "data", "data.NPY", "data.bin"]))
    entry = draw(st.one_of(npy_bytes(), npz_bytes(), st.binary(max_size=32), SPECIAL_ENTRIES))
    return {"target": "data", "files": {name: entry}, "args": data_args(draw, name)}


def data_args(draw: st.DrawFn, path: str) -> dict[str, Any]:
    return {
        "path": path,
        "train": draw(st.booleans()),
        "condition": draw(st.sampled_from(["none", "label"])),
        "binarize": draw(st.sampled_from(["none", "dynamic", "static"])),
        "batch_size": draw(st.sampled_from([1, 4, 1000])),
        "val_size": draw(st.sampled_from([0, 2, 10**6])),
    }


# --- images: folders and single files -----------------------------------------------------------------------------

FORMAT_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "TIFF": ["1", "L", "RGB", "I;16", "F"],
    "BMP": ["1", "L", "P", "RGB"],
    "EPS": ["L", "RGB"],
    "PPM": ["L", "RGB"],
    "WEBP": ["RGB", "RGBA"],
    "ICO": ["RGBA"],
    "TGA": ["L", "RGB"],
    "PCX": ["L", "RGB"],
    "SGI": ["L", "RGB"],
    "IM": ["L", "RGB"],
}
SAVERS = sorted(name for name in FORMAT_MODES if name in Image.SAVE or not Image.SAVE)


def encode(fmt: str, mode: str, size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    bands = len(Image.new(mode, (1, 1)).getbands())
    if mode in ("I;16", "I", "F"):
        image = Image.fromarray(rng.integers(0, 65536, (size[1], size[0])).astype(np.uint16)).convert(mode)
    else:
        pixels = rng.integers(0, 256, (size[1], size[0], bands), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, "L" if bands == 1 else None)
        image = image.convert(mode) if image.mode != mode else image
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@functools.cache
def png_bomb(side: int) -> bytes:
    """A PNG of side×side zeros: a few kB that decode to side² bytes (at 4096, the largest image vaekit accepts)."""
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width×height and which holds no pixels at all."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@st.composite
def image_bytes(draw: st.DrawFn, size: tuple[int, int] | None = None) -> bytes:
    """An image in any format Pillow writes (PNG and JPEG mostly), perhaps damaged, or something posing as one."""
    kind = draw(st.sampled_from(["encoded"] * 8 + ["bomb", "header-only", "garbage"]))
    if kind == "bomb":
        return png_bomb(draw(st.sampled_from([64, 4096])))
    if kind == "header-only":
        return png_header_only(draw(st.sampled_from([1, 4097, 65535, 2**31 - 1])), draw(st.sampled_from([1, 4096])))
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    fmt = draw(st.sampled_from(["PNG", "PNG", "JPEG", *SAVERS]))
    mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
    shape = size or (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    try:
        data = encode(fmt, mode, shape, draw(st.integers(0, 255)))
    except (OSError, ValueError, KeyError):  # a mode the format cannot store: plain PNG instead
        data = encode("PNG", "L", shape, 0)
    return draw(mutated(data)) if draw(st.integers(0, 3)) == 0 else data


@st.composite
def image_folder_cases(draw: st.DrawFn) -> Case:
    """A folder of images (one sub-folder per label, or none), most of one size, some not, some not images."""
    size = (draw(st.integers(1, 10)), draw(st.integers(1, 10)))
    files: Files = {}
    for i in range(draw(st.integers(0, 10))):
        folder = draw(st.sampled_from(["", "", "a/", "b/", "c/d/"]))
        suffix = draw(st.sampled_from([".png", ".png", ".jpg", ".jpeg", ".PNG", ".gif", ".tif", ".txt"]))
        same = draw(st.integers(0, 4)) > 0
        entry = draw(image_bytes(size if same else None)) if draw(st.integers(0, 19)) else draw(SPECIAL_ENTRIES)
        files[f"images/{folder}{i}{suffix}"] = entry
    files.setdefault("images/", None)
    return {"target": "data", "files": files, "args": data_args(draw, "images")}


@st.composite
def image_file_cases(draw: st.DrawFn) -> Case:
    """One image given where a command takes an image of the model's shape."""
    name = draw(st.sampled_from(["a.png", "a.jpg", "a.gif", "a"]))
    size = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    entry = draw(image_bytes(size)) if draw(st.integers(0, 9)) else draw(SPECIAL_ENTRIES)
    shape = [draw(st.sampled_from([1, 3])), size[1], size[0]] if draw(st.booleans()) else [1, 28, 28]
    return {"target": "image", "files": {name: entry}, "args": {"path": name, "shape": shape}}


# --- tables: Parquet and datasets folders -------------------------------------------------------------------------


@st.composite
def image_column(draw: st.DrawFn, rows: int) -> Any:
    """An image column of `rows` rows: encoded bytes, the datasets Image struct, nested lists, or the wrong type."""
    import pyarrow as pa

    kind = draw(st.sampled_from(["binary", "struct", "nested", "nested", "fixed", "string", "int", "null"]))
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    maybe_null = st.integers(0, 9).map(lambda v: v == 0)
    if kind in ("binary", "struct"):
        blobs = [
            None if draw(maybe_null) else draw(image_bytes(size if draw(st.integers(0, 5)) else None))
            for _ in range(rows)
        ]
        if kind == "binary":
            return pa.array(blobs, draw(st.sampled_from([pa.binary(), pa.large_binary()])))
        paths = [draw(st.none() | st.just("a.png")) for _ in range(rows)]
        return pa.array(
            [{"bytes": b, "path": p} for b, p in zip(blobs, paths, strict=True)],
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
    if kind in ("nested", "fixed"):
        channels = draw(st.sampled_from([None, None, 1, 3, 4]))
        value_type = draw(st.sampled_from([pa.uint8(), pa.int64(), pa.float32(), pa.float64(), pa.bool_(), pa.int8()]))
        rng = np.random.default_rng(draw(st.integers(0, 255)))
        images: list[Any] = []
        for _ in range(rows):
            shape = size if draw(st.integers(0, 5)) else (draw(st.integers(0, 6)), draw(st.integers(0, 6)))
            full = shape[::-1] + ((channels,) if channels else ())
            if value_type == pa.bool_():
                array: np.ndarray = rng.random(full) > 0.5
            elif pa.types.is_floating(value_type):
                array = rng.random(full) * draw(st.sampled_from([1.0, 1.0, 2.0, -1.0, math.nan]))
            else:
                array = rng.integers(draw(st.sampled_from([0, 0, -5])), draw(st.sampled_from([256, 256, 300])), full)
            images.append(None if draw(maybe_null) else array.tolist())
        inner: Any = value_type
        for dim in (
            reversed(size[::-1] + ((channels,) if channels else ()))
            if kind == "fixed"
            else range(2 if channels is None else 3)
        ):
            inner = pa.list_(inner, dim) if kind == "fixed" else pa.list_(inner)
        try:
            column = pa.array(images, inner)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # rows that do not fit the type: empty rows
            column = pa.array([[] for _ in range(rows)], pa.list_(pa.list_(pa.uint8())))
        return column
    if kind == "string":
        return pa.array([draw(st.text(max_size=5)) for _ in range(rows)])
    if kind == "int":
        return pa.array([draw(st.integers(-5, 300)) for _ in range(rows)])
    return pa.nulls(rows)


@st.composite
def label_column(draw: st.DrawFn, rows: int) -> Any:
    import pyarrow as pa

    kind = draw(st.sampled_from(["int64", "int64", "uint64", "int8", "float", "string", "bool", "null"]))
    values = [draw(st.integers(0, 3) | HUGE_INTS.filter(lambda v: -(2**63) <= v < 2**63)) for _ in range(rows)]
    nulls = [draw(st.integers(0, 9)) == 0 for _ in range(rows)]
    if kind == "uint64":
        return pa.array(
            [None if n else abs(v) + (2**63 if v == 1 else 0) for v, n in zip(values, nulls, strict=True)], pa.uint64()
        )
    if kind == "int8":
        return pa.array([None if n else v % 100 for v, n in zip(values, nulls, strict=True)], pa.int8())
    if kind == "float":
        return pa.array([float(v) for v in values])
    if kind == "string":
        return pa.array([str(v) for v in values])
    if kind == "bool":
        return pa.array([v % 2 == 0 for v in values])
    if kind == "null":
        return pa.nulls(rows)
    return pa.array([None if n else v for v, n in zip(values, nulls, strict=True)], pa.int64())


@st.composite
def tables(draw: st.DrawFn) -> Any:
    import pyarrow as pa

    rows = draw(st.sampled_from([0, 1, 3, 4, 5, 8]))
    columns = {draw(st.sampled_from(["image", "img", "pixels", "Image", "picture"])): draw(image_column(rows))}
    if draw(st.integers(0, 3)):
        columns[draw(st.sampled_from(["label", "labels", "y", "target"]))] = draw(label_column(rows))
    return pa.table(columns)


def parquet_bytes(table: Any) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def column_args(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "image_column": draw(st.sampled_from([None, None, None, "image", "img", "nope"])),
        "label_column": draw(st.sampled_from([None, None, None, "label", "y", "image"])),
    }


@st.composite
def parquet_cases(draw: st.DrawFn) -> Case:
    """A Parquet file, or a folder of them named like the hub's splits (train-…, test-…) or not."""
    if draw(st.booleans()):
        files: Files = {"data.parquet": draw(mutated(parquet_bytes(draw(tables()))))}
        path = "data.parquet"
    else:
        names = draw(
            st.lists(
                st.sampled_from(["train-0.parquet", "train-1.parquet", "test-0.parquet", "other.parquet"]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        files = {f"pq/{name}": draw(mutated(parquet_bytes(draw(tables())))) for name in names}
        path = "pq"
    return {"target": "data", "files": files, "args": {**data_args(draw, path), **column_args(draw)}}


def arrow_stream(table: Any) -> bytes:
    import pyarrow as pa

    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def features_of(table: Any) -> Any:
    import datasets

    try:
        return {"features": datasets.Features.from_arrow_schema(table.schema).to_dict()}
    except Exception:  # a type `datasets` has no feature for: the file holds no features then
        return {}


STATE_TEMPLATE = {
    "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
    "_fingerprint": "0123456789abcdef",
    "_format_columns": None,
    "_format_kwargs": {},
    "_format_type": None,
    "_output_all_columns": False,
    "_split": None,
}


@st.composite
def saved_dataset(draw: st.DrawFn, folder: str) -> Files:
    """The three files `Dataset.save_to_disk` writes, any of them changed."""
    table = draw(tables())
    state = copy.deepcopy(STATE_TEMPLATE)
    how = draw(st.sampled_from(["valid", "state", "state", "files", "info", "arrow"]))
    files = {
        f"{folder}data-00000-of-00001.arrow": arrow_stream(table),
        f"{folder}dataset_info.json": json.dumps(features_of(table)).encode(),
        f"{folder}state.json": json.dumps(state).encode(),
    }
    if how == "state":
        files[f"{folder}state.json"] = draw(json_document(state))
    elif how == "files":
        data_files = draw(
            st.sampled_from(
                [
                    [],
                    [{}],
                    [{"filename": "missing.arrow"}],
                    [{"filename": "../outside.arrow"}],
                    [{"filename": "/dev/zero"}],
                    "data-00000-of-00001.arrow",
                    None,
                    [{"filename": "data-00000-of-00001.arrow"}] * 2,
                ]
            )
        )
        files[f"{folder}state.json"] = json.dumps({**state, "_data_files": data_files}).encode()
    elif how == "info":
        files[f"{folder}dataset_info.json"] = draw(json_document(features_of(table)))
    elif how == "arrow":
        files[f"{folder}data-00000-of-00001.arrow"] = draw(mutated(arrow_stream(table)))
    return files


@st.composite
def datasets_cases(draw: st.DrawFn) -> Case:
    """A folder written by `save_to_disk`: a Dataset, or a DatasetDict whose dataset_dict.json lists its splits."""
    if draw(st.booleans()):
        files = draw(saved_dataset("hf/"))
    else:
        splits = draw(st.lists(st.sampled_from(["train", "test", "validation"]), max_size=3, unique=True))
        listed = draw(st.sampled_from([splits, [*splits, "missing"], "train", None]))
        files = {"hf/dataset_dict.json": json.dumps({"splits": listed}).encode()}
        for split in splits:
            files.update(draw(saved_dataset(f"hf/{split}/")))
    return {"target": "data", "files": files, "args": {**data_args(draw, "hf"), **column_args(draw)}}


# --- packs --------------------------------------------------------------------------------------------------------


@functools.cache
def sparse_digest(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(1 << 20)
    for start in range(0, size, len(block)):
        digest.update(block[: min(len(block), size - start)])
    return digest.hexdigest()


@st.composite
def pack_cases(draw: st.DrawFn) -> Case:
    """A pack folder: written right (from 1 image up, or a sparse one of large images), then one part broken."""
    big = draw(st.integers(0, 9)) == 0
    channels = draw(st.sampled_from([1, 1, 3]))
    height, width = (8000, 8000) if big else (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    train, test = draw(st.integers(1, 4 if big else 12)), draw(st.integers(0, 3))
    count = train + test
    size = count * channels * height * width
    labels = (
        None
        if draw(st.booleans())
        else np.array(
            draw(
                st.lists(
                    st.integers(0, 3) | HUGE_INTS.filter(lambda v: -(2**63) <= v < 2**63),
                    min_size=count,
                    max_size=count,
                )
            ),
            dtype="<i8",
        )
    )
    if big:
        images: Any = {"sparse": size, "head": b"\x01" * 16}
        image_digest = hashlib.sha256(b"\x01" * 16 + bytes(size - 16)).hexdigest() if size < (1 << 24) else "0" * 64
    else:
        pixels = np.random.default_rng(draw(st.integers(0, 255))).integers(0, 256, size, dtype=np.uint8).tobytes()
        images, image_digest = pixels, hashlib.sha256(pixels).hexdigest()
    files_entry: dict[str, Any] = {"images.u8": {"bytes": size, "sha256": image_digest}}
    files: Files = {"pack/images.u8": images}
    if labels is not None:
        files["pack/labels.i64"] = labels.tobytes()
        files_entry["labels.i64"] = {"bytes": count * 8, "sha256": hashlib.sha256(labels.tobytes()).hexdigest()}
    splits = {"train": [0, train], **({"test": [train, count]} if test else {})}
    manifest = {
        "format": "vaekit-pack",
        "format_version": 1,
        "shape": [count, channels, height, width],
        "dtype": "uint8",
        "splits": splits,
        "files": files_entry,
        "source": "fuzz",
    }
    files["pack/manifest.json"] = json.dumps(manifest).encode()
    how = draw(st.sampled_from(["valid", "manifest", "manifest", "manifest", "images", "labels", "special"]))
    if how == "manifest":
        files["pack/manifest.json"] = draw(json_document(manifest))
    elif how == "images" and not big:
        files["pack/images.u8"] = draw(mutated(images))
    elif how == "labels" and labels is not None:
        files["pack/labels.i64"] = draw(mutated(labels.tobytes()))
    elif how == "special":
        files[draw(st.sampled_from(sorted(files)))] = draw(SPECIAL_ENTRIES)
    args = {**data_args(draw, "pack"), "binarize": draw(st.sampled_from(["none", "dynamic"]))}
    return {"target": "pack", "files": files, "args": args}


# --- run folders --------------------------------------------------------------------------------------------------


@functools.cache
def run_template() -> dict[str, bytes]:
    """The files of a tiny finished run (one epoch of 4x4 images from data.npy), trained once per process."""
    from vaekit import DataConfig, ModelConfig, TrainConfig
    from vaekit.training.loop import train  # no pictures: the readers never look at them

    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        pixels = np.random.default_rng(0).integers(0, 256, (16, 4, 4), dtype=np.uint8)
        np.save("data.npy", pixels)
        config = TrainConfig(
            model=ModelConfig(hidden=[8], latent_dim=2),
            data=DataConfig(dataset="data.npy", val_size=2),
            epochs=1,
            batch_size=4,
        )
        train(config, "run")
        root = Path(folder)
        return {
            str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and (path.parent == root or path.suffix in (".json", ".jsonl", ".pt", ".safetensors"))
        }


def odd_values() -> st.SearchStrategy[Any]:
    """What torch.save can hold and torch.load(weights_only=True) gives back: plain data and tensors of any kind."""
    tensors = st.builds(
        lambda dtype, shape: torch.zeros(shape, dtype=dtype),
        st.sampled_from(
            [
                torch.float32,
                torch.float64,
                torch.int64,
                torch.uint8,
                torch.bool,
                torch.float16,
                torch.complex64,
                torch.int32,
            ]
        ),
        st.lists(st.integers(0, 5), max_size=3),
    )
    leaves = st.one_of(json_scalars, tensors, st.binary(max_size=8))
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    )


@st.composite
def edited_state(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """The checkpoint with one value inside it changed (a tensor's dtype or shape, a key, a type)."""
    if isinstance(value, dict) and value and depth < 4:
        key = draw(st.sampled_from(sorted(value, key=str)))
        how = draw(st.sampled_from(["inside", "inside", "replace", "drop", "add"]))
        changed = dict(value)
        if how == "inside":
            changed[key] = draw(edited_state(value[key], depth + 1))
        elif how == "replace":
            changed[key] = draw(odd_values())
        elif how == "drop":
            del changed[key]
        else:
            changed[draw(st.sampled_from(["partial", "average", "extra", "history"]))] = draw(odd_values())
        return changed
    if isinstance(value, list) and value and depth < 4:
        at = draw(st.integers(0, len(value) - 1))
        return [*value[:at], draw(edited_state(value[at], depth + 1)), *value[at + 1 :]]
    if isinstance(value, torch.Tensor) and draw(st.booleans()):
        return (
            value.to(draw(st.sampled_from([torch.float64, torch.int64, torch.uint8, torch.float16])))
            if value.numel()
            else value.reshape(-1)
        )
    if isinstance(value, str):  # the history, kept as JSON text
        return draw(st.sampled_from([value, "", "[]", "[{}]", "{}", "[1]", "not JSON", deeply_nested(100_000)]))
    return draw(odd_values())


@st.composite
def run_cases(draw: st.DrawFn, file: str) -> Case:
    """The tiny run with one of its files changed, read by every reader (and resumed, for state.pt)."""
    template = run_template()
    files: Files = dict(template)
    path = f"run/{file}"
    if draw(st.integers(0, 19)) == 0:
        files[path] = draw(SPECIAL_ENTRIES)
    elif file == "state.pt":
        files[path] = draw(state_bytes(template[path]))
    elif file == "model.safetensors":
        files[path] = draw(safetensors_bytes(template[path]))
    elif file == "metrics.jsonl":
        files[path] = draw(history_bytes(template[path]))
    else:
        files[path] = draw(json_document(json.loads(template[path])))
    args = {"path": "run", "resume": file == "state.pt"}
    return {"target": "run", "files": files, "args": args, "changed": [path]}


def parsed_or_empty(history: Any) -> Any:
    """The history kept in a checkpoint as JSON text, parsed; [] when an earlier edit left it something else."""
    try:
        return json.loads(history)
    except (TypeError, ValueError, RecursionError):
        return []


@st.composite
def state_bytes(draw: st.DrawFn, saved: bytes) -> bytes:
    how = draw(st.sampled_from(["edit", "edit", "edit", "edit", "top", "bytes"]))
    if how == "bytes":
        return draw(mutated(saved))
    state = torch.load(io.BytesIO(saved), weights_only=True)
    if how == "top":
        state = draw(odd_values())
    else:
        for _ in range(draw(st.integers(1, 2))):
            state = draw(edited_state(state))
        if draw(st.integers(0, 3)) == 0 and isinstance(state, dict):
            state["history"] = draw(json_document(parsed_or_empty(state.get("history")))).decode(errors="replace")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@st.composite
def safetensors_bytes(draw: st.DrawFn, saved: bytes) -> bytes:
    size = int.from_bytes(saved[:8], "little")
    header = json.loads(saved[8 : 8 + size])
    if draw(st.booleans()):
        return draw(mutated(saved))
    text = draw(json_document(header))
    return len(text).to_bytes(8, "little") + text + saved[8 + size :]


@st.composite
def history_bytes(draw: st.DrawFn, saved: bytes) -> bytes:
    records = [json.loads(line) for line in saved.decode().splitlines()]
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["record", "edited", "other", "empty-object", "garbage", "deep"]))
        if how == "record":
            lines.append(json.dumps(records[0]).encode())
        elif how == "edited":
            lines.append(draw(json_document(records[0])))
        elif how == "other":
            lines.append(json.dumps(draw(json_values)).encode())
        elif how == "empty-object":
            lines.append(b"{}")
        elif how == "garbage":
            lines.append(draw(st.binary(max_size=20)))
        else:
            lines.append(deeply_nested(draw(st.sampled_from([1000, 100_000]))).encode())
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


# --- TOML -----------------------------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A value in TOML's syntax (strings by JSON's rules, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


toml_values = st.recursive(
    st.one_of(
        st.booleans(),
        HUGE_INTS,
        st.integers(-3, 70000),
        ODD_FLOATS,
        st.text(max_size=10),
        st.sampled_from(["mlp", "conv", "label", "static", "cpu", "cuda:7", "tensorboard", "weird://x", ""]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
TOML_KEYS = [
    "latent-dim",
    "latent_dim",
    "hidden",
    "epochs",
    "batch-size",
    "lr",
    "seed",
    "split-seed",
    "dataset",
    "model",
    "network",
    "likelihood",
    "condition",
    "binarize",
    "val-size",
    "samples",
    "k",
    "objective",
    "prior",
    "warmup",
    "second-layer",
    "out",
    "logger",
    "mlflow-uri",
    "device",
    "precision",
    "compile",
    "unknown-key",
]


@st.composite
def toml_cases(draw: st.DrawFn) -> Case:
    """A --config file: settings of any type under the flags' names, a table where a value goes, or not TOML."""
    how = draw(st.sampled_from(["settings", "settings", "settings", "text", "binary", "special"]))
    if how == "settings":
        keys = draw(st.lists(st.sampled_from(TOML_KEYS), max_size=5, unique=True))
        entry: Any = "\n".join(f"{json.dumps(key)} = {toml_value(draw(toml_values))}" for key in keys).encode()
    elif how == "text":
        entry = draw(st.text(max_size=40)).encode()
    elif how == "binary":
        entry = draw(st.binary(max_size=40))
    else:
        entry = draw(SPECIAL_ENTRIES)
    return {"target": "toml", "files": {"config.toml": entry}, "args": {"path": "config.toml"}}


# --- the valid cases the worker warms up with -----------------------------------------------------------------------


def warmup_cases() -> list[Case]:
    """One valid case per reader, so that every library is loaded (and every pool started) before the cap."""
    import pyarrow as pa

    pixels = np.random.default_rng(0).integers(0, 256, (8, 4, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    png = encode("PNG", "L", (4, 4), 0)
    table = pa.table({"image": pa.array([png] * 8, pa.binary()), "label": pa.array([0, 1] * 4)})
    dataset = {
        "hf/data-00000-of-00001.arrow": arrow_stream(table),
        "hf/dataset_info.json": json.dumps(features_of(table)).encode(),
        "hf/state.json": json.dumps(STATE_TEMPLATE).encode(),
    }
    run_args = {"path": "run", "resume": True}
    data_args = {"train": True, "condition": "label"}
    return [
        {"target": "data", "files": {"data.npy": buffer.getvalue()}, "args": {"path": "data.npy", "train": True}},
        {
            "target": "data",
            "files": {f"images/{i % 2}/{i}.png": png for i in range(8)},
            "args": {"path": "images", **data_args},
        },
        {"target": "data", "files": {"data.parquet": parquet_bytes(table)}, "args": {"path": "data.parquet"}},
        {"target": "data", "files": dataset, "args": {"path": "hf", **data_args}},
        {"target": "image", "files": {"a.png": png}, "args": {"path": "a.png", "shape": [1, 4, 4]}},
        {"target": "run", "files": dict(run_template()), "args": run_args},
        {"target": "toml", "files": {"config.toml": b"latent-dim = 4\n"}, "args": {"path": "config.toml"}},
    ]
