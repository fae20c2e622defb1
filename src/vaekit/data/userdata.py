"""The user's own data: a folder of PNG/JPEG images (optionally one sub-folder per label), or .npy/.npz arrays.

Two readers (see `vaekit.data.rows`): `IMAGE_FOLDER` and `ARRAYS`. Each opens its source as `Rows` of x uint8 (or
float32 in [0, 1]) shaped (N, C, H, W) and int64 labels or None, which training loads whole and `vaekit pack` reads a
chunk at a time. Everything that could break training later is checked here and reported as one line naming the file
and the fix.
"""

from __future__ import annotations

import math
import tokenize
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from vaekit.data.image_formats import GREY_MODES, MAX_IMAGE_PIXELS, decoded_pixels, open_image
from vaekit.data.rows import MIN_EXAMPLES, Memory, Pair, Rows, Source
from vaekit.errors import VaekitError
from vaekit.memory import require

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
Header = tuple[tuple[int, ...], bool, np.dtype[Any]]  # an array's shape, Fortran order and dtype
BLOCK_BYTES = 1 << 24  # read from an .npz member's stream at a time
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (the second: an empty one)


@dataclass(frozen=True)
class ImageFolder:
    """An image folder whose headers have been read: one size and mode for all, nothing decoded yet."""

    root: Path
    files: list[Path]
    mode: str  # "L" or "RGB"
    shape: tuple[int, int, int]  # (C, H, W)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images [start, stop) decoded straight into one (n, C, H, W) uint8 array: no second copy."""
        channels, height, width = self.shape
        x = np.empty((stop - start, channels, height, width), dtype=np.uint8)
        for i, path in enumerate(self.files[start:stop]):
            pixels = _decode(path, self.mode, (height, width) if self.mode == "L" else (height, width, 3))
            x[i] = pixels.reshape(height, width, channels).transpose(2, 0, 1)
        return x

    def labels(self) -> Tensor | None:
        return _folder_labels(self.root, self.files)


def scan_image_folder(root: Path) -> ImageFolder:
    """Every image's header (size and mode, nothing decoded), so that a folder of mixed sizes fails in seconds."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < MIN_EXAMPLES:
        raise VaekitError(
            f"image folder {root} holds {len(files)} PNG/JPEG images: vaekit needs at least {MIN_EXAMPLES}"
        )
    headers = [_image_header(p) for p in files]
    (width, height), _ = headers[0]
    for path, (size, _) in zip(files, headers, strict=True):
        if size != (width, height):
            raise VaekitError(
                f"images differ in size: {files[0].relative_to(root)} is {width}x{height}, {path.relative_to(root)} "
                f"is {size[0]}x{size[1]}: resize them all to one size first"
            )
    mode = "L" if all(m in GREY_MODES for _, m in headers) else "RGB"
    return ImageFolder(root, files, mode, (1 if mode == "L" else 3, height, width))


class ImageFolderReader:
    """Any folder (once packs and tables have declined it): all PNG/JPEG images below it; when every image sits in a
    sub-folder, the sub-folder names are the labels.

    Two passes: every header at `open`, so that a folder too big for the memory available fails before anything is
    decoded; then each image decoded straight into one preallocated array, or a chunk at a time for a pack.
    """

    name = "image folder"
    takes_columns = False
    refuses_packing = ""

    def recognizes(self, path: Path) -> bool:
        return path.is_dir()

    def open(self, path: Path, image_column: str | None = None, label_column: str | None = None) -> Source:
        folder = scan_image_folder(path)
        channels, height, width = folder.shape
        labels = folder.labels()
        rows = Rows(len(folder.files), folder.shape, folder.read, None if labels is None else labels.numpy())
        need = len(folder.files) * channels * height * width
        what = f"image folder {path} ({len(folder.files)} {folder.mode} images of {width}x{height})"
        return Source({"train": rows}, Memory(need, what, _PACK_IT.format(path)))


IMAGE_FOLDER = ImageFolderReader()


def load_image_folder(root: Path, max_bytes: int | None = None) -> dict[str, Pair]:
    """The image folder at `root` in memory, checked first against the memory available (or `max_bytes`)."""
    return IMAGE_FOLDER.open(root).load(max_bytes)


def load_image_like(path: Path, shape: tuple[int, int, int]) -> Tensor:
    """One image file as a (1, C, H, W) uint8 tensor matching a model's input shape, or a one-line error."""
    if not path.is_file():
        raise VaekitError(f"image {path} does not exist: give a test-image index or the path of a PNG/JPEG file")
    channels, height, width = shape
    size, _ = _image_header(path)
    if size != (width, height):
        raise VaekitError(f"{path.name} is {size[0]}x{size[1]}, the model takes {width}x{height}: resize it first")
    mode = "L" if channels == 1 else "RGB"
    pixels = torch.from_numpy(_decode(path, mode, (height, width) if channels == 1 else (height, width, 3)).copy())
    return (pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)).unsqueeze(0).contiguous()


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """One-line errors for unreadable images; Pillow's decompression-bomb warning becomes an error too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise VaekitError(
            f"image {path} is too large to decode safely ({error}): resize it or remove the file"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise VaekitError(f"cannot read image {path} ({error}): remove or replace the file") from None


def _checked(path: Path, img: Image.Image) -> Image.Image:
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise VaekitError(
            f"image {path} is {img.width}x{img.height}, over the {MAX_IMAGE_PIXELS:,}-pixel limit (a decompression "
            "bomb?): resize it or remove the file"
        )
    return img


def _image_header(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and mode from the file's header; opening is lazy, so no pixel is decoded."""
    with _reading(path), open_image(path, str(path)) as img:
        return _checked(path, img).size, img.mode


