"""Memory checked before it is allocated: how much a device has available, and a one-line refusal when a command
would need more.

A command estimates what it is about to hold (a model's weights from its meta-device copy, data from array or image
headers, a batch's activations) and calls `require` first, so that a small file or a large flag ends in one line
naming the amount and the fix rather than a traceback or the out-of-memory killer. `$VAEKIT_MEMORY_LIMIT` (bytes, or
with a K/M/G/T suffix) replaces what the system reports, for tests and for sharing a machine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vaekit.errors import VaekitError

LIMIT_ENV = "VAEKIT_MEMORY_LIMIT"
SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}  # as `amount` prints them
MEMINFO = Path("/proc/meminfo")
CGROUP_V2 = Path("/sys/fs/cgroup")  # memory.max and memory.current of this process's group (a container's limit)
CGROUP_V1 = Path("/sys/fs/cgroup/memory")  # memory.limit_in_bytes and memory.usage_in_bytes


def available(device: torch.device | str = "cpu") -> int:
    """Bytes that can be allocated now on `device`: free CUDA memory for a CUDA device, otherwise the system's
    available memory, bounded by a cgroup limit where one applies (MPS shares the system's memory)."""
    limit = _limit_from_env()
    if limit is not None:
        return limit
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return _system_available()


def require(nbytes: int, what: str, fix: str, device: torch.device | str = "cpu", limit: int | None = None) -> None:
    """Refuse, in one line, to go on when `what` needs more than the memory available on `device` (or `limit`)."""
    have = available(device) if limit is None else limit
    if nbytes > have:
        where = "" if torch.device(device).type == "cpu" else f" on {device}"
        raise VaekitError(
            f"{what} needs {amount(nbytes)} of memory, more than the {amount(have)} available{where}: {fix}"
        )


def amount(nbytes: float) -> str:
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} bytes"


def tensor_bytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def layer_outputs(module: nn.Module, input_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """Bytes of every layer's output when `module` reads one input of `input_shape` (batch dimension included): what
    its forward pass keeps for the backward pass, roughly. Run on the meta device with meta stand-ins for the
    weights, so it allocates nothing whatever the sizes."""
    total = 0

    def count(_: nn.Module, __: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in module.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        stand_ins = {
            name: torch.empty_like(t, device="meta")
            for name, t in [*module.named_parameters(), *module.named_buffers()]
        }
        torch.func.functional_call(module, stand_ins, (torch.empty(*input_shape, dtype=dtype, device="meta"),))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def _limit_from_env() -> int | None:
    text = os.environ.get(LIMIT_ENV, "").strip().upper().removesuffix("B")
    if not text:
        return None
    number, suffix = (text[:-1], text[-1]) if text[-1] in SUFFIXES else (text, "")
    try:
        value = float(number) * SUFFIXES[suffix]
    except ValueError:
        value = -1
    if not 0 <= value < float(1 << 62):
        raise VaekitError(
            f"${LIMIT_ENV} = {os.environ[LIMIT_ENV]!r} is not an amount of memory: give bytes, or 4G, 500M"
        )
    return int(value)


def _system_available() -> int:
    """MemAvailable (Linux), bounded by the cgroup's limit less its usage; elsewhere the free physical pages."""
    found = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
    if found:
        return min(found)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return sys.maxsize  # nothing to go by (Windows): refuse nothing rather than everything


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    for limit_file, usage_file in (
        (CGROUP_V2 / "memory.max", CGROUP_V2 / "memory.current"),
        (CGROUP_V1 / "memory.limit_in_bytes", CGROUP_V1 / "memory.usage_in_bytes"),
    ):
        try:
            limit = limit_file.read_text().strip()
            if limit == "max":
                return None
            return max(0, int(limit) - int(usage_file.read_text().strip()))
        except (OSError, ValueError):
            continue
    return None
