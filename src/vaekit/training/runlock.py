"""One writer per run folder: an exclusive lock held for the whole of a training run.

The lock is `flock` on RUN/.lock, so the kernel releases it when its holder dies, even by kill -9: a stale file
never blocks a resume. The file names its holder (pid and host) so a refused second writer can say who holds it.
Readers (evaluate, serve, info) take no lock: every file they read is replaced atomically.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import time
from pathlib import Path
from types import TracebackType

from vaekit.errors import VaekitError
from vaekit.files import make_folder, open_folder, os_error

LOCK = ".lock"


class RunLock:
    """`with RunLock(run_dir):` holds the run folder's lock, or raises a one-line VaekitError naming the holder.

    The folder is opened as a descriptor that refuses a symbolic link, and .lock is opened relative to it with
    O_NOFOLLOW and checked to be a regular file, so a link planted as RUN/.lock is refused, never written through."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK
        self.fd: int | None = None
        self.folder: int | None = None
        self.created = False  # the folder, so that a run that wrote nothing leaves nothing behind

    def __enter__(self) -> RunLock:
        deadline = time.monotonic() + 1.0  # for races with other writers, and a holder that never names itself
        while True:
            try:
                self.created = make_folder(self.run_dir)
                folder = open_folder(self.run_dir)
            except FileNotFoundError as error:  # a writer that had created the folder was removing it on release
                if time.monotonic() > deadline:
                    raise os_error(error, self.run_dir) from None
                continue
            except OSError as error:
                raise os_error(error, self.run_dir) from None
            fd = self._open_lock(folder)
            if fd is None:  # the folder was removed after we opened it
                os.close(folder)
                if time.monotonic() > deadline:
                    raise VaekitError(f"{self.run_dir} keeps vanishing while vaekit opens it: train into another --out")
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").partition("\n")[0].strip()
                os.close(fd)
                os.close(folder)
                if holder or time.monotonic() > deadline:
                    raise VaekitError(
                        f"{self.run_dir} is being trained by {holder or 'another process'}: wait for it to finish "
                        "(or stop it), or train into another --out"
                    ) from None
                time.sleep(0.001)  # a holder between taking the lock and writing its name: read again
                continue
            # The holder before us may have unlinked the file between our open and our flock; then we hold a lock
            # on a name nobody else can find. Only a lock on the file the path names now counts.
            if self._names(folder, fd):
                break
            os.close(fd)
            os.close(folder)
        # Our line goes over a dead holder's before the rest is cut, so a reader always finds one whole name.
        name = f"process {os.getpid()} on {socket.gethostname()}\n".encode()
        os.pwrite(fd, name, 0)
        os.ftruncate(fd, len(name))
        self.fd, self.folder = fd, folder
        return self

    def _open_lock(self, folder: int) -> int | None:
        """RUN/.lock opened (created if missing) relative to the folder's descriptor, never through a link; None when
        the folder was removed meanwhile."""
        try:
            fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as error:
            os.close(folder)
            if error.errno == errno.ELOOP:
                raise VaekitError(
                    f"{self.path} is a symbolic link, not vaekit's lock file: remove it (vaekit never makes one), "
                    "then run the command again"
                ) from None
            raise os_error(error, self.path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            os.close(folder)
            raise VaekitError(f"{self.path} is not a regular file, not vaekit's lock file: remove it, then run again")
        return fd

    def _names(self, folder: int, fd: int) -> bool:
        """Whether RUN/.lock still names the file open as `fd`."""
        try:
            return os.stat(LOCK, dir_fd=folder, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.fd is not None and self.folder is not None:
            with contextlib.suppress(FileNotFoundError):  # while still holding it, so nobody locks a vanishing file
                os.unlink(LOCK, dir_fd=self.folder)
            os.close(self.fd)
            os.close(self.folder)
            self.fd = self.folder = None
            if self.created:
                with contextlib.suppress(OSError):  # only while empty: another writer may have arrived meanwhile
                    self.run_dir.rmdir()