def _decode(path: Path, mode: str, shape: tuple[int, ...]) -> np.ndarray:
    """The pixels as uint8 in `mode` ("L" or "RGB"); 16-bit greyscale is scaled (x >> 8), not clipped to white."""
    with _reading(path), open_image(path, str(path)) as img:
        pixels = decoded_pixels(_checked(path, img), mode)
    if pixels.shape != shape:  # the file changed since its header was read
        raise VaekitError(f"image {path} decodes to shape {pixels.shape}, expected {shape}: remove or replace the file")
    return pixels


def _folder_labels(root: Path, files: list[Path]) -> Tensor | None:
    parents = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    if any(parent is None for parent in parents):
        return None
    names = sorted(set(parents))  # type: ignore[type-var]
    return torch.tensor([names.index(parent) for parent in parents], dtype=torch.int64)


class ArraysReader:
    """Any file (once packs and tables have declined it): a .npy of images, or an .npz with `x` (or `images`,
    `x_train`, `arr_0`), optional `y`/`labels`/`y_train`, and `x_test`, `y_test` for a test split of its own.

    Every array's header (dtype, shape) is read at `open`, before its data, so that object arrays, which only
    unpickling could read, and arrays that would not fit in memory as they will be held, fail at once without
    allocating anything: an .npz of zeros compresses a thousandfold. Rows are then read a chunk at a time whatever the
    size: a .npy through a memory map, the arrays of an .npz straight from the zip stream (labels, which are small, are
    read whole at `open`).
    """

    name = "arrays"
    takes_columns = False
    refuses_packing = ""

    def recognizes(self, path: Path) -> bool:
        return path.is_file()

    def open(self, path: Path, image_column: str | None = None, label_column: str | None = None) -> Source:
        kind = _array_kind(path)
        try:
            if kind == ".npy":
                with path.open("rb") as stream:
                    header = _check_header(stream, path.name, path.stat().st_size)
                rows = _mapped_rows(np.load(path, mmap_mode="r", allow_pickle=False), path.name)
                return Source({"train": rows}, _held(path, {path.name: header}))
            with np.load(path, allow_pickle=False) as npz:  # never unpickle a file from elsewhere
                roles = _npz_keys(set(npz.files), path.name)
                keys = [key for pair in roles.values() for key in pair if key is not None]
                headers = {f"{path.name}[{k}]": _member_header(npz, k, f"{path.name}[{k}]") for k in keys}
                parts = {role: _npz_rows(npz, path, x_key, y_key) for role, (x_key, y_key) in roles.items()}
                return Source(parts, _held(path, headers))
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as error:
            raise VaekitError(f"cannot read {path} as a {kind} file ({error}): save it again with numpy") from None


