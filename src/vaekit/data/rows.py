"""What every reader of a data source yields, and the two ways vaekit consumes it: loading it into memory, or
checking it for a pack.

A reader (one per format: image folders, arrays, tables, packs, the named sets) opens a source as a `Source`: each
part ("train", and "test" when the source brings its own) as `Rows`, read a chunk at a time, plus what holding the
whole source in memory would take. Nothing is decoded when a source is opened, only headers read, so a source too big
for memory fails before anything is allocated. `vaekit.data.readers` says which reader recognizes a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import VaekitError
from vaekit.memory import require

MIN_EXAMPLES = 4  # images a source (or each split a pack brings) must hold: a train and a test example after splits
Pair = tuple[Tensor, Tensor | None]  # a part in memory: images (N, C, H, W) uint8 or float32 in [0, 1], int64 labels


@dataclass(frozen=True)
class Rows:
    """One part of a source (its training or test images), read a chunk of rows at a time."""

    count: int
    shape: tuple[int, int, int]  # (C, H, W)
    read: Callable[[int, int], np.ndarray]  # rows [start, stop) as (n, C, H, W) of `dtype`
    labels: np.ndarray | None  # (count,) int64, or None
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.uint8))  # uint8, or float32 in [0, 1]
    name: str = ""  # how messages name the part
    stored: str = "uint8"  # the values as the source stores them (a pack refuses all but 8-bit ones)
    tensor: Tensor | None = None  # the rows already as a tensor (in memory, or a pack's mapped rows): loaded as is

    @classmethod
    def of(cls, x: Tensor, y: Tensor | None, name: str) -> Rows:
        """Images already in memory."""
        c, h, w = x.shape[1:]
        dtype = np.dtype(np.uint8) if x.dtype == torch.uint8 else np.dtype(np.float32)
        return cls(len(x), (c, h, w), lambda a, b: x[a:b].numpy(), None if y is None else y.numpy(), dtype, name,
                   f"{x.dtype} values in [0, 1]" if dtype != np.uint8 else "uint8", x)  # fmt: skip

    def load(self) -> Pair:
        """The whole part in memory (a mapped pack's training part stays mapped)."""
        if self.tensor is not None:
            return self.tensor, None if self.labels is None else torch.from_numpy(self.labels)
        x = self.read(0, self.count)
        x = x if x.flags.writeable else x.copy()  # a reader may give a view of its file; a tensor needs its own
        return torch.from_numpy(x), None if self.labels is None else torch.from_numpy(self.labels)

    def eight_bit(self) -> Rows:
        """These rows, which a pack can store only as 8-bit pixels: others are refused, naming the fix."""
        if self.dtype != np.uint8:
            raise VaekitError(
                f"{self.name} holds {self.stored} and a pack stores 8-bit pixels: save the images as uint8 "
                "(np.rint(x * 255).astype(np.uint8)) and pack that, or train from the source itself"
            )
        return self


@dataclass(frozen=True)
class Memory:
    """What holding a whole source takes: `need` bytes, described for the message, and the fix if it does not fit."""

    need: int
    what: str
    fix: str


@dataclass(frozen=True)
class Source:
    """A source opened by its reader: its parts, and what loading them all takes (None where each read is checked)."""

    parts: dict[str, Rows]
    memory: Memory | None = None

    def load(self, max_bytes: int | None = None) -> dict[str, Pair]:
        """Every part in memory, once the whole has been checked against the memory available (or `max_bytes`)."""
        if self.memory is not None:
            require(self.memory.need, self.memory.what, self.memory.fix, limit=max_bytes)
        return {role: rows.load() for role, rows in self.parts.items()}


class Reader(Protocol):
    """One format of data source. `recognizes` answers from the path alone (a suffix, a marker file), cheaply;
    `open` reads headers only."""

    name: str  # how docs and messages name the format
    takes_columns: bool  # whether --image-column and --label-column mean anything to it
    refuses_packing: str  # why such a source is not packed ("{source}" is filled in), or ""

    def recognizes(self, path: Path) -> bool: ...

    def open(self, path: Path, image_column: str | None = None, label_column: str | None = None) -> Source: ...
