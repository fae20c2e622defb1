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
import threading
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
        # The lock file is written and locked under a private name before it appears as RUN/.lock, so whoever finds
        # RUN/.lock locked also finds its holder's name in it: there is no moment when a held lock is nameless.
        mine = self.path.with_name(f"{LOCK}.{os.getpid()}.{threading.get_ident()}")
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(mine, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                break
            except FileNotFoundError:
                continue  # a writer that had created the folder found it empty on release and removed it
        try:
            os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
            fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else knows this file: never blocks
            while not self._install(mine):
                pass
        except BaseException:
            os.close(fd)
            mine.unlink(missing_ok=True)
            raise
        self.fd = fd
        return self

    def _install(self, mine: Path) -> bool:
        """Make `mine` RUN/.lock; False when the lock changed hands meanwhile and the caller should look again."""
        try:
            os.link(mine, self.path)  # no lock file yet: ours becomes it
            mine.unlink()
            return True
        except FileExistsError:
            pass
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # released between our link and our open
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                raise VaekitError(
                    f"{self.path.parent} is being trained by {holder}: wait for it to finish (or stop it), "
                    "or train into another --out"
                ) from None
            # We hold the lock of the file RUN/.lock named when we opened it: left by a holder that died, or by one
            # that released it since. Only the holder of the lock on the file the path names now may replace it.
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                return False
            if current:
                os.replace(mine, self.path)
            return current
        finally:
            os.close(fd)

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