ARRAYS = ArraysReader()


def load_arrays(path: Path, max_bytes: int | None = None) -> dict[str, Pair]:
    """The arrays of a .npy/.npz in memory, checked first against the memory available (or `max_bytes`)."""
    return ARRAYS.open(path).load(max_bytes)


def _mapped_rows(array: np.ndarray, name: str) -> Rows:
    """A memory-mapped .npy's rows, each chunk copied out of the map and converted as it is read."""
    view = layout(array, name)

    def read(start: int, stop: int) -> np.ndarray:
        return _pixels(np.array(view[start:stop], order="C"), name, whole=False)  # its layout checked at open

    return _rows(view, read, None, name)


def _rows(view: np.ndarray, read: Callable[[int, int], np.ndarray], labels: Tensor | None, name: str) -> Rows:
    eight = view.dtype in (np.uint8, np.bool_)
    channels, height, width = view.shape[1:]
    dtype = np.dtype(np.uint8 if eight else np.float32)
    numbers = None if labels is None else labels.numpy()
    return Rows(len(view), (channels, height, width), read, numbers, dtype, name, f"{view.dtype} values")


def _array_kind(path: Path) -> str:
    """ ".npy" or ".npz", read from the file's first bytes, which must agree with its suffix."""
    with path.open("rb") as stream:
        head = stream.read(len(NPY_MAGIC))
    kind = ".npy" if head == NPY_MAGIC else ".npz" if head[:4] in ZIP_MAGICS else None
    suffix = path.suffix.lower()
    if kind is None and suffix in (".npy", ".npz"):
        raise VaekitError(f"{path} is not a {suffix} file (wrong header): save the array with numpy.save or savez")
    if kind is None:
        raise VaekitError(
            f"{path} is neither an image folder nor a .npy/.npz file: give a folder of PNG/JPEG images or an array "
            "saved with numpy.save or savez"
        )
    if suffix != kind:
        raise VaekitError(
            f"{path} holds {kind} content but is named {suffix or 'without a suffix'}: rename it to "
            f"{path.with_suffix(kind).name}"
        )
    return kind


_PACK_IT = "use fewer or smaller images, or pack them (`vaekit pack {} PACK`) and train from the pack"


