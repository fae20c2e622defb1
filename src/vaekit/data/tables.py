"""Tables: images in a Parquet file (or a folder of them), or in a folder written by Hugging Face `datasets`
(`Dataset.save_to_disk` or `DatasetDict.save_to_disk`).

The image column holds encoded PNG/JPEG bytes (the `datasets` Image feature stores a struct {bytes, path}; plain
binary works too) or pixel arrays (nested or fixed-size lists, HxW or HxWxC, uint8 or floats in [0, 1]); the optional
label column holds integers (a ClassLabel is stored as integers). Both end as the (x, y) pairs of
`vaekit.data.userdata`, by its rules: one image size, grey only when every image is grey, one label per image.

Arrow is read through pyarrow, memory-mapped: Parquet with `memory_map=True` (only the columns used), a `datasets`
folder through `datasets.load_from_disk`, which maps its Arrow files. A DatasetDict's own train and test splits are the
train and test parts, and so are the files of a Parquet folder named like the hub's (`train-00000-of-00002.parquet`,
`test-…`); other splits (validation) are not read, since vaekit carves its validation split from train for every source.
"""

from __future__ import annotations

import importlib
import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vaekit.data.pack import Rows
from vaekit.data.userdata import (
    GREY_MODES,
    MAX_IMAGE_PIXELS,
    MAX_LOAD_BYTES,
    MIN_EXAMPLES,
    WIDE_MODES,
    Pair,
    _amount,
    _images_from_array,
    _layout,
)
from vaekit.errors import VaekitError

IMAGE_NAMES = ("image", "img", "pixels")  # the image column when none is named: the first present, in any case
LABEL_NAMES = ("label", "labels", "y")
HF_MARKERS = ("dataset_dict.json", "state.json")  # what `save_to_disk` writes for a DatasetDict / a Dataset
SPLIT_FILE = re.compile(r"(train|test)[-_.]", re.IGNORECASE)  # the hub's `train-00000-of-00002.parquet`
READ_ERRORS = (OSError, ValueError, KeyError, TypeError)  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError OSError


@dataclass(frozen=True)
class Split:
    """One split of a table before its columns are read: `read(columns)` gives (pyarrow table, file starts)."""

    name: str  # how messages name it: the file or folder, and the split when there are several
    columns: list[str]
    read: Callable[[list[str]], tuple[Any, tuple[tuple[int, str], ...]]]


@dataclass(frozen=True)
class Part:
    """One split's image column (not decoded yet) and labels."""

    name: str
    column: str
    images: Any  # pyarrow.ChunkedArray
    labels: torch.Tensor | None  # (N,) int64
    starts: tuple[tuple[int, str], ...] = ()  # (first row, file name) of each file of a Parquet folder

    def where(self, row: int, column: str | None = None) -> str:
        """A row as a person finds it: its number within its own file."""
        start, file = max(((s, f) for s, f in self.starts if s <= row), default=(0, self.name))
        return f"row {row - start} of column {(column or self.column)!r} in {file}"


@dataclass(frozen=True)
class Pixels:
    """A part's images, checked but not decoded: `read(start, stop)` gives (n, C, H, W) uint8 or float32."""

    count: int
    shape: tuple[int, int, int]  # (C, H, W)
    dtype: np.dtype[Any]
    read: Callable[[int, int], np.ndarray]


def is_table(path: Path) -> bool:
    """A .parquet file, a folder written by `save_to_disk`, or a folder holding .parquet files."""
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    if any((path / marker).is_file() for marker in HF_MARKERS):
        return True
    return path.is_dir() and next(path.rglob("*.parquet"), None) is not None


