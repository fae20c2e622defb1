"""One writer per run folder: an exclusive lock held for the whole of a training run.

The lock is `flock` on RUN/.lock, so the kernel releases it when its holder dies, even by kill -9: a stale file
never blocks a resume. The file names its holder (pid and host) so a refused second writer can say who holds it.
Readers (evaluate, serve, info) take no lock: every file they read is replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from vaekit.errors import VaekitError

LOCK = ".lock"


class RunLock:
    """`with RunLock(run_dir):` holds the run folder's lock, or raises a one-line VaekitError naming the holder."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None
        self.created = False  # the folder, so that a run that wrote nothing leaves nothing behind

    def __enter__(self) -> RunLock:
        self.created = not self.path.parent.exists()
        deadline = time.monotonic() + 1.0  # for a holder that never names itself (not one of ours)
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except (FileExistsError, FileNotFoundError):
                continue  # a writer that had created the folder found it empty on release and was removing it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").partition("\n")[0].strip()
                os.close(fd)
                if holder or time.monotonic() > deadline:
                    raise VaekitError(
                        f"{self.path.parent} is being trained by {holder or 'another process'}: wait for it to finish "
                        "(or stop it), or train into another --out"
                    ) from None
                time.sleep(0.001)  # a holder between taking the lock and writing its name: read again
                continue
            # The holder before us may have unlinked the file between our open and our flock; then we hold a lock
            # on a name nobody else can find. Only a lock on the file the path names now counts.
            if self._names(fd):
                break
            os.close(fd)
        # Our line goes over a dead holder's before the rest is cut, so a reader always finds one whole name.
        name = f"process {os.getpid()} on {socket.gethostname()}\n".encode()
        os.pwrite(fd, name, 0)
        os.ftruncate(fd, len(name))
        self.fd = fd
        return self

    def _names(self, fd: int) -> bool:
        """Whether RUN/.lock still names the file open as `fd`."""
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it, so nobody locks a file about to vanish
            os.close(self.fd)
            self.fd = None
            if self.created:
                with contextlib.suppress(OSError):  # only while empty: another writer may have arrived meanwhile
                    self.path.parent.rmdir()
