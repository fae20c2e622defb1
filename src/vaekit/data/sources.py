"""Datasets as tensors: named sets (Fashion-MNIST, MNIST, sklearn's digits), the user's own images or arrays, and packs.

Every source ends as a `Dataset` of uint8 (or float32 in [0, 1]) tensors shaped (N, C, H, W), split into train,
validation and test. Batching and devices are the trainer's business; this module returns tensors, not loaders.
Named sets are recognized by name; any other source by the first reader of `vaekit.data.readers` that recognizes its
path, and loading and packing ask that one registry. Splitting off the validation and test splits and binarizing
happen here, once, for every source. A pack (see `vaekit.data.pack`) stays on disk: its training split is an
`IndexedImages` over the mapped file, which the splits below narrow by index without reading it, and its validation and
test splits are read into memory.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.config import MAX_CLASSES, DataConfig
from vaekit.data.download import fetch, verify
from vaekit.data.pack import IndexedImages, write_pack
from vaekit.data.readers import reader_for
from vaekit.data.rows import Rows, Source
from vaekit.errors import VaekitError

TEST_SPLIT_SEED = 1234  # held fixed so that every run of a dataset is tested on the same images
BINARIZE_SEED = 4321  # the fixed draw used for binarized validation/test sets
CACHE_ROOT = "~/.cache/vaekit"  # downloads, and the feature classifiers of `vaekit evaluate`
MAX_IDX_BYTES = 1 << 30  # 20x Fashion-MNIST's training images: an IDX header declaring more is corrupt


@dataclass
class Split:
    x: Tensor  # (N, C, H, W) uint8, or float32 in [0, 1]
    y: Tensor | None  # (N,) int64 labels, when the source has them

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return c, h, w


@dataclass(frozen=True)
class IdxSource:
    """A dataset published as four IDX gz files, with checksums of their decompressed content."""

    files: dict[str, tuple[str, str]]  # role (train_x, train_y, test_x, test_y) -> (file name, sha256)
    mirrors: tuple[str, ...]
    system_dirs: tuple[str, ...] = ()


MNIST = IdxSource(
    files={
        "train_x": ("train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train_y": ("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "test_x": ("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "test_y": ("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
)
FASHION_MNIST = IdxSource(
    files={
        "train_x": ("train-images-idx3-ubyte.gz", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train_y": ("train-labels-idx1-ubyte.gz", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "test_x": ("t10k-images-idx3-ubyte.gz", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "test_y": ("t10k-labels-idx1-ubyte.gz", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
)
IDX_SOURCES: dict[str, IdxSource] = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}
NAMED = (*IDX_SOURCES, "digits")
CLASS_NAMES: dict[str, list[str]] = {
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def read_idx(path: Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Parse an IDX file (gz or raw): magic 0x0000TTNN (type, number of dims), big-endian dims, then the data.

    The file is streamed: the size its header declares is checked against `max_bytes` before any data is read, and
    memory grows only with the bytes really there, so a corrupt header or a gzip bomb cannot exhaust memory.
    """
    fix = "delete it and run again to download a fresh copy"
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as stream:
            head = stream.read(4)
            if len(head) < 4 or head[0:2] != b"\x00\x00" or head[2] != 0x08:
                raise VaekitError(f"{path} is not an unsigned-byte IDX file: check the file or {fix}")
            raw_dims = stream.read(4 * head[3])
            dims = [int.from_bytes(raw_dims[i : i + 4], "big") for i in range(0, len(raw_dims), 4)]
            size = math.prod(dims)
            if size > max_bytes:
                raise VaekitError(f"{path} declares {dims} = {size:,} bytes, over the {max_bytes:,} cap: {fix}")
            data = bytearray()
            while len(data) < size and (block := stream.read(min(1 << 20, size - len(data)))):
                data += block
            if len(raw_dims) < 4 * head[3] or len(data) < size:
                raise VaekitError(f"{path} is truncated: {fix}")
            if stream.read(1):
                raise VaekitError(f"{path} holds more bytes than its header declares: {fix}")
    except (OSError, EOFError, zlib.error) as error:  # not gzip, or a damaged gzip stream
        raise VaekitError(f"cannot read {path} ({error}): {fix}") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def search_dirs(name: str, data_dir: str | None, source: IdxSource) -> list[Path]:
    """Where to look: the folder the user named (--data-dir, else $VAEKIT_DATA) and nowhere else; otherwise the cache,
    then system dirs. Each root as given and with /<name>; the first entry is where a download goes.

    A named folder is never silently replaced by a copy found elsewhere: one that does not exist is an error.
    """
    named = data_dir or os.environ.get("VAEKIT_DATA")
    if named:
        root = Path(named).expanduser()
        if not root.is_dir():
            flag = "--data-dir" if data_dir else "$VAEKIT_DATA"
            raise VaekitError(
                f"{flag} {named} does not exist or is not a folder: create it (the {name} files are downloaded "
                "into it) or correct the path"
            )
        return [root / name, root]
    cache = Path(CACHE_ROOT).expanduser()
    return [cache / name, cache, *(Path(d) for d in source.system_dirs)]