def load_table(
    path: Path, image_column: str | None = None, label_column: str | None = None, max_bytes: int = MAX_LOAD_BYTES
) -> dict[str, Pair]:
    """The table's parts ("train", and "test" when it has its own) as (x, y) tensors, the size checked before any
    image is decoded."""
    parts = table_parts(path, image_column, label_column)
    pixels = _pixels(parts)
    size = sum(p.count * math.prod(p.shape) * p.dtype.itemsize for p in pixels.values())
    if size > max_bytes:
        raise VaekitError(
            f"{path} holds {_amount(size)} of pixels, more than the {_amount(max_bytes)} vaekit loads into memory: "
            f"use fewer or smaller images, or pack them (`vaekit pack {path} PACK`) and train from the pack"
        )
    return {role: (torch.from_numpy(p.read(0, p.count)), parts[role].labels) for role, p in pixels.items()}


def table_rows(path: Path, image_column: str | None = None, label_column: str | None = None) -> dict[str, Rows]:
    """The table's parts as `Rows` for a pack, decoded a chunk at a time."""
    parts = table_parts(path, image_column, label_column)
    rows = {}
    for role, p in _pixels(parts).items():
        if p.dtype != np.uint8:
            raise VaekitError(
                f"{parts[role].name} holds float pixels in [0, 1] and a pack stores 8-bit pixels: store the images "
                "as uint8 (or PNG) and pack that, or train from the table itself"
            )
        labels = parts[role].labels
        rows[role] = Rows(p.count, p.shape, p.read, None if labels is None else labels.numpy())
    return rows


# --- splits and columns ------------------------------------------------------------------------------------------


def table_parts(path: Path, image_column: str | None = None, label_column: str | None = None) -> dict[str, Part]:
    """Each split's chosen columns, read (memory-mapped) and checked: enough rows, labels integers without nulls."""
    saved = path.is_dir() and any((path / marker).is_file() for marker in HF_MARKERS)
    parts = {}
    for role, split in (_saved_splits(path) if saved else _parquet_splits(path)).items():
        image = _choose(split, image_column, IMAGE_NAMES, "--image-column")
        label = _choose(split, label_column, LABEL_NAMES, "--label-column", optional=True)
        table, starts = split.read([image] if label is None else [image, label])
        if table.num_rows < MIN_EXAMPLES:
            raise VaekitError(f"{split.name} holds {table.num_rows} rows: vaekit needs at least {MIN_EXAMPLES} images")
        part = Part(split.name, image, table.column(image), None, starts)
        labels = None if label is None else _labels(table.column(label), label, part)
        parts[role] = Part(split.name, image, part.images, labels, starts)
    return parts


def _parquet_splits(path: Path) -> dict[str, Split]:
    pq = _parquet()
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    named = {f: m.group(1).lower() for f in files if (m := SPLIT_FILE.match(f.name))}
    groups = {"train": files}
    if "train" in named.values():  # the hub's layout: the files of each split named after it
        roles = sorted(set(named.values()), reverse=True)  # train first
        groups = {role: [f for f in files if named.get(f) == role] for role in roles}

    def split(role: str, group: list[Path]) -> Split:
        name = f"{path} ({role} files)" if len(groups) > 1 else str(path)

        def read(columns: list[str]) -> tuple[Any, tuple[tuple[int, str], ...]]:
            try:
                tables = [pq.read_table(f, columns=columns, memory_map=True) for f in group]
                table = _pyarrow().concat_tables(tables)
            except READ_ERRORS as error:
                raise VaekitError(f"cannot read {name} ({error}): give files sharing the columns {columns}") from None
            firsts = np.cumsum([0] + [t.num_rows for t in tables])[:-1]
            return table, tuple((int(s), f.name) for s, f in zip(firsts, group, strict=True)) if path.is_dir() else ()

        try:
            columns = list(pq.read_schema(group[0]).names)
        except READ_ERRORS as error:
            raise VaekitError(f"cannot read {group[0]} as Parquet ({error}): write the file again") from None
        return Split(name, columns, read)

    return {role: split(role, group) for role, group in groups.items()}


