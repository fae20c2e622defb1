"""One process that runs fuzz cases under a memory bound and a time bound, and the client that drives it.

Hypothesis generates cases in the test process; each case (files to write, and a reader to run on them) goes to the
worker over a pipe. The worker runs it in a fresh folder with its address space capped (`RLIMIT_AS`: an allocation
over the bound raises MemoryError there) and a watchdog armed (`faulthandler.dump_traceback_later`: a case still
running at the deadline dumps every thread's stack and ends the process). The client waits a little longer than the
deadline, so a hang inside C code, where no Python signal handler runs, is caught too; a worker that died (a hang, a
crash, the OOM killer) is reported with the end of its stderr and replaced by a fresh one for the next case.

Cases and replies are pickled: both ends are this file, in processes the test started, never a file from elsewhere.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import faulthandler
import os
import pickle
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

CASE_SECONDS = 10.0  # a case still running after this is a hang (the readers take milliseconds on these tiny files)
MEMORY_BOUND = 1 << 30  # address space a case may add to the worker's, measured after it has run every reader once
WARMUP_SECONDS = 120.0  # a warm-up case imports libraries, on a machine perhaps busy with a spare worker's start
HEADER = struct.Struct("<Q")
# A program no reader may run: Pillow hands EPS bytes to Ghostscript (`gs`). The worker's PATH starts with a `gs`
# that writes its arguments to the file named by $VAEKIT_FUZZ_FOREIGN_LOG and fails, and a case that ran it is a fault.
FOREIGN_LOG = "VAEKIT_FUZZ_FOREIGN_LOG"
CASES_FOLDER = "VAEKIT_FUZZ_CASES"  # where the worker writes cases: in the folder the client removes, even after a kill
FAKE_GS = '#!/bin/sh\necho "gs $*" >> "$VAEKIT_FUZZ_FOREIGN_LOG"\nexit 1\n'


# --- the wire -----------------------------------------------------------------------------------------------------


def send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        raise EOFError("the other end closed the pipe")
    (size,) = HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other end closed the pipe mid-message")
    return pickle.loads(data)


# --- the worker's side --------------------------------------------------------------------------------------------


def materialize(root: Path, files: dict[str, Any]) -> None:
    """Write a case's entries under `root`: bytes are a file; None a folder; {"fifo": True} a named pipe;
    {"symlink": target} a link; {"sparse": size, "head": bytes} a sparse file of `size` bytes starting with `head`."""
    for relative, entry in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if entry is None:
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(entry, bytes):
            path.write_bytes(entry)
        elif "fifo" in entry:
            os.mkfifo(path)
        elif "symlink" in entry:
            path.symlink_to(entry["symlink"])
        else:
            with path.open("wb") as stream:
                stream.write(entry["head"])
                stream.truncate(entry["sparse"])


def vm_size() -> int:
    """The process's address space in bytes (what RLIMIT_AS limits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def run_case(case: dict[str, Any], base: Path, seconds: float = CASE_SECONDS) -> dict[str, Any]:
    from tests.fuzz.targets import TARGETS, Outcome, where

    folder = Path(tempfile.mkdtemp(dir=base))
    outcome = Outcome()
    start = time.perf_counter()
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        with contextlib.chdir(folder):
            materialize(folder, case["files"])
            TARGETS[case["target"]](case.get("args", {}), outcome)
        reply: dict[str, Any] = {"outcome": "ok"}
    except BaseException as error:  # everything but VaekitError (caught by the targets) is a fault to report
        trace = traceback.extract_tb(error.__traceback__)
        reply = {
            "outcome": "crash",
            "error": type(error).__name__,
            "where": where(trace),
            "trace": "".join(traceback.format_exception(error))[-6000:],
        }
    finally:
        faulthandler.cancel_dump_traceback_later()
        shutil.rmtree(folder, ignore_errors=True)
    foreign = Path(os.environ.get(FOREIGN_LOG, os.devnull))
    if foreign.is_file() and foreign.stat().st_size:
        reply = {
            "outcome": "foreign",
            "error": "ran Ghostscript",
            "where": "an image decoder",
            "trace": foreign.read_text(),
        }
        foreign.unlink()
    reply.update(messages=outcome.messages, seconds=time.perf_counter() - start)
    return reply


def serve() -> None:
    """The worker's loop: "arm" caps the address space (after the warm-up cases), "case" runs one case."""
    channel = os.fdopen(os.dup(1), "wb")  # replies; the readers' own prints go to stderr, never into the pipe
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    import tests.fuzz.targets  # noqa: F401  (every reader's imports, before the cap)

    base = Path(tempfile.mkdtemp(prefix="cases-", dir=os.environ.get(CASES_FOLDER)))  # removed by the client too
    try:
        while True:
            try:
                request = receive(requests)
            except EOFError:
                return
            if request["op"] == "arm":
                limit = vm_size() + MEMORY_BOUND
                resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
                send(channel, {"limit": limit})
            else:
                send(channel, run_case(request["case"], base, request.get("seconds", CASE_SECONDS)))
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- the client's side --------------------------------------------------------------------------------------------


