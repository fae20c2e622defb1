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
This module is the reader `TABLE` (see `vaekit.data.rows`): it finds the splits and columns; `vaekit.data.table_pixels`
decodes the images.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from vaekit.data.rows import MIN_EXAMPLES, Memory, Pair, Rows, Source
from vaekit.data.table_pixels import Part, first_null, pixels_of, pyarrow_module
from vaekit.data.userdata import class_numbers
from vaekit.errors import VaekitError
from vaekit.small_files import read_small

IMAGE_NAMES = ("image", "img", "pixels")  # the image column when none is named: the first present, in any case
LABEL_NAMES = ("label", "labels", "y")
HF_MARKERS = ("dataset_dict.json", "state.json")  # what `save_to_disk` writes for a DatasetDict / a Dataset
SPLIT_FILE = re.compile(r"(train|test)[-_.]", re.IGNORECASE)  # the hub's `train-00000-of-00002.parquet`
MAX_STATE_BYTES = 1 << 20  # a state file of save_to_disk lists file names: a few hundred bytes
READ_ERRORS = (OSError, ValueError, KeyError, TypeError)  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError OSError


@dataclass(frozen=True)
class TableSplit:
    """One split of a table before its columns are read: `read(columns)` gives (pyarrow table, file starts)."""

    name: str  # how messages name it: the file or folder, and the split when there are several
    columns: list[str]
    read: Callable[[list[str]], tuple[Any, tuple[tuple[int, str], ...]]]


def is_table(path: Path) -> bool:
    """A .parquet file, a folder written by `save_to_disk`, or a folder holding .parquet files."""
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    if any((path / marker).is_file() for marker in HF_MARKERS):
        return True
    return path.is_dir() and any(f.is_file() for f in path.rglob("*.parquet"))


class TableReader:
    """A .parquet file, a folder written by `save_to_disk`, or a folder holding .parquet files. Opening it reads the
    chosen columns memory-mapped and every image's header, so its decoded size is known before any image is decoded."""

    name = "table"
    takes_columns = True
    refuses_packing = ""

    def recognizes(self, path: Path) -> bool:
        return is_table(path)

    def open(self, path: Path, image_column: str | None = None, label_column: str | None = None) -> Source:
        parts = table_parts(path, image_column, label_column)
        pixels = pixels_of(parts)
        rows = {}
        for role, p in pixels.items():
            labels = parts[role].labels
            numbers = None if labels is None else labels.numpy()
            rows[role] = Rows(p.count, p.shape, p.read, numbers, p.dtype, parts[role].name, "float pixels in [0, 1]")
        count = sum(p.count for p in pixels.values())
        (channels, height, width), dtype = next(iter(pixels.values())).shape, next(iter(pixels.values())).dtype
        memory = Memory(
            sum(p.count * math.prod(p.shape) * p.dtype.itemsize for p in pixels.values()),
            f"{path} ({count} images of {width}x{height}x{channels}, {dtype})",
            f"use fewer or smaller images, or pack them (`vaekit pack {path} PACK`) and train from the pack",
        )
        return Source(rows, memory)


TABLE = TableReader()


def load_table(
    path: Path, image_column: str | None = None, label_column: str | None = None, max_bytes: int | None = None
) -> dict[str, Pair]:
    """The table's parts ("train", and "test" when it has its own) in memory, checked first against the memory
    available (or `max_bytes`)."""
    return TABLE.open(path, image_column, label_column).load(max_bytes)


# --- splits and columns ------------------------------------------------------------------------------------------


def table_parts(path: Path, image_column: str | None = None, label_column: str | None = None) -> dict[str, Part]:
    """Each split's chosen columns, read (memory-mapped) and checked: enough rows, labels integers without nulls."""
    saved = path.is_dir() and any((path / marker).is_file() for marker in HF_MARKERS)
    parts = {}
    for role, split in (_saved_splits(path) if saved else _parquet_splits(path)).items():
        image = _choose(split, image_column, IMAGE_NAMES, "--image-column")
        label = _choose(split, label_column, LABEL_NAMES, "--label-column", optional=True)
        if label == image:
            raise VaekitError(
                f"--label-column and --image-column both name the column {image!r} of {split.name}: name the labels' "
                "own column, or leave --label-column out"
            )
        table, starts = split.read([image] if label is None else [image, label])
        if table.num_rows < MIN_EXAMPLES:
            raise VaekitError(f"{split.name} holds {table.num_rows} rows: vaekit needs at least {MIN_EXAMPLES} images")
        part = Part(split.name, image, table.column(image), None, starts)
        labels = None if label is None else _labels(table.column(label), label, part)
        parts[role] = Part(split.name, image, part.images, labels, starts)
    return parts