def _saved_splits(path: Path) -> dict[str, Split]:
    """A `save_to_disk` folder: a Dataset is the train part; a DatasetDict gives its train and test splits."""
    datasets = _datasets()
    try:
        saved = datasets.load_from_disk(str(path))
    except READ_ERRORS as error:
        raise VaekitError(f"cannot read {path} as a datasets folder ({error}): save it again (save_to_disk)") from None
    if isinstance(saved, datasets.DatasetDict):
        if "train" not in saved:
            raise VaekitError(
                f"{path} holds the splits {', '.join(saved)} and no 'train': save the training rows as the split "
                "'train' (and the test rows as 'test')"
            )
        chosen = {role: (f"{path} (split {role})", saved[role]) for role in ("train", "test") if role in saved}
    else:
        chosen = {"train": (str(path), saved)}

    def split(name: str, dataset: Any) -> Split:
        def read(columns: list[str]) -> tuple[Any, tuple[tuple[int, str], ...]]:
            # A slice of the mapped Arrow files, zero-copy (and through any index mapping the dataset carries).
            return dataset.with_format("arrow")[: len(dataset)].select(columns), ()

        return Split(name, list(dataset.column_names), read)

    return {role: split(name, dataset) for role, (name, dataset) in chosen.items()}


def _choose(split: Split, named: str | None, defaults: tuple[str, ...], flag: str, optional: bool = False) -> Any:
    """The column named by the flag, else the first of `defaults` present (in any case), else an error or None."""
    columns = ", ".join(split.columns) or "none"
    if named is not None:
        if named not in split.columns:
            raise VaekitError(f"{split.name} has no column {named!r} (its columns: {columns}): fix {flag}")
        return named
    lower = {c.lower(): c for c in reversed(split.columns)}
    found = next((lower[d] for d in defaults if d in lower), None)
    if found is None and not optional:
        raise VaekitError(
            f"{split.name} has no column named {' or '.join(defaults)} (its columns: {columns}): name the image column "
            f"with {flag} NAME"
        )
    return found


def _labels(column: Any, label: str, part: Part) -> torch.Tensor:
    if column.null_count:
        raise VaekitError(
            f"label column {label!r} of {part.name} has {column.null_count} empty (null) values, the first at "
            f"{part.where(_first_null(column), label)}: fill them in or drop those rows, or choose another "
            "column with --label-column"
        )
    if not _pyarrow().types.is_integer(column.type):
        raise VaekitError(
            f"label column {label!r} of {part.name} holds {column.type} values, not integers: convert them (a "
            "datasets ClassLabel is stored as integers) or choose another column with --label-column"
        )
    return torch.from_numpy(column.to_numpy().astype(np.int64))


def _first_null(column: Any) -> int:
    return int(np.argmin(column.is_valid().to_numpy(zero_copy_only=False)))


# --- encoded images ----------------------------------------------------------------------------------------------


def _pixels(parts: dict[str, Part]) -> dict[str, Pixels]:
    """Each part's images as `Pixels`; encoded images are grey only when every image of every part is."""
    encoded = {role: _blobs(part) for role, part in parts.items()}
    headers = {role: _headers(parts[role], blobs) for role, blobs in encoded.items() if blobs is not None}
    mode = "L" if all(set(modes) <= GREY_MODES for _, modes in headers.values()) else "RGB"
    return {
        role: _encoded_pixels(part, blobs, headers[role][0], mode) if blobs is not None else _array_pixels(part)
        for (role, part), blobs in zip(parts.items(), encoded.values(), strict=True)
    }