class Process:
    """One worker process: started, then (`warm`) warmed up with cases that load every library the readers use, so
    that the cap measures cases, not imports, and armed; its stderr kept in a file to report how it ended."""

    def __init__(self) -> None:
        # appending: the worker writes at the end whatever this side reads (a shared offset otherwise)
        self.log = tempfile.TemporaryFile("a+b")  # noqa: SIM115  (open as long as the process runs)
        self.home = tempfile.mkdtemp(prefix="vaekit-fuzz-home-")
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        env.pop("VAEKIT_DATA", None)
        env.pop("VAEKIT_MIRRORS", None)
        programs = Path(self.home, "bin")
        programs.mkdir()
        (programs / "gs").write_text(FAKE_GS)
        (programs / "gs").chmod(0o755)
        env.update(
            PATH=os.pathsep.join([str(programs), env.get("PATH", "")]),
            **{FOREIGN_LOG: str(Path(self.home, "foreign.log")), CASES_FOLDER: self.home},
            HOME=self.home,
            MALLOC_ARENA_MAX="2",
            OMP_NUM_THREADS="1",
            TQDM_DISABLE="1",
            HF_DATASETS_DISABLE_PROGRESS_BARS="1",
        )
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.fuzz.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=root,
        )

    def warm(self, warmup: list[dict[str, Any]]) -> Process:
        try:
            for case in warmup:  # unbounded: imports, thread pools and caches, once
                reply = self.ask({"op": "case", "case": case, "seconds": WARMUP_SECONDS}, WARMUP_SECONDS + 10)
                if reply["outcome"] != "ok":
                    raise RuntimeError(f"a warm-up case failed: {reply}")
            self.ask({"op": "arm"}, CASE_SECONDS)
        except (RuntimeError, TimeoutError, EOFError, BrokenPipeError) as error:
            stderr = self.stderr()
            self.close()
            raise RuntimeError(f"the fuzz worker did not start ({error!r}); it wrote:\n{stderr[-3000:]}") from error
        return self

    def ask(self, request: dict[str, Any], seconds: float) -> dict[str, Any]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        send(self.popen.stdin, request)
        ready, _, _ = select.select([self.popen.stdout], [], [], seconds)
        if not ready:
            raise TimeoutError
        reply: dict[str, Any] = receive(self.popen.stdout)
        return reply

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()[-20000:].decode(errors="replace")

    def close(self) -> None:
        """End the process: politely (end of input) when it is alive and answering, else with SIGKILL."""
        if self.popen.poll() is None:
            assert self.popen.stdin is not None
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.send_signal(signal.SIGKILL)
                self.popen.wait()
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


class Worker:
    """The test process's handle on the worker process: started on first use and replaced when it dies. Once one
    has died (a hang, a crash), a spare is kept warming up in the background, since a fault that kills the worker
    usually comes back: the next death then costs the case's deadline, not a start (imports and warm-up, ~15 s)."""

    def __init__(self, warmup: Callable[[], list[dict[str, Any]]]) -> None:
        self.warmup = warmup
        self.process: Process | None = None
        self.spare: tuple[Process, concurrent.futures.Future[Process]] | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.cases = 0
        self.restarts = 0
        self.case_seconds = 0.0  # the cases' own time, without the traffic and restarts around them

    def start(self) -> Process:
        if self.process is None:
            self.process = self.spare[1].result() if self.spare is not None else Process().warm(self.warmup())
            self.spare = None
            if self.restarts:
                spare = Process()
                self.spare = spare, self.pool.submit(spare.warm, self.warmup())
        return self.process

    def run(self, case: dict[str, Any]) -> dict[str, Any]:
        """The worker's reply for `case`; a hang or a dead worker is a reply too ("hang", "died")."""
        process = self.start()
        self.cases += 1
        try:
            reply = process.ask({"op": "case", "case": case}, CASE_SECONDS + 10)
            self.case_seconds += reply["seconds"]
            return reply
        except (TimeoutError, EOFError, BrokenPipeError) as error:
            process.popen.kill()
            process.popen.wait()
            stderr = process.stderr()
            process.close()
            self.process = None
            self.restarts += 1
            self.case_seconds += CASE_SECONDS
            hung = isinstance(error, TimeoutError) or "Timeout (0:" in stderr
            return {
                "outcome": "hang" if hung else "died",
                "error": "hang" if hung else f"died (exit {process.popen.returncode})",
                "where": _dumped_where(stderr),
                "trace": stderr[-6000:],
                "messages": [],
                "seconds": CASE_SECONDS,
            }

    def close(self) -> None:
        if self.process is not None:
            self.process.close()
            self.process = None
        if self.spare is not None:  # not waited for: ended while it warms up
            spare, warmed = self.spare
            spare.popen.kill()
            with contextlib.suppress(Exception):
                warmed.result()
            spare.close()
            self.spare = None
        self.pool.shutdown()


def _dumped_where(stderr: str) -> str:
    """The innermost vaekit frame in the stacks faulthandler dumped at the deadline (it lists each thread's innermost
    frame first, as 'File "/…/userdata.py", line 3 in read'; the thread running the case is the one in vaekit)."""
    dump = stderr[stderr.rfind("Timeout (") :] if "Timeout (" in stderr else ""
    frames = [line.strip() for line in dump.splitlines() if line.startswith("  File ")]
    ours = [line for line in frames if f"{os.sep}vaekit{os.sep}" in line]
    if not ours:
        return "?"
    path, _, rest = ours[0].removeprefix("File ").partition(", line ")
    return f"{Path(path.strip(chr(34))).name}:{rest}"


if __name__ == "__main__":
    serve()
