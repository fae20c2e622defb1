"""The user's own data: a folder of PNG/JPEG images (optionally one sub-folder per label), or .npy/.npz arrays.

Both end as (x, y) pairs of tensors: x uint8 (or float32 in [0, 1]) shaped (N, C, H, W), y int64 labels or None.
Everything that could break training later is checked here and reported as one line naming the file and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from vaekit.errors import VaekitError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
Pair = tuple[Tensor, Tensor | None]
MIN_EXAMPLES = 4  # enough for a train and a test example after the splits


def load_image_folder(root: Path) -> dict[str, Pair]:
    """All images below `root`; when every image sits in a sub-folder, the sub-folder names are the labels."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < MIN_EXAMPLES:
        raise VaekitError(
            f"image folder {root} holds {len(files)} PNG/JPEG images: vaekit needs at least {MIN_EXAMPLES}"
        )
    images = [_open_image(p) for p in files]
    mode = "L" if all(img.mode in GREY_MODES for img in images) else "RGB"
    first = images[0]
    for path, img in zip(files, images, strict=True):
        if img.size != first.size:
            raise VaekitError(
                f"images differ in size: {files[0].name} is {first.size[0]}x{first.size[1]}, {path.name} is "
                f"{img.size[0]}x{img.size[1]}: resize them all to one size first"
            )
    pixels = np.stack([np.asarray(img.convert(mode)) for img in images])
    x = torch.from_numpy(pixels).unsqueeze(1) if mode == "L" else torch.from_numpy(pixels).permute(0, 3, 1, 2)
    return {"train": (x.contiguous(), _folder_labels(root, files))}


def load_image_like(path: Path, shape: tuple[int, int, int]) -> Tensor:
    """One image file as a (1, C, H, W) uint8 tensor matching a model's input shape, or a one-line error."""
    if not path.is_file():
        raise VaekitError(f"image {path} does not exist: give a test-image index or the path of a PNG/JPEG file")
    channels, height, width = shape
    img = _open_image(path)
    if img.size != (width, height):
        raise VaekitError(
            f"{path.name} is {img.size[0]}x{img.size[1]}, the model takes {width}x{height}: resize it first"
        )
    pixels = torch.from_numpy(np.array(img.convert("L" if channels == 1 else "RGB")))
    return (pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)).unsqueeze(0).contiguous()


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise VaekitError(f"cannot read image {path} ({error}): remove or replace the file") from None


def _folder_labels(root: Path, files: list[Path]) -> Tensor | None:
    parents = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    if any(parent is None for parent in parents):
        return None
    names = sorted(set(parents))  # type: ignore[type-var]
    return torch.tensor([names.index(parent) for parent in parents], dtype=torch.int64)


def load_arrays(path: Path) -> dict[str, Pair]:
    """A .npy of images, or an .npz with `x` (or `images`, `arr_0`), optional `y`/`labels`, `x_test`, `y_test`."""
    try:
        loaded = np.load(path, allow_pickle=False)  # never unpickle a file from elsewhere
    except (OSError, ValueError) as error:
        raise VaekitError(
            f"cannot read {path} as a NumPy array file ({error}): save it with numpy.save/savez"
        ) from None
    if path.suffix == ".npy":
        return {"train": (_images_from_array(loaded, path.name), None)}
    with loaded:
        keys = set(loaded.files)
        x_key = next((k for k in ("x", "images", "x_train", "arr_0") if k in keys), None)
        if x_key is None:
            raise VaekitError(f"{path.name} has arrays {sorted(keys)}: name the images 'x' (labels 'y')")
        y_key = next((k for k in ("y", "labels", "y_train") if k in keys), None)
        parts = {"train": _pair(loaded, x_key, y_key, path.name)}
        if "x_test" in keys:
            parts["test"] = _pair(loaded, "x_test", "y_test" if "y_test" in keys else None, path.name)
    return parts


def _pair(npz: np.lib.npyio.NpzFile, x_key: str, y_key: str | None, name: str) -> Pair:
    x = _images_from_array(npz[x_key], f"{name}[{x_key}]")
    if y_key is None:
        return x, None
    y = np.asarray(npz[y_key])
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise VaekitError(f"{name}[{y_key}] must be {len(x)} integer labels, got shape {y.shape} {y.dtype}")
    return x, torch.from_numpy(y.astype(np.int64))


def _images_from_array(array: np.ndarray, name: str) -> Tensor:
    """Accept (N, H, W), (N, C, H, W), (N, H, W, C) with C in {1, 3}, or (N, D) vectors (as (N, 1, 1, D))."""
    if array.ndim == 2:
        array = array[:, None, None, :]
    elif array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3) and array.shape[1] not in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise VaekitError(f"{name} has shape {array.shape}: expected (N, H, W), (N, C, H, W) or (N, H, W, C), C 1 or 3")
    if len(array) < MIN_EXAMPLES:
        raise VaekitError(f"{name} holds {len(array)} examples: vaekit needs at least {MIN_EXAMPLES}")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if array.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(array).astype(np.uint8) * 255)
    if not np.issubdtype(array.dtype, np.number):
        raise VaekitError(f"{name} has dtype {array.dtype}: use uint8 pixels or floats in [0, 1]")
    bad = int(np.size(array) - np.isfinite(array).sum())
    if bad:
        raise VaekitError(f"{name} contains {bad} NaN or infinite values: replace or drop them first")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise VaekitError(f"{name} has values in [{low:g}, {high:g}]: scale them to [0, 1] (or store uint8 pixels)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
