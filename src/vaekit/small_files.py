"""How vaekit reads the small files others hand it (a --config, a run's JSON, a pack's manifest, a `datasets` state
file): a regular file only, read up to a bound, and JSON parsed with every failure turned into one line.

A FIFO would block the open until some writer appears, a device such as /dev/zero never ends a read, and JSON nested
a hundred thousand deep exhausts Python's recursion limit: each is an input like any other, refused here once rather
than in each reader.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError

TEXT_LIMIT = 1 << 24  # 16 MB: a run's metrics.jsonl of 100,000 epochs is a few MB; nothing vaekit reads is larger


class Unreadable(ValueError):
    """Why a path is not a small file vaekit can read, as a phrase that follows "is": "a folder", "a FIFO, …"."""


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISFIFO: "a FIFO, not a regular file",
        stat.S_ISSOCK: "a socket, not a regular file",
        stat.S_ISCHR: "a character device, not a regular file",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "a block device, not a regular file")


def read_small(path: Path, limit: int = TEXT_LIMIT) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them. Raises `Unreadable` for anything else and
    OSError (FileNotFoundError, …) as the operating system reports it, for the caller to name in its own words."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: a FIFO opens at once, unread
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Unreadable(_kind(mode))
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise Unreadable(f"over {limit:,} bytes")
    return data


def parse_json(text: str | bytes, path: Path, fix: str) -> Any:
    """JSON text with one set of errors: corrupt, nested past Python's recursion limit, or an integer longer than
    Python converts from text."""
    try:
        return json.loads(text)
    except RecursionError:
        raise VaekitError(f"{path} is nested too deeply to be a vaekit file: {fix}") from None
    except UnicodeDecodeError:
        raise VaekitError(f"{path} is not UTF-8 text: {fix}") from None
    except json.JSONDecodeError as error:
        raise VaekitError(f"{path} is corrupt ({error}): {fix}") from None
    except ValueError:  # int() refuses thousands of digits (a denial of service otherwise)
        raise VaekitError(f"{path} holds an integer too long to read: {fix}") from None


def read_json(path: Path, fix: str, limit: int = TEXT_LIMIT) -> Any:
    """The JSON file at `path`, or one line naming it and `fix`."""
    return parse_json(read_text(path, fix, limit), path, fix)


def read_text(path: Path, fix: str, limit: int = TEXT_LIMIT) -> str:
    """The UTF-8 text file at `path`, or one line naming it and `fix`."""
    try:
        return read_small(path, limit).decode("utf-8")
    except Unreadable as reason:
        raise VaekitError(f"{path} is {reason}: {fix}") from None
    except UnicodeDecodeError:
        raise VaekitError(f"{path} is not UTF-8 text: {fix}") from None
    except FileNotFoundError:
        raise VaekitError(f"{path} does not exist: {fix}") from None
    except OSError as error:
        raise VaekitError(f"cannot read {path} ({error.strerror}, errno {error.errno}): {fix}") from None