def held_bytes(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """Memory an array takes once loaded as vaekit holds it: uint8 as read; booleans with their 0/255 copy; other
    integers with an int64 copy (labels); floats with their float32 copy and the finiteness mask."""
    extra = 0 if dtype == np.uint8 else 2 if dtype == np.bool_ else 8 if np.issubdtype(dtype, np.integer) else 5
    return math.prod(shape) * (dtype.itemsize + extra)


def _held(path: Path, headers: dict[str, Header]) -> Memory:
    """What the arrays of `path` (label -> header) take together, as they will be held."""
    described = ", ".join(f"{label} {shape} {dtype}" for label, (shape, _, dtype) in headers.items())
    need = sum(held_bytes(shape, dtype) for shape, _, dtype in headers.values())
    return Memory(need, f"loading {described}", _PACK_IT.format(path))


def _check_header(stream: IO[bytes], name: str, file_size: int | None) -> Header:
    """Refuse an array by its header alone: Python objects, or more bytes than the file holds. Returns the header
    (shape, Fortran order, dtype), the stream left at the first byte of data."""
    shape, fortran_order, dtype = _read_header(stream)
    if dtype.hasobject:
        raise VaekitError(
            f"{name} holds Python objects (dtype {dtype}), which vaekit never unpickles: store uint8 pixels or "
            "floats in [0, 1]"
        )
    size = math.prod(shape) * dtype.itemsize
    if file_size is not None and size > file_size - stream.tell():
        raise VaekitError(f"{name} is truncated (its header declares {shape} {dtype}): save it again")
    return shape, fortran_order, dtype


def _read_header(stream: IO[bytes]) -> Header:
    """The header numpy writes; numpy parses its text as a Python literal, so a damaged one can raise the parser's own
    errors, which become the ValueError numpy raises for the others."""
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        return read_header(stream)
    except (SyntaxError, tokenize.TokenError, RecursionError, MemoryError) as error:
        raise ValueError(f"a damaged header: {type(error).__name__}") from None


def _npz_keys(keys: set[str], name: str) -> dict[str, tuple[str, str | None]]:
    """Which arrays of an .npz hold each part's images and labels: role -> (images key, labels key or None)."""
    x_key = next((k for k in ("x", "images", "x_train", "arr_0") if k in keys), None)
    if x_key is None:
        raise VaekitError(f"{name} has arrays {sorted(keys)}: name the images 'x' (labels 'y')")
    roles: dict[str, tuple[str, str | None]] = {
        "train": (x_key, next((k for k in ("y", "labels", "y_train") if k in keys), None))
    }
    if "x_test" in keys:
        roles["test"] = ("x_test", "y_test" if "y_test" in keys else None)
    return roles


def _member(npz: np.lib.npyio.NpzFile, key: str, label: str) -> np.ndarray:
    """One array of an .npz, its header checked before its data is read."""
    _member_header(npz, key, label)
    return np.asarray(npz[key])


def _member_header(npz: np.lib.npyio.NpzFile, key: str, label: str) -> Header:
    archive = npz.zip
    if archive is None or f"{key}.npy" not in archive.namelist():
        raise VaekitError(f"{label} is not a NumPy array: write the archive with numpy.savez")
    with archive.open(f"{key}.npy") as stream:
        return _check_header(stream, label, None)


def _labels(npz: np.lib.npyio.NpzFile, y_key: str, count: int, name: str) -> Tensor:
    y = _member(npz, y_key, f"{name}[{y_key}]")
    if y.shape != (count,) or not np.issubdtype(y.dtype, np.integer):
        raise VaekitError(f"{name}[{y_key}] must be {count} integer labels, got shape {y.shape} {y.dtype}")
    return class_numbers(y, f"{name}[{y_key}]")


def class_numbers(labels: np.ndarray, name: str) -> Tensor:
    """Integer labels as int64 class numbers. A uint64 label past int64's range would wrap round to a negative
    number, and be reported as one, so it is refused here under its own value."""
    if labels.dtype.kind == "u" and labels.size and int(labels.max()) > np.iinfo(np.int64).max:
        raise VaekitError(
            f"{name} has the label {int(labels.max())}, too large for a class number: number the classes 0, 1, 2, …"
        )
    return torch.from_numpy(labels.astype(np.int64))


def images_from_array(array: np.ndarray, name: str, whole: bool = True) -> Tensor:
    """Accept (N, H, W), (N, C, H, W), (N, H, W, C) with C in {1, 3}, or (N, D) vectors (as (N, 1, 1, D)); `whole`:
    a dataset, which must hold enough examples to split (a batch to score needs only one)."""
    return torch.from_numpy(_pixels(array, name, whole))


def _pixels(array: np.ndarray, name: str, whole: bool = True) -> np.ndarray:
    """The rows as vaekit holds them: 8-bit pixels as uint8, numbers as float32 checked finite and in [0, 1]."""
    array = layout(array, name, whole)
    if array.dtype == np.uint8 or array.dtype == np.bool_:
        return eight_bit_pixels(array)
    if np.issubdtype(array.dtype, np.complexfloating):  # casting to float32 would silently drop the imaginary part
        raise VaekitError(f"{name} holds complex numbers ({array.dtype}): store real pixels, uint8 or floats in [0, 1]")
    if not np.issubdtype(array.dtype, np.number):
        raise VaekitError(f"{name} has dtype {array.dtype}: use uint8 pixels or floats in [0, 1]")
    bad = int(np.size(array) - np.isfinite(array).sum())
    if bad:
        raise VaekitError(f"{name} contains {bad} NaN or infinite values: replace or drop them first")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise VaekitError(f"{name} has values in [{low:g}, {high:g}]: scale them to [0, 1] (or store uint8 pixels)")
    return np.ascontiguousarray(array, dtype=np.float32)


def layout(array: np.ndarray, name: str, whole: bool = True) -> np.ndarray:
    """The array viewed as (N, C, H, W) (a view: nothing is copied or read), its shape (and, when it is the `whole`
    array rather than a chunk of its rows, its size) checked."""
    if array.ndim == 2:
        array = array[:, None, None, :]
    elif array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise VaekitError(f"{name} has shape {array.shape}: expected (N, H, W), (N, C, H, W) or (N, H, W, C), C 1 or 3")
    if whole and len(array) < MIN_EXAMPLES:
        raise VaekitError(f"{name} holds {len(array)} examples: vaekit needs at least {MIN_EXAMPLES}")
    return array


def eight_bit_pixels(array: np.ndarray) -> np.ndarray:
    """8-bit pixels (uint8, or booleans) as contiguous uint8: uint8 as stored, booleans as 0/255."""
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array).astype(np.uint8) * 255
    return np.ascontiguousarray(array)