def _parquet_splits(path: Path) -> dict[str, TableSplit]:
    pq = _parquet()
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*.parquet") if f.is_file())  # a FIFO blocks
    named = {f: m.group(1).lower() for f in files if (m := SPLIT_FILE.match(f.name))}
    groups = {"train": files}
    if "train" in named.values():  # the hub's layout: the files of each split named after it
        roles = sorted(set(named.values()), reverse=True)  # train first
        groups = {role: [f for f in files if named.get(f) == role] for role in roles}

    def split(role: str, group: list[Path]) -> TableSplit:
        name = f"{path} ({role} files)" if len(groups) > 1 else str(path)

        def read(columns: list[str]) -> tuple[Any, tuple[tuple[int, str], ...]]:
            try:
                tables = [pq.read_table(f, columns=columns, memory_map=True) for f in group]
                table = pyarrow_module().concat_tables(tables)
            except READ_ERRORS as error:
                raise VaekitError(f"cannot read {name} ({error}): give files sharing the columns {columns}") from None
            firsts = np.cumsum([0] + [t.num_rows for t in tables])[:-1]
            return table, tuple((int(s), f.name) for s, f in zip(firsts, group, strict=True)) if path.is_dir() else ()

        try:
            columns = list(pq.read_schema(group[0]).names)
        except READ_ERRORS as error:
            raise VaekitError(f"cannot read {group[0]} as Parquet ({error}): write the file again") from None
        return TableSplit(name, columns, read)

    return {role: split(role, group) for role, group in groups.items()}


def _saved_splits(path: Path) -> dict[str, TableSplit]:
    """A `save_to_disk` folder: a Dataset is the train part; a DatasetDict gives its train and test splits."""
    datasets = _datasets()
    _check_state_files(path)
    try:
        saved = datasets.load_from_disk(str(path))
    except (*READ_ERRORS, AttributeError, IndexError) as error:  # `datasets` trusts what its JSON files hold
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

    def split(name: str, dataset: Any) -> TableSplit:
        def read(columns: list[str]) -> tuple[Any, tuple[tuple[int, str], ...]]:
            # A slice of the mapped Arrow files, zero-copy (and through any index mapping the dataset carries).
            return dataset.with_format("arrow")[: len(dataset)].select(columns), ()

        return TableSplit(name, list(dataset.column_names), read)

    return {role: split(name, dataset) for role, (name, dataset) in chosen.items()}


def _check_state_files(path: Path) -> None:
    """What `datasets` trusts blindly, checked first: the folder's state files (one per split of a DatasetDict) each
    list at least one data file, and each data file is a regular file inside the folder of its state file."""
    fix = "save the dataset again (save_to_disk)"
    folders = [path]
    if (path / "dataset_dict.json").is_file():
        splits = _small_json(path / "dataset_dict.json", fix).get("splits")
        if not (isinstance(splits, list) and splits and all(_plain_name(s) for s in splits)):
            raise VaekitError(f"{path / 'dataset_dict.json'} lists no splits by name ({splits!r}): {fix}")
        folders = [path / split for split in splits]
    for folder in folders:
        if (folder / "dataset_info.json").exists():  # `datasets` takes it for an object of its fields
            _small_json(folder / "dataset_info.json", fix)
        state = folder / "state.json"
        files = _small_json(state, fix).get("_data_files")
        if not (isinstance(files, list) and files):
            raise VaekitError(f"{state} lists no data files: {fix}")
        for entry in files:
            name = entry.get("filename") if isinstance(entry, dict) else entry
            if not (_plain_name(name) and (folder / name).is_file()):
                raise VaekitError(f"{state} names the data file {name!r}, which is not a file in {folder}: {fix}")


def _small_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON object of at most MAX_STATE_BYTES, or a one-line error naming the file."""
    try:
        value = json.loads(read_small(path, MAX_STATE_BYTES))
    except (OSError, ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise VaekitError(f"cannot read {path} ({error}): {fix}") from None
    if not isinstance(value, dict):
        raise VaekitError(f"{path} holds {type(value).__name__}, not a JSON object: {fix}")
    return value


def _plain_name(name: Any) -> TypeGuard[str]:
    """A file or folder name that stays in its folder: no separator, not . or .."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _choose(split: TableSplit, named: str | None, defaults: tuple[str, ...], flag: str, optional: bool = False) -> Any:
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
            f"{part.where(first_null(column), label)}: fill them in or drop those rows, or choose another "
            "column with --label-column"
        )
    if not pyarrow_module().types.is_integer(column.type):
        raise VaekitError(
            f"label column {label!r} of {part.name} holds {column.type} values, not integers: convert them (a "
            "datasets ClassLabel is stored as integers) or choose another column with --label-column"
        )
    return class_numbers(column.to_numpy(), f"label column {label!r} of {part.name}")


# --- optional packages (imported by name: they are untyped, and absent unless the hf extra is installed) ----------


def _parquet() -> Any:
    pyarrow_module()
    return importlib.import_module("pyarrow.parquet")


def _datasets() -> Any:
    pyarrow_module()
    try:
        return importlib.import_module("datasets")
    except ImportError:
        raise VaekitError("reading a datasets folder needs the datasets package: pip install 'vaekit[hf]'") from None
