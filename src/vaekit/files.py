"""Atomic file writes: a temporary file beside the target, fsync, rename. Readers see the old file or the new one,
never half of one; a crash leaves at most a `.NAME.*.tmp` beside it, which the next writer removes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _default_mode() -> int:
    """What open() would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


DEFAULT_MODE = _default_mode()


def atomic_write(path: Path, data: bytes) -> None:
    """Write a temporary file beside `path`, fsync, rename it over `path`: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, DEFAULT_MODE)  # mkstemp creates 0600; a run folder is for sharing
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with NaN and infinity refused: they are not JSON, and no reader could parse the file."""
    atomic_write(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())