def _blobs(part: Part) -> Any:
    """The column's encoded bytes as one pyarrow binary array, or None when the column holds arrays."""
    pa = _pyarrow()
    column, kind = _storage(part.images), _storage(part.images).type
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:  # the datasets Image feature
        data = pa.chunked_array([chunk.field("bytes") for chunk in column.chunks], kind.field("bytes").type)
        if data.null_count:
            row = _first_null(data)
            path = column[row]["path"] if kind.get_field_index("path") >= 0 and column[row].is_valid else None
            if path is not None and path.is_valid:
                raise VaekitError(
                    f"{part.where(row)} names the file {path.as_py()} instead of holding its bytes: save the dataset "
                    "with the images embedded (datasets embeds them when given images or bytes rather than paths)"
                )
            raise VaekitError(f"{part.where(row)} holds no image (null): drop that row or fill it in")
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        data = column
        if data.null_count:
            raise VaekitError(f"{part.where(_first_null(data))} holds no image (null): drop that row or fill it in")
    else:
        return None
    return data.cast(pa.large_binary()).combine_chunks()  # 64-bit offsets: one array may exceed 2 GB


def _headers(part: Part, blobs: Any) -> tuple[tuple[int, int], list[str]]:
    """Every image's (width, height) and mode from its header (nothing decoded): one size for all, or an error."""
    sizes: list[tuple[int, int]] = []
    modes: list[str] = []

    def note(row: int, img: Image.Image) -> None:
        if img.size != (sizes or [img.size])[0]:
            (w0, h0), (w, h) = sizes[0], img.size
            raise VaekitError(
                f"images differ in size: {part.where(row)} is {w}x{h}, the first image {w0}x{h0}: resize them all "
                "to one size first"
            )
        sizes.append(img.size)
        modes.append(img.mode)

    _each_image(part, blobs, range(len(blobs)), note)
    return sizes[0], modes


def _encoded_pixels(part: Part, blobs: Any, size: tuple[int, int], mode: str) -> Pixels:
    (width, height), channels = size, 1 if mode == "L" else 3

    def read(start: int, stop: int) -> np.ndarray:
        x = np.empty((stop - start, channels, height, width), dtype=np.uint8)

        def decode(row: int, img: Image.Image) -> None:
            pixels = _eight_bit(img, mode)
            if pixels.shape[:2] != (height, width):  # the bytes changed since their header was read
                raise VaekitError(f"{part.where(row)} decodes to {pixels.shape}, expected {height}x{width}: replace it")
            x[row - start] = pixels.reshape(height, width, channels).transpose(2, 0, 1)

        _each_image(part, blobs, range(start, stop), decode)
        return x

    return Pixels(len(blobs), (channels, height, width), np.dtype(np.uint8), read)


def _eight_bit(img: Image.Image, mode: str) -> np.ndarray:
    """Decoded as image files are (see `userdata`): 16-bit greyscale scaled (x >> 8), not clipped to white."""
    if img.mode in WIDE_MODES:
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return np.asarray(Image.fromarray((wide >> 8).astype(np.uint8)).convert(mode))
    return np.asarray(img.convert(mode))


