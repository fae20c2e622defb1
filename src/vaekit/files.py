"""How vaekit writes into a folder that others may share: atomically, and never through a symbolic link.

A file is written as a temporary beside it, flushed to disk and renamed over it, so readers see the old file or the
new one, never half of one. The folder is opened once as a descriptor that refuses a link (O_NOFOLLOW) and every
name is created and renamed relative to it: a link planted at the file's name is replaced, never written through, and
a link planted at the folder's name is refused, so no byte and no temporary lands outside it. A crash leaves at most
a `.NAME.vaekit-XXXXXXXX.tmp` beside NAME, a name no user gives a file, which the next writer removes.

An operating-system error (disk full, read-only, permission denied, a parent that is a file) becomes one line
naming the path and the errno.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError


def _default_mode() -> int:
    """What open() would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


DEFAULT_MODE = _default_mode()
TEMPORARY = re.compile(r"\..+\.vaekit-[0-9a-f]{8}\.tmp")
FIXES = {  # what a person does about each operating-system error a write meets
    errno.ENOSPC: "free some disk space, then run the command again",
    errno.EDQUOT: "free some of your disk quota, then run the command again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "you may not write there: change its permissions, or choose another folder",
    errno.EPERM: "you may not write there: change its permissions, or choose another folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "a folder is in the way: move it, or choose another path",
}


def temporary_name(name: str) -> str:
    """The name a write of `name` goes through first; `TEMPORARY` matches it and nothing a user would call a file."""
    return f".{name}.vaekit-{secrets.token_hex(4)}.tmp"


def is_temporary(name: str) -> bool:
    return TEMPORARY.fullmatch(name) is not None


def os_error(error: OSError, path: Path | str, action: str = "write") -> VaekitError:
    """One line for an operating-system error met at `path`: the path, the errno's name and what to do."""
    code = errno.errorcode.get(error.errno or 0, str(error.errno))
    where = error.filename if error.filename is not None and error.errno == errno.ENOTDIR else path
    fix = FIXES.get(error.errno or 0, "check the path and its file system")
    return VaekitError(f"cannot {action} {where}: {error.strerror or error} ({code}): {fix}")


def make_folder(path: Path) -> bool:
    """Create `path` and its missing parents; True when `path` itself was created here. A name already there stays
    as it is, folder or not: `open_folder` says what it is. Raises OSError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as error:  # a parent is there, but as a file
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), error.filename) from None
    try:
        os.mkdir(path)
    except FileExistsError:
        return False
    return True


def open_folder(path: Path) -> int:
    """`path` as a directory descriptor, refusing a symbolic link or anything but a folder at its last name (in one
    line); the descriptor stays on this folder even if its name is moved meanwhile. Raises OSError otherwise."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        refusal = not_a_folder(path)
        if refusal is None:  # ENOTDIR from a parent that is a file
            raise
        raise refusal from None


def not_a_folder(path: Path) -> VaekitError | None:
    """The one-line refusal of `path` when it is a symbolic link or something other than a folder; None otherwise."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode) and not os.path.exists(path):
        return VaekitError(f"{path} is a symbolic link to nothing: remove it, or choose another path")
    if stat.S_ISLNK(mode):
        return VaekitError(
            f"{path} is a symbolic link, and vaekit never writes through one: remove the link, or use the folder it "
            f"points to ({os.path.realpath(path)}) instead"
        )
    if not stat.S_ISDIR(mode):
        return VaekitError(f"{path} exists and is not a folder: choose another path, or move it away")
    return None


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary in `path`'s folder, fsync, rename it over `path`: readers see old or new, never
    half; the folder is created if missing and refused if it is a link."""
    try:
        make_folder(path.parent)
        folder = open_folder(path.parent)
    except OSError as error:
        raise os_error(error, path.parent) from None
    temp = temporary_name(path.name)
    try:
        _write_new(folder, temp, data)
        os.replace(temp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=folder)
        if isinstance(error, OSError):
            raise os_error(error, path) from None
        raise
    finally:
        os.close(folder)


def _write_new(folder: int, name: str, data: bytes) -> None:
    """A new file `name` in `folder` (never an existing one, never a link) holding `data`, flushed to disk."""
    handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=folder)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view) :]
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON with NaN and infinity refused: they are not JSON, and no reader could parse the file."""
    atomic_write(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def remove_temporaries(folder: Path) -> None:
    """The temporaries of writes that a crash interrupted, and only those: a user's own `.notes.tmp` stays."""
    for name in os.listdir(folder):
        if is_temporary(name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / name)  # unlinks a link itself, never what it points to


def ensure_folder(path: Path) -> None:
    """`path` exists as a real folder (created if missing), or one line says what is in the way."""
    try:
        make_folder(path)
        os.close(open_folder(path))
    except OSError as error:
        raise os_error(error, path) from None
