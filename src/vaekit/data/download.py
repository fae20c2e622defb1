"""Verified downloads: a file is only ever seen under its final name once its checksum has matched.

Checksums are SHA-256 of the *decompressed* content, so a re-compressed copy of the same data (Debian's
dataset-fashion-mnist, for one) verifies as well as the file from the dataset's own site.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from vaekit.errors import VaekitError
from vaekit.files import DEFAULT_MODE

TIMEOUT_S = 60.0  # one socket operation: connecting, or a read that receives nothing at all
DEADLINE_S = 600.0  # one mirror's whole download of one file: a trickle that never ends is given up
MAX_BYTES = 64 * 2**20  # per file: 2.5x the largest one vaekit downloads (Fashion-MNIST's 26 MB training images)
CHUNK = 1 << 16


class MirrorFailed(Exception):
    """One mirror could not deliver a file; the next one is tried."""


def content_sha256(path: Path, name: str | None = None) -> str:
    """SHA-256 of the decompressed bytes of a .gz file (of the bytes themselves otherwise); `name` decides which."""
    opener = gzip.open if (name or path.name).endswith(".gz") else open
    digest = hashlib.sha256()
    try:
        with opener(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError) as error:  # a truncated or non-gzip file
        return f"unreadable ({error})"
    return digest.hexdigest()


def verify(path: Path, sha256: str) -> None:
    actual = content_sha256(path)
    if actual != sha256:
        raise VaekitError(f"{path} is corrupt (checksum mismatch): delete it and run again to download a fresh copy")


def fetch(
    filename: str,
    sha256: str,
    mirrors: Sequence[str],
    target_dir: Path,
    max_bytes: int = MAX_BYTES,
    deadline_s: float = DEADLINE_S,
) -> Path:
    """Download `filename` from the first mirror that serves it with the right checksum, into `target_dir`.

    The bytes go to a temporary `.part` file beside the target, removed on every way out, and are renamed into place
    only after verification, so an interrupted or corrupted download never leaves a file that a later run would
    trust. A mirror that sends more than `max_bytes`, takes longer than `deadline_s`, or drops the connection is
    abandoned for the next one before it can fill the disk.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        handle, temp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{filename}.", suffix=".part")
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                download(url, out, max_bytes, deadline_s)
                out.flush()
                os.fsync(out.fileno())  # on disk before the rename makes it the file later runs trust
            if content_sha256(temp, filename) != sha256:
                failures.append(f"{url}: checksum mismatch")
                continue
            final = target_dir / filename
            os.chmod(temp, DEFAULT_MODE)
            os.replace(temp, final)
            return final
        except (MirrorFailed, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', None) or error or type(error).__name__}")
        finally:
            temp.unlink(missing_ok=True)
    raise VaekitError(
        f"could not download {filename} ({'; '.join(failures) or 'no mirror given'}): put the file in {target_dir} "
        "or pass --data-dir"
    )


def download(url: str, out: BinaryIO, max_bytes: int, deadline_s: float) -> None:
    """Copy the body at `url` into `out` chunk by chunk, within `max_bytes` and `deadline_s`, or raise.

    `read1` returns whatever has arrived, so the deadline is checked however slowly the bytes come; a plain
    `read(n)` would wait for all n of them.
    """
    deadline = time.monotonic() + deadline_s
    with urllib.request.urlopen(url, timeout=min(TIMEOUT_S, deadline_s)) as response:
        length = response.headers.get("Content-Length", "")
        declared = int(length) if length.isdigit() else None
        if declared is not None and declared > max_bytes:
            raise MirrorFailed(f"it announces {declared:,} bytes, over the {max_bytes:,}-byte cap")
        received = 0
        while block := response.read1(CHUNK):
            received += len(block)
            if received > max_bytes:
                raise MirrorFailed(f"it sent more than the {max_bytes:,}-byte cap")
            out.write(block)
            if time.monotonic() > deadline:
                raise MirrorFailed(f"not complete after {deadline_s:g} s")
        if declared is not None and received < declared:
            raise MirrorFailed(f"the connection closed after {received:,} of {declared:,} bytes")