def _each_image(part: Part, blobs: Any, rows: range, use: Callable[[int, Image.Image], None]) -> None:
    """`use(row, image)` for each row, the image opened lazily; bytes that do not decode, or decode to a bomb, are one
    line naming the row."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for row in rows:
            try:
                with Image.open(io.BytesIO(blobs[row].as_py())) as img:
                    if img.width * img.height > MAX_IMAGE_PIXELS:
                        raise VaekitError(
                            f"{part.where(row)} is {img.width}x{img.height}, over the {MAX_IMAGE_PIXELS:,}-pixel "
                            "limit (a decompression bomb?): resize or drop it"
                        )
                    use(row, img)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise VaekitError(
                    f"{part.where(row)} is too large to decode safely ({error}): resize or drop it"
                ) from None
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                why = "not an image format Pillow reads" if isinstance(error, UnidentifiedImageError) else error
                raise VaekitError(
                    f"cannot decode {part.where(row)} as an image ({why}): replace or drop that row"
                ) from None


# --- arrays ------------------------------------------------------------------------------------------------------


def _array_pixels(part: Part) -> Pixels:
    """Nested or fixed-size lists as one (N, C, H, W) view: every row one shape, no nulls; pixels are copied out of
    the table only when read."""
    name = f"column {part.column!r} of {part.name}"
    values, dims = _unnested(part)
    pa = _pyarrow()
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)):
        raise VaekitError(
            f"{name} holds {part.images.type} values: store each image as PNG/JPEG bytes or as an HxW or HxWxC list "
            "of uint8 or floats in [0, 1], or choose another column with --image-column"
        )
    if len(dims) not in (2, 3) or 0 in dims:
        raise VaekitError(f"{name} holds rows of shape {tuple(dims)}: store each image as HxW or HxWxC")
    if values.null_count:
        raise VaekitError(f"{name} has null pixels: fill them in or drop those rows")
    view = _layout(_as_bytes(values.to_numpy(zero_copy_only=False), name).reshape(len(part.images), *dims), name)
    eight_bit = view.dtype in (np.uint8, np.bool_)

    def read(start: int, stop: int) -> np.ndarray:
        chunk = view[start:stop]
        if chunk.dtype == np.bool_:
            return chunk.astype(np.uint8) * 255
        if eight_bit:
            return np.array(chunk, dtype=np.uint8, order="C")  # a writable copy, out of the mapped file
        return _images_from_array(np.array(chunk), name).numpy()  # floats: checked finite and in [0, 1]

    channels, height, width = view.shape[1:]
    return Pixels(len(view), (channels, height, width), np.dtype(np.uint8 if eight_bit else np.float32), read)


def _unnested(part: Part) -> tuple[Any, list[int]]:
    """The column's innermost values and the list lengths above them, each checked equal across rows."""
    pa = _pyarrow()
    values, dims = _storage(part.images).combine_chunks(), list[int]()
    while any(test(values.type) for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)):
        per_row = max(1, math.prod(dims))  # elements of this level in one image
        if values.null_count:
            raise VaekitError(f"{part.where(_first_null(values) // per_row)} holds a null: fill it in or drop the row")
        lengths = pa.compute.list_value_length(values).to_numpy()
        if (lengths != lengths[0]).any():
            row = int(np.argmax(lengths != lengths[0])) // per_row
            raise VaekitError(
                f"images differ in size: {part.where(row)} differs in shape from the first image: store every image "
                "at one size"
            )
        dims.append(int(lengths[0]))
        values = values.flatten()
    return values, dims


def _as_bytes(array: np.ndarray, name: str) -> np.ndarray:
    """Integers other than uint8 (Python ints arrive as int64) are pixels 0..255; anything outside is refused."""
    if array.dtype == np.uint8 or not np.issubdtype(array.dtype, np.integer):
        return array
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise VaekitError(f"{name} has integer pixels in [{low}, {high}]: store 0..255 (uint8) or floats in [0, 1]")
    return array.astype(np.uint8)


def _storage(column: Any) -> Any:
    """The column as plain Arrow: an extension type (the datasets Array2D/Array3D features) by its storage."""
    pa = _pyarrow()
    if isinstance(column.type, pa.ExtensionType):
        return pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
    return column


# --- optional packages (imported by name: they are untyped, and absent unless the hf extra is installed) ----------


def _pyarrow() -> Any:
    try:
        importlib.import_module("pyarrow.compute")  # list lengths, reached as pyarrow.compute
        return importlib.import_module("pyarrow")
    except ImportError:
        raise VaekitError("reading Parquet needs pyarrow: pip install 'vaekit[hf]'") from None


def _parquet() -> Any:
    _pyarrow()
    return importlib.import_module("pyarrow.parquet")


def _datasets() -> Any:
    _pyarrow()
    try:
        return importlib.import_module("datasets")
    except ImportError:
        raise VaekitError("reading a datasets folder needs the datasets package: pip install 'vaekit[hf]'") from None
