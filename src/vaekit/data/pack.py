"""Packed datasets: any source vaekit reads, written once as a memory-mapped uint8 array that training reads a batch
at a time, so data bigger than memory trains in memory that does not grow with it.

A pack is a folder:

  images.u8      raw uint8 pixels, N×C×H×W in C order
  labels.i64     N little-endian int64 labels (only when every part of the source has labels)
  manifest.json  format, version, shape, dtype, splits (row ranges), byte size and SHA-256 of each file, source

It is written chunk by chunk into a hidden sibling folder that is renamed into place once complete, so packing runs in
bounded memory and a half-written pack is never taken for one. Loading checks the manifest against the files' sizes
(cheap); the SHA-256 of every file is checked only by `verify_pack` (`vaekit pack --verify PACK`), because hashing
gigabytes on every load would cost more than an epoch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import mmap
import os
import platform
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import Tensor

from vaekit.data.rows import MIN_EXAMPLES, Rows, Source
from vaekit.errors import VaekitError
from vaekit.memory import require
from vaekit.small_files import read_small

FORMAT, FORMAT_VERSION = "vaekit-pack", 1
IMAGES, LABELS, MANIFEST = "images.u8", "labels.i64", "manifest.json"
PARTS = ("train", "test")  # written in this order; a source without a test part gets one carved at load
CHUNK_BYTES = 1 << 24  # pixels read, hashed and written at a time
HASH_BLOCK = 1 << 22
MAX_MANIFEST_BYTES = 1 << 20
CHECKED_READ_BYTES = 1 << 26  # rows read into memory at once beyond this are checked against the memory available


@dataclass(frozen=True)
class Pack:
    """An opened pack: the images mapped from disk, the labels, and each part's row range."""

    path: Path
    images: Tensor  # (N, C, H, W) uint8, backed by the file: pages are read when touched and never count as anon memory
    labels: Tensor | None  # (N,) int64, in memory
    splits: dict[str, tuple[int, int]]
    manifest: dict[str, Any]

    def part(self, name: str, lazy: bool) -> tuple[Tensor, Tensor | None]:
        """One part's (x, y): the training part as `IndexedImages` over the mapped file, others read into memory."""
        start, stop = self.splits[name]
        if lazy:
            x: Tensor = IndexedImages(self.images, torch.arange(start, stop))
        else:
            x = _read(self.images, torch.arange(start, stop))
        return x, None if self.labels is None else self.labels[start:stop].clone()