def locate_idx(name: str, source: IdxSource, data_dir: str | None) -> dict[str, Path]:
    """Find the four files (or download them into the first writable root) and verify their checksums."""
    folders = search_dirs(name, data_dir, source)
    for folder in folders:
        paths = {role: folder / file for role, (file, _) in source.files.items()}
        if all(p.is_file() for p in paths.values()):
            break
    else:
        folder = folders[0]
        mirrors = tuple(os.environ["VAEKIT_MIRRORS"].split(",")) if os.environ.get("VAEKIT_MIRRORS") else source.mirrors
        paths = {role: fetch(file, sha, mirrors, folder) for role, (file, sha) in source.files.items()}
    for role, path in paths.items():
        verify(path, source.files[role][1])
    return paths


def load_idx_dataset(name: str, config: DataConfig) -> tuple[Split, Split]:
    paths = locate_idx(name, IDX_SOURCES[name], config.data_dir)
    arrays = {role: read_idx(path) for role, path in paths.items()}
    train = Split(
        torch.from_numpy(arrays["train_x"]).unsqueeze(1), torch.from_numpy(arrays["train_y"].astype(np.int64))
    )
    test = Split(torch.from_numpy(arrays["test_x"]).unsqueeze(1), torch.from_numpy(arrays["test_y"].astype(np.int64)))
    return train, test


def load_digits() -> Split:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), rescaled to uint8; needs no files.

    Read from the table scikit-learn ships, found without importing scikit-learn: the import costs each process about
    3 s, and every process started on digits (a command, each torchrun rank) would pay it to read a 1,797-row table.
    """
    spec = importlib.util.find_spec("sklearn")
    table_path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if table_path is not None and table_path.is_file():
        table = np.loadtxt(table_path, delimiter=",")
        pixels, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:  # a scikit-learn that keeps its data elsewhere: its own loader knows where
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        pixels, labels = bunch.images, bunch.target
    images = np.rint(pixels * (255 / 16)).astype(np.uint8)
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def split_off(split: Split, count: int, seed: int) -> tuple[Split, Split]:
    """Move `count` examples, chosen by a seeded permutation, out of `split`: returns (rest, taken).

    Of a packed split, the rest stays an unread `IndexedImages` (it is the big part) and the taken part is read.
    """
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    rest, taken = order[count:].sort().values, order[:count].sort().values

    def pick(idx: Tensor, lazy: bool) -> Split:
        x = split.x.subset(idx) if lazy and isinstance(split.x, IndexedImages) else split.x[idx]
        return Split(x, None if split.y is None else split.y[idx])

    return pick(rest, lazy=True), pick(taken, lazy=False)


def binarized(split: Split, seed: int = BINARIZE_SEED) -> Split:
    """A fixed-seed Bernoulli draw of every pixel, stored as uint8 0/255 like the images it replaces."""
    x = torch.bernoulli(to_float(split.x), generator=torch.Generator().manual_seed(seed))
    return Split((x * 255).to(torch.uint8), split.y)


def to_float(x: Tensor) -> Tensor:
    """Images as the model sees them: float32 in [0, 1]."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def check_agree(name: str, train: Split, test: Split) -> None:
    """Every split one image shape (C, H, W) and one label per image, checked at load rather than after training."""
    for role, split in (("training", train), ("test", test)):
        if split.y is not None and len(split.y) != len(split.x):
            raise VaekitError(
                f"dataset {name}: {len(split.x)} {role} images but {len(split.y)} labels: give one label per image"
            )
    if train.x.shape[1:] != test.x.shape[1:]:
        raise VaekitError(
            f"dataset {name}: the test images are {tuple(test.x.shape[1:])} (C, H, W), the training images "
            f"{tuple(train.x.shape[1:])}: store every split at one image shape"
        )


