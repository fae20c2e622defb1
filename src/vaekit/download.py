"""Verified downloads: a file is only ever seen under its final name once its checksum has matched.

Checksums are SHA-256 of the *decompressed* content, so a re-compressed copy of the same data (Debian's
dataset-fashion-mnist, for one) verifies as well as the file from the dataset's own site.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from vaekit.errors import VaekitError
from vaekit.runs import DEFAULT_MODE

TIMEOUT_S = 60.0


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


def fetch(filename: str, sha256: str, mirrors: Sequence[str], target_dir: Path) -> Path:
    """Download `filename` from the first mirror that serves it with the right checksum, into `target_dir`.

    The bytes go to a temporary file beside the target and are renamed into place only after verification, so an
    interrupted or corrupted download never leaves a file that a later run would trust.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        handle, temp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{filename}.", suffix=".part")
        temp = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
            if content_sha256(temp, filename) != sha256:
                failures.append(f"{url}: checksum mismatch")
                continue
            final = target_dir / filename
            os.chmod(temp, DEFAULT_MODE)
            os.replace(temp, final)
            return final
        except (urllib.error.URLError, OSError, ValueError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
        finally:
            temp.unlink(missing_ok=True)
    raise VaekitError(
        f"could not download {filename} ({'; '.join(failures)}): put the file in {target_dir} or pass --data-dir"
    )