def _npz_rows(npz: np.lib.npyio.NpzFile, path: Path, x_key: str, y_key: str | None) -> Rows:
    label = f"{path.name}[{x_key}]"
    shape, fortran_order, dtype = _member_header(npz, x_key, label)
    held: dict[str, Header] = {label: (shape, fortran_order, dtype)} if fortran_order else {}
    if y_key is not None:
        held[f"{path.name}[{y_key}]"] = _member_header(npz, y_key, f"{path.name}[{y_key}]")
    if held:  # labels are read whole now, and a Fortran-ordered array too
        memory = _held(path, held)
        require(memory.need, memory.what, memory.fix)
    labels = None if y_key is None else _labels(npz, y_key, shape[0] if shape else 0, path.name)
    if fortran_order:  # rare (numpy.save keeps C order unless the array was Fortran-ordered)
        return Rows.of(images_from_array(_member(npz, x_key, label), label), labels, label)
    # The layout is checked on a stand-in of the same shape and dtype that holds one element, not the data.
    view = layout(np.broadcast_to(np.zeros((), dtype), shape), label)
    return _rows(view, _member_reader(path, f"{x_key}.npy", shape, dtype, label), labels, label)


def _member_reader(
    path: Path, member: str, shape: tuple[int, ...], dtype: np.dtype[Any], name: str
) -> Callable[[int, int], np.ndarray]:
    """Rows of one .npz member, read in order from the zip stream (opened at row 0): never the whole array at once,
    and each chunk into one buffer of its own, which the tensor made from it keeps."""
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    state: dict[str, Any] = {}

    def read(start: int, stop: int) -> np.ndarray:
        size = (stop - start) * row_bytes
        data = np.empty(size, np.uint8)
        filled = 0
        try:
            if start == 0:
                archive = zipfile.ZipFile(path)
                state.update(archive=archive, stream=archive.open(member), next=0)
                _read_header(state["stream"])  # checked when the Rows were made; skipped here to reach the data
            if start != state.get("next"):
                raise ValueError(f"rows {start}..{stop} asked for out of order")
            while filled < size and (block := state["stream"].read(min(BLOCK_BYTES, size - filled))):
                data[filled : filled + len(block)] = np.frombuffer(block, np.uint8)
                filled += len(block)
            if stop == shape[0]:
                state["archive"].close()
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise VaekitError(f"cannot read {name} ({error}): save it again with numpy") from None
        if filled != size:
            raise VaekitError(f"{name} is truncated (its header declares {shape} {dtype}): save it again")
        state["next"] = stop
        chunk = data.view(dtype).reshape(stop - start, *shape[1:])
        return _pixels(chunk, name, whole=False)  # its layout checked at open

    return read
