"""One writer per run folder: an exclusive lock held for the whole of a training run.

The lock is `flock` on RUN/.lock, so the kernel releases it when its holder dies, even by kill -9: a stale file
never blocks a resume. The file names its holder (pid and host) so a refused second writer can say who holds it.
Readers (evaluate, serve, info) take no lock: every file they read is replaced atomically.
"""

from __future__ import annotations

import fcntl
import os
import socket
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise VaekitError(
                    f"{self.path.parent} is being trained by {holder}: wait for it to finish (or stop it), "
                    "or train into another --out"
                ) from None
            # The holder before us may have unlinked the file between our open and our flock; then we hold a lock
            # on a name nobody else can find. Only a lock on the file the path names now counts.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it, so nobody locks a file about to vanish
            os.close(self.fd)
            self.fd = None
            if self.created and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()
