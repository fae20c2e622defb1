"""Decoding a table's image column: encoded PNG/JPEG bytes or pixel arrays, checked (one size, the colour mode of
every image) before anything is decoded, then read a chunk of rows at a time, by `vaekit.data.userdata`'s rules."""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vaekit.data.image_formats import GREY_MODES, MAX_IMAGE_PIXELS, decoded_pixels, open_image
from vaekit.data.userdata import eight_bit_pixels, images_from_array, layout
from vaekit.errors import VaekitError


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


def pixels_of(parts: dict[str, Part]) -> dict[str, Pixels]:
    """Each part's images as `Pixels`; encoded images are grey only when every image of every part is."""
    encoded = {role: _blobs(part) for role, part in parts.items()}
    headers = {role: _headers(parts[role], blobs) for role, blobs in encoded.items() if blobs is not None}
    mode = "L" if all(set(modes) <= GREY_MODES for _, modes in headers.values()) else "RGB"
    return {
        role: _encoded_pixels(part, blobs, headers[role][0], mode) if blobs is not None else _array_pixels(part)
        for (role, part), blobs in zip(parts.items(), encoded.values(), strict=True)
    }


# --- encoded images ---------------------------------------------------------------------------------------------------


def _blobs(part: Part) -> Any:
    """The column's encoded bytes as one pyarrow binary array, or None when the column holds arrays."""
    pa = pyarrow_module()
    column, kind = _storage(part.images), _storage(part.images).type
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:  # the datasets Image feature
        data = pa.chunked_array([chunk.field("bytes") for chunk in column.chunks], kind.field("bytes").type)
        if data.null_count:
            row = first_null(data)
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
            raise VaekitError(f"{part.where(first_null(data))} holds no image (null): drop that row or fill it in")
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
            pixels = decoded_pixels(img, mode)
            if pixels.shape[:2] != (height, width):  # the bytes changed since their header was read
                raise VaekitError(f"{part.where(row)} decodes to {pixels.shape}, expected {height}x{width}: replace it")
            x[row - start] = pixels.reshape(height, width, channels).transpose(2, 0, 1)

        _each_image(part, blobs, range(start, stop), decode)
        return x

    return Pixels(len(blobs), (channels, height, width), np.dtype(np.uint8), read)


def _each_image(part: Part, blobs: Any, rows: range, use: Callable[[int, Image.Image], None]) -> None:
    """`use(row, image)` for each row, the image opened lazily; bytes that do not decode, or decode to a bomb, are one
    line naming the row."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for row in rows:
            try:
                with open_image(blobs[row].as_py(), part.where(row)) as img:
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
            except (OSError, SyntaxError, ValueError) as error:
                raise VaekitError(
                    f"cannot decode {part.where(row)} as an image ({error}): replace or drop that row"
                ) from None


# --- arrays -----------------------------------------------------------------------------------------------------------


def _array_pixels(part: Part) -> Pixels:
    """Nested or fixed-size lists as one (N, C, H, W) view: every row one shape, no nulls; pixels are copied out of
    the table only when read."""
    name = f"column {part.column!r} of {part.name}"
    values, dims = _unnested(part)
    pa = pyarrow_module()
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)):
        raise VaekitError(
            f"{name} holds {part.images.type} values: store each image as PNG/JPEG bytes or as an HxW or HxWxC list "
            "of uint8 or floats in [0, 1], or choose another column with --image-column"
        )
    if len(dims) not in (2, 3) or 0 in dims:
        raise VaekitError(f"{name} holds rows of shape {tuple(dims)}: store each image as HxW or HxWxC")
    if values.null_count:
        raise VaekitError(f"{name} has null pixels: fill them in or drop those rows")
    view = layout(_as_bytes(values.to_numpy(zero_copy_only=False), name).reshape(len(part.images), *dims), name)
    eight_bit = view.dtype in (np.uint8, np.bool_)

    def read(start: int, stop: int) -> np.ndarray:
        chunk = np.array(view[start:stop], order="C")  # a writable copy, out of the mapped file
        if eight_bit:
            return eight_bit_pixels(chunk)
        return images_from_array(chunk, name).numpy()  # floats: checked finite and in [0, 1]

    channels, height, width = view.shape[1:]
    return Pixels(len(view), (channels, height, width), np.dtype(np.uint8 if eight_bit else np.float32), read)


def _unnested(part: Part) -> tuple[Any, list[int]]:
    """The column's innermost values and the list lengths above them, each checked equal across rows."""
    pa = pyarrow_module()
    values, dims = _storage(part.images).combine_chunks(), list[int]()
    while any(test(values.type) for test in (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)):
        per_row = max(1, math.prod(dims))  # elements of this level in one image
        if values.null_count:
            raise VaekitError(f"{part.where(first_null(values) // per_row)} holds a null: fill it in or drop the row")
        lengths = pa.compute.list_value_length(values).to_numpy()
        if not len(lengths) or lengths[0] == 0:  # an empty list is no image, and leaves no level below
            raise VaekitError(
                f"column {part.column!r} of {part.name} holds empty rows: store each image as HxW or HxWxC pixels"
            )
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
    pa = pyarrow_module()
    if isinstance(column.type, pa.ExtensionType):
        return pa.chunked_array([chunk.storage for chunk in column.chunks], column.type.storage_type)
    return column


# --- shared with tables.py --------------------------------------------------------------------------------------------


def pyarrow_module() -> Any:
    try:
        importlib.import_module("pyarrow.compute")  # list lengths, reached as pyarrow.compute
        return importlib.import_module("pyarrow")
    except ImportError:
        raise VaekitError("reading Parquet needs pyarrow: pip install 'vaekit[hf]'") from None


def first_null(column: Any) -> int:
    return int(np.argmin(column.is_valid().to_numpy(zero_copy_only=False)))
