"""The one way vaekit opens an image: with the PNG and JPEG decoders only, the formats the README documents.

Left to itself, Pillow picks a decoder from a file's first bytes, whatever the file is called: an EPS file named
`a.png` goes to Ghostscript, TIFF or PSD bytes to parsers of formats no training set needs. Every image vaekit reads
(image folders, the image columns of tables, single files given to commands) is opened here, so bytes of any other
format never reach a decoder; they are one line naming their real format, found from their first bytes alone.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vaekit.errors import VaekitError

FORMATS = ("PNG", "JPEG")
OPENED_AS = {"PNG", "JPEG", "MPO"}  # MPO: a JPEG carrying extra frames, which Pillow's JPEG plugin opens as such
PREFIX_BYTES = 16  # what Pillow reads to recognise a format
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}  # 16-bit greyscale (Pillow reads 16-bit PNGs as I;16)
MAX_IMAGE_PIXELS = 4096 * 4096  # per image: a header that claims more is a decompression bomb, not a training image


def open_image(source: Path | bytes, name: str) -> Image.Image:
    """The image opened lazily (its header read, no pixel decoded), or a one-line error naming `name`.

    Use it as a context manager: `with open_image(path, str(path)) as img: ...`.
    """
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS)
    except UnidentifiedImageError:
        raise VaekitError(_refusal(source, name)) from None
    if img.format not in OPENED_AS:  # never expected: the decoders allowed give only these
        img.close()
        raise VaekitError(f"{name} opened as {img.format}, not PNG or JPEG: convert it to PNG")
    return img


def decoded_pixels(img: Image.Image, mode: str) -> np.ndarray:
    """The image's pixels as uint8 in `mode` ("L" or "RGB"); 16-bit greyscale is scaled (x >> 8), not clipped to
    white. Every reader of encoded images decodes through here, so a file and a table's bytes give the same pixels."""
    if img.mode in WIDE_MODES:
        wide = np.clip(np.asarray(img).astype(np.int64), 0, 65535)  # I;16 arrives as uint16, I as int32
        return np.asarray(Image.fromarray((wide >> 8).astype(np.uint8)).convert(mode))
    return np.asarray(img.convert(mode))


def _refusal(source: Path | bytes, name: str) -> str:
    """Why bytes that neither the PNG nor the JPEG decoder accepted are refused: their real format when known."""
    if isinstance(source, bytes):
        prefix = source[:PREFIX_BYTES]
    else:
        with source.open("rb") as stream:
            prefix = stream.read(PREFIX_BYTES)
    real = recognised_format(prefix)
    if real in OPENED_AS:
        return f"cannot decode {name}: a damaged {real} file: remove or replace it"
    if real is None:
        return f"cannot decode {name}: not a PNG or JPEG image (nor any format known): convert it to PNG or remove it"
    article = "an" if real[0] in "AEFHILMNORSX" else "a"  # as the letters are spoken: an EPS, a GIF
    return f"{name} is {article} {real} file, not PNG or JPEG: convert it to PNG"


def recognised_format(prefix: bytes) -> str | None:
    """The format Pillow would choose for these first bytes, asked of each plugin's signature check only: no
    plugin parses anything here."""
    Image.init()
    for format in Image.ID:
        accept = Image.OPEN[format][1]
        if accept is None:  # a plugin without a signature would claim any bytes
            continue
        try:
            claimed = accept(prefix)
        except (IndexError, TypeError, ValueError, struct.error):
            continue
        if claimed and not isinstance(claimed, str):  # a string is Pillow's "looks like it, but unsupported"
            return format
    return None