class IndexedImages(Tensor):
    """Rows `rows` of a memory-mapped (N, C, H, W) array, read only when a batch asks for them.

    To everything downstream it is a tensor of the selection (its shape, dtype, device and len), so the trainer
    batches it like an in-memory split: `index_select` on dim 0 and indexing gather just the rows asked for (the pages
    of one batch), and `to(device)` moves where the batches go, not the data. Any other operation first reads the whole
    selection into memory: correct, only not lazy.
    """

    source: Tensor  # (N, C, H, W), backed by the mapped file
    rows: Tensor  # (n,) int64 rows of `source`
    METADATA: ClassVar[frozenset[str]] = frozenset(
        {"__len__", "shape", "dtype", "device", "ndim", "size", "dim", "numel", "nelement", "element_size", "is_cuda"}
        | {"layout", "requires_grad", "is_floating_point", "is_complex", "is_sparse", "is_quantized", "is_meta"}
    )

    @staticmethod
    def __new__(cls, source: Tensor, rows: Tensor, device: torch.device | str = "cpu") -> IndexedImages:
        # A one-element shell expanded with stride 0 gives the selection its metadata without holding its data.
        shell = torch.empty((), dtype=source.dtype, device=device).expand(len(rows), *source.shape[1:])
        images: IndexedImages = Tensor._make_subclass(cls, shell)
        images.source, images.rows = source, rows
        return images

    def subset(self, which: Tensor) -> IndexedImages:
        """The rows `which` of the selection, still unread."""
        return IndexedImages(self.source, self.rows[which.cpu()], self.device)

    def load(self) -> Tensor:
        """The whole selection in memory, as a plain tensor."""
        with torch._C.DisableTorchFunctionSubclass():
            return _read(self.source, self.rows).to(self.device)

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        """Metadata only: the default repr would read every row to print a few."""
        return f"IndexedImages({len(self.rows)} of {len(self.source)} mapped rows, {self.dtype}, on {self.device})"

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if args and isinstance(args[0], IndexedImages):
            with torch._C.DisableTorchFunctionSubclass():
                name = _function_name(func)
                if name in cls.METADATA:
                    return func(*args, **kwargs)
                result = args[0]._lazy(name, args[1:], kwargs)
            if result is not None:
                return result
        return func(*_loaded(args), **_loaded(kwargs))

    def _lazy(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor | None:
        """The calls answered without reading the whole selection; None for every other call."""
        if name == "index_select" and not kwargs and args[0] in (0, -self.ndim):
            return self._gather(args[1])
        if name == "__getitem__":
            return self._getitem(args[0])
        if name in ("to", "cpu"):
            return self._moved(name, args, kwargs)
        return None

    def _gather(self, which: Any) -> Tensor:
        picked = self.rows[which.cpu() if isinstance(which, Tensor) else which]
        # index_select is five times faster than advanced indexing for a batch of rows
        x = _read(self.source, picked) if picked.dim() == 1 else self.source[picked]
        return x if x.device == self.device else x.to(self.device)

    def _getitem(self, key: Any) -> Tensor | None:
        """`x[rows]` and `x[rows, ...]` for int, slice, list or tensor rows; None for anything fancier."""
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if first is None or first is Ellipsis or isinstance(first, bool):
            return None
        picked = self._gather(first)
        if not rest:
            return picked
        return picked[rest] if picked.dim() < self.dim() else picked[(slice(None), *rest)]  # a single row: no row dim

    def _moved(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> IndexedImages | None:
        """The same selection delivered to another device; None when the call also changes dtype or layout."""
        if name == "cpu":
            return IndexedImages(self.source, self.rows, "cpu")
        if kwargs.get("copy"):
            return None
        settings = {key: value for key, value in kwargs.items() if key != "copy"}
        device, dtype, _, memory_format = torch._C._nn._parse_to(*args, **settings)
        if dtype not in (None, self.dtype) or memory_format is not None:
            return None
        return IndexedImages(self.source, self.rows, device or self.device)


def _read(source: Tensor, rows: Tensor) -> Tensor:
    """Rows of a mapped pack copied into memory; a large read is first checked against the memory available, since a
    pack (a sparse file of 8000x8000 images, say) can hold far more than memory in a few rows."""
    size = len(rows) * math.prod(source.shape[1:]) * source.element_size()
    if size > CHECKED_READ_BYTES:
        c, h, w = source.shape[1:]
        require(size, f"reading {len(rows):,} images of {w}x{h}x{c} from a pack", "use a smaller --batch-size or "
                "--val-size, or pack fewer or smaller images")  # fmt: skip
    with torch._C.DisableTorchFunctionSubclass():
        return source.index_select(0, rows)


def _function_name(func: Any) -> str:
    """The name of a torch function, or of the property a getter reads (`Tensor.shape.__get__` -> "shape")."""
    name = getattr(func, "__name__", "")
    if name == "__get__":
        return str(getattr(getattr(func, "__self__", None), "__name__", ""))
    return str(name)


def _loaded(value: Any) -> Any:
    """`value` with every IndexedImages inside it (lists, tuples, dicts too) read into memory."""
    if isinstance(value, IndexedImages):
        return value.load()
    if isinstance(value, (list, tuple)):
        return type(value)(_loaded(item) for item in value)
    if isinstance(value, dict):
        return {key: _loaded(item) for key, item in value.items()}
    return value


def write_pack(out: Path, parts: dict[str, Rows], source: str) -> dict[str, Any]:
    """Write `parts` ("train", optionally "test") as a pack at `out`, which must not exist yet; returns the manifest.

    Memory stays bounded by one chunk of rows: each is hashed and appended as it is read.
    """
    if out.exists():
        raise VaekitError(f"{out} already exists: choose another folder for the pack, or delete it first")
    if "train" not in parts or set(parts) - set(PARTS):
        raise ValueError(f"parts {sorted(parts)}: expected train and optionally test")
    parts = {role: rows.eight_bit() for role, rows in parts.items()}
    shapes = {rows.shape for rows in parts.values()}
    if len(shapes) != 1:
        raise VaekitError(f"{source}: its parts differ in image shape {sorted(shapes)}: store every part at one shape")
    ordered = [(name, parts[name]) for name in PARTS if name in parts]
    need = sum(rows.count * (math.prod(rows.shape) + 8) for _, rows in ordered)
    out.parent.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(out.parent).free < need:
        raise VaekitError(
            f"the pack needs {need / 1e6:,.1f} MB and {out.parent} has {shutil.disk_usage(out.parent).free / 1e6:,.1f} "
            "MB free: free some space or write the pack elsewhere"
        )
    temp = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"  # hidden, and never named like a pack
    try:
        temp.mkdir()
        files = {IMAGES: _write_file(temp / IMAGES, _image_chunks(ordered))}
        if all(rows.labels is not None for _, rows in ordered):
            files[LABELS] = _write_file(temp / LABELS, _label_chunks(ordered))
        splits: dict[str, list[int]] = {}
        start = 0
        for name, rows in ordered:
            splits[name], start = [start, start + rows.count], start + rows.count
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "shape": [start, *shapes.pop()],
            "dtype": "uint8",
            "splits": splits,
            "files": files,
            "source": source,
        }
        _write_file(temp / MANIFEST, iter([(json.dumps(manifest, indent=2) + "\n").encode()]))
        os.rename(temp, out)  # the pack appears whole, or not at all
        _fsync_dir(out.parent)
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        raise VaekitError(f"cannot write the pack {out} ({error}): check the folder and the free disk space") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return manifest


def _image_chunks(parts: list[tuple[str, Rows]]) -> Iterator[bytes]:
    for name, rows in parts:
        step = max(1, CHUNK_BYTES // math.prod(rows.shape))
        for start in range(0, rows.count, step):
            stop = min(start + step, rows.count)
            block = np.ascontiguousarray(rows.read(start, stop))
            if block.dtype != np.uint8 or block.shape != (stop - start, *rows.shape):
                raise VaekitError(
                    f"the {name} rows {start}..{stop} read as {block.shape} {block.dtype}, expected "
                    f"{(stop - start, *rows.shape)} uint8: the source changed while it was packed; pack it again"
                )
            yield block.tobytes()


def _label_chunks(parts: list[tuple[str, Rows]]) -> Iterator[bytes]:
    for _, rows in parts:
        assert rows.labels is not None
        yield np.ascontiguousarray(rows.labels, dtype="<i8").tobytes()


def _write_file(path: Path, chunks: Iterator[bytes]) -> dict[str, Any]:
    """Write `chunks` to `path` and fsync it; returns its byte count and SHA-256, computed on the way."""
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as stream:
        for chunk in chunks:
            digest.update(chunk)
            stream.write(chunk)
            size += len(chunk)
        stream.flush()
        os.fsync(stream.fileno())
    return {"bytes": size, "sha256": digest.hexdigest()}


def _fsync_dir(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class PackReader:
    """A pack: its training part stays mapped (read a batch at a time), its test part is read into memory."""

    name = "pack"
    takes_columns = False
    refuses_packing = "{source} is a pack already: train from it with --dataset {source}"

    def recognizes(self, path: Path) -> bool:
        return is_pack(path)

    def open(self, path: Path, image_column: str | None = None, label_column: str | None = None) -> Source:
        pack = open_pack(path)
        return Source({role: Rows.of(*pack.part(role, lazy=role == "train"), str(path)) for role in pack.splits})


def is_pack(path: Path) -> bool:
    """Whether `path` is a pack folder; a folder that holds pack files but no manifest is refused, not guessed at."""
    if not path.is_dir():
        return False
    if (path / MANIFEST).is_file():
        return True
    if (path / IMAGES).exists():
        raise VaekitError(f"{path} holds {IMAGES} but no {MANIFEST}, so it is not a whole pack: {_REPACK.format(path)}")
    return False


_REPACK = "write it again with `vaekit pack SOURCE {}`"
# Linux's MAP_NORESERVE where Python does not name it (before 3.13): its value on x86-64 and Arm64.
_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000 if platform.machine() in ("x86_64", "aarch64") else 0)


def open_pack(path: Path) -> Pack:
    """Map a pack after checking its manifest against the files' sizes (not their SHA-256: see `verify_pack`)."""
    manifest = read_manifest(path)
    n, c, h, w = manifest["shape"]
    images_path = path / IMAGES
    with images_path.open("rb") as stream:
        # Copy-on-write: torch gets a writable buffer without a copy, and a stray write never reaches the file. Without
        # MAP_NORESERVE the kernel would reserve memory for a private copy of every page, and refuse a pack bigger than
        # memory: the very case packs are for.
        try:
            mapped = _map_copy_on_write(stream.fileno())
        except OSError as error:
            raise VaekitError(f"cannot map {images_path} ({error.strerror}): {_REPACK.format(path)}") from None
    if hasattr(mmap, "MADV_RANDOM"):  # batches read scattered rows: read-ahead would only evict useful pages
        mapped.madvise(mmap.MADV_RANDOM)
    images = torch.frombuffer(mapped, dtype=torch.uint8).view(n, c, h, w)
    labels = None
    if LABELS in manifest["files"]:
        labels = torch.from_numpy(np.fromfile(path / LABELS, dtype="<i8").astype(np.int64, copy=False))
    splits = {name: (int(start), int(stop)) for name, (start, stop) in manifest["splits"].items()}
    return Pack(path, images, labels, splits, manifest)


def _map_copy_on_write(fileno: int) -> mmap.mmap:
    if sys.platform == "linux":
        return mmap.mmap(fileno, 0, flags=mmap.MAP_PRIVATE | _NORESERVE)
    return mmap.mmap(fileno, 0, access=mmap.ACCESS_COPY)  # Windows has no flags; macOS reserves nothing


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest, every field checked, and each file's size checked against it: one line naming any mismatch."""
    fix = _REPACK.format(path)
    try:
        manifest = json.loads(read_small(path / MANIFEST, MAX_MANIFEST_BYTES))
    except (OSError, ValueError, RecursionError) as error:  # ValueError: not a small regular file, or not JSON
        raise VaekitError(f"pack {path}: cannot read {MANIFEST} ({error}): {fix}") from None
    problem = _manifest_problem(manifest)
    if problem is None:
        for name, entry in manifest["files"].items():
            size = (path / name).stat().st_size if (path / name).is_file() else None
            if size != entry["bytes"]:
                problem = f"{name} holds {size} bytes, its manifest says {entry['bytes']} (truncated or replaced?)"
                break
    if problem:
        raise VaekitError(f"pack {path}: {problem}: {fix}")
    for name, (start, stop) in manifest["splits"].items():  # a smaller split would leave the training loop no batch
        if stop - start < MIN_EXAMPLES:
            raise VaekitError(
                f"pack {path}: its {name} split holds {stop - start} images: vaekit needs at least {MIN_EXAMPLES} in "
                "each split: pack a source with more images"
            )
    return cast(dict[str, Any], manifest)


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a parsed manifest, or None; sizes and ranges are checked against each other."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return f"{MANIFEST} is not a vaekit pack manifest"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"{MANIFEST} has format_version {manifest.get('format_version')!r}, this vaekit reads {FORMAT_VERSION}"
    shape, files, splits = manifest.get("shape"), manifest.get("files"), manifest.get("splits")
    if not (isinstance(shape, list) and len(shape) == 4 and all(type(d) is int and d > 0 for d in shape)):
        return f"shape {shape!r} is not [N, C, H, W] of positive integers"
    if shape[1] not in (1, 3) or manifest.get("dtype") != "uint8":
        return f"images are {shape[1]}-channel {manifest.get('dtype')}: a pack holds 1- or 3-channel uint8 images"
    if not isinstance(files, dict) or set(files) - {IMAGES, LABELS} or IMAGES not in files:
        return f"files {sorted(files) if isinstance(files, dict) else files!r} are not {IMAGES} (and {LABELS})"
    expected = {IMAGES: math.prod(shape), LABELS: shape[0] * 8}
    for name, entry in files.items():
        described = isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
        if not described or entry.get("bytes") != expected[name]:
            return f"the {name} entry {entry!r} does not describe {expected[name]} bytes for shape {shape}"
    if not isinstance(splits, dict) or "train" not in splits or set(splits) - set(PARTS):
        return f"splits {splits!r} name no train part (or an unknown one)"
    edges = [0]
    for name in (part for part in PARTS if part in splits):
        rows = splits[name]
        if not (isinstance(rows, list) and len(rows) == 2 and rows[0] == edges[-1] and type(rows[1]) is int):
            return f"the {name} split {rows!r} is not a row range [{edges[-1]}, stop)"
        edges.append(rows[1])
    if edges[-1] != shape[0] or any(b <= a for a, b in itertools.pairwise(edges)):
        return f"splits {splits} do not cover the {shape[0]} rows with non-empty ranges"
    return None


def verify_pack(path: Path) -> dict[str, Any]:
    """Check every file of a pack against the SHA-256 in its manifest (reads them whole); returns the manifest."""
    manifest = read_manifest(path)
    for name, entry in manifest["files"].items():
        digest = hashlib.sha256()
        with (path / name).open("rb") as stream:
            while block := stream.read(HASH_BLOCK):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            raise VaekitError(
                f"pack {path}: {name} does not match the SHA-256 in its manifest (changed or damaged on disk): "
                f"{_REPACK.format(path)}"
            )
    return manifest