def load_dataset(config: DataConfig) -> Dataset:
    """The dataset named (or pointed to) by `config.dataset`, split into train / validation / test."""
    name = config.dataset
    path = source_path(name, "--dataset")
    reader = None if name in NAMED else reader_for(path)
    if (config.image_column or config.label_column) and not (reader and reader.takes_columns):
        raise VaekitError(
            f"--image-column and --label-column choose columns of a table (Parquet or a datasets folder) and "
            f"{name} is none: drop them"
        )
    if name in NAMED:
        source = _named_source(name, config.data_dir)
    elif reader is None:
        raise _unknown(name)
    else:
        source = reader.open(path, config.image_column, config.label_column)
    parts = source.load()
    train = Split(*parts["train"])
    if "test" in parts:  # a named set, an .npz or a table (or a pack of one) that brings its own test split
        test = Split(*parts["test"])
    else:
        train, test = split_off(train, max(1, len(train) // 10), TEST_SPLIT_SEED)
    check_agree(name, train, test)
    if config.binarize == "static" and isinstance(train.x, IndexedImages):
        raise VaekitError(
            f"--binarize static draws every training image once at load, and the pack {name} stays on disk: use "
            "--binarize dynamic (a fresh draw per batch), or train from the source itself"
        )
    val_count = min(config.val_size, len(train) // 10)
    train, val = split_off(train, val_count, config.split_seed)
    if config.binarize in ("dynamic", "static"):  # evaluation always sees one fixed draw
        val, test = binarized(val), binarized(test)
    if config.binarize == "static":
        train = binarized(train)
    return Dataset(name=name, train=train, val=val, test=test)


def source_path(name: str, what: str) -> Path:
    """The path a source names, checked before anything opens it: an empty name would be the working folder, and a
    FIFO, socket or device would block a read or never end one, so only folders and regular files pass."""
    if not name.strip():
        raise VaekitError(
            f"{what} is empty: name a dataset ({', '.join(NAMED)}) or give a path (an image folder, a .npy/.npz or "
            ".parquet file, a datasets folder or a pack)"
        )
    path = Path(name).expanduser()
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return path  # a named set, or a path that does not exist: the caller says which
    except OSError as error:
        raise VaekitError(f"cannot read {path} ({error.strerror}, errno {error.errno}): check the path") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise VaekitError(
            f"{path} is not a regular file ({_file_kind(mode)}): give an image folder or a .npy/.npz file"
        )
    return path


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device"}
    return next((kind for test, kind in kinds.items() if test(mode)), "a block device")


def _named_source(name: str, data_dir: str | None) -> Source:
    """A named set as its train and test parts, in memory: the reader of the sources found by name."""
    if name in IDX_SOURCES:
        train, test = load_idx_dataset(name, DataConfig(dataset=name, data_dir=data_dir))
    else:
        train, test = split_off(load_digits(), 297, TEST_SPLIT_SEED)
    return Source({"train": Rows.of(train.x, train.y, name), "test": Rows.of(test.x, test.y, name)})


def _unknown(name: str) -> VaekitError:
    if "/" in name or Path(name).suffix in (".npy", ".npz", ".parquet"):
        return VaekitError(
            f"data path {name} does not exist: check the path (an image folder, .npy, .npz or .parquet file, or a "
            "datasets folder)"
        )
    return VaekitError(
        f"unknown dataset {name!r}: use one of {', '.join(NAMED)}, an image folder, a .npy/.npz or .parquet file, or "
        "a datasets folder"
    )


def pack_dataset(
    source: str,
    out: Path,
    data_dir: str | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
) -> dict[str, Any]:
    """Write `source` (anything `load_dataset` reads) as a pack at `out`; returns its manifest.

    Named sets are packed as their train and test splits; an image folder or a file is packed as it is, and its test
    split is carved at load by the same seeded rule as from the source, so a run gives the same numbers from both.
    """
    path = source_path(source, "the source to pack")
    if source in NAMED:
        return write_pack(out, _named_source(source, data_dir).parts, source)
    reader = reader_for(path)
    if reader is None:
        raise _unknown(source)
    if reader.refuses_packing:
        raise VaekitError(reader.refuses_packing.format(source=source))
    if (image_column or label_column) and not reader.takes_columns:
        raise VaekitError(f"image_column and label_column choose columns of a table and {source} is none: drop them")
    return write_pack(out, reader.open(path, image_column, label_column).parts, str(path.resolve()))


def class_count(data: Dataset) -> int:
    """K for a model conditioned on labels 0..K−1: one more than the largest label of any split. Checked here, at
    load, so that a missing or negative label is one line rather than an indexing error mid-training."""
    labels = [split.y for split in (data.train, data.val, data.test) if len(split)]
    fix = "use a labelled dataset (mnist, fashion-mnist, digits, an .npz with y, or one sub-folder per class)"
    if any(y is None for y in labels):
        raise VaekitError(f"--condition label needs a class label per image and {data.name} has none: {fix}")
    present = torch.cat([y for y in labels if y is not None])
    if int(present.min()) < 0:
        raise VaekitError(f"{data.name} has negative labels: number the classes 0, 1, 2, … to condition on them")
    classes = int(present.max()) + 1
    if classes > MAX_CLASSES:
        raise VaekitError(
            f"{data.name} has labels up to {classes - 1}, and --condition label takes at most {MAX_CLASSES} classes "
            f"numbered 0, 1, 2, …: renumber the classes (or drop --condition label)"
        )
    if classes < 2:
        raise VaekitError(f"{data.name} has a single class, nothing to condition on: {fix}, or --condition none")
    return classes
