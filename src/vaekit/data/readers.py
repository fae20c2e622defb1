"""The registry of data readers: which reader opens a path, asked by both `load_dataset` and `pack_dataset`.

The readers are asked in order and the first that recognizes the path opens it, so the order settles the paths more
than one could read: a pack before anything else (a folder holding pack files but no manifest is refused there, not
read as images), then a table (a Parquet file, a `datasets` folder, a folder of .parquet files), then any other folder
as an image folder and any other file as arrays. A new format is one module with a reader (see `vaekit.data.rows`)
and a `register` call; it is asked before the built-in ones.
"""

from __future__ import annotations

from pathlib import Path

from vaekit.data.pack import PackReader
from vaekit.data.rows import Reader
from vaekit.data.tables import TABLE
from vaekit.data.userdata import ARRAYS, IMAGE_FOLDER

READERS: list[Reader] = [PackReader(), TABLE, IMAGE_FOLDER, ARRAYS]


def register(reader: Reader) -> Reader:
    """Ask `reader` before every reader registered so far; a second reader of one name is a programming error."""
    if any(known.name == reader.name for known in READERS):
        raise ValueError(f"two data readers are named {reader.name!r}")
    READERS.insert(0, reader)
    return reader


def reader_for(path: Path) -> Reader | None:
    """The first reader that recognizes `path`, or None (a path that does not exist)."""
    if not path.exists():
        return None
    return next((reader for reader in READERS if reader.recognizes(path)), None)
