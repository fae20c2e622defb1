"""Where things run: device names, the dtype sums accumulate in, and generators on a device.

Every command runs where the model is. An analysis moves its input to `model.device` at its boundary, draws its
noise from a generator on that device (`generator_on`), accumulates on the device (`RunningSum`, float64 where the
device has it) and moves results to the CPU only to hand them to numpy, a picture or JSON.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaekit.errors import VaekitError

DEVICES = "auto | cpu | cuda | cuda:N | mps"


def resolve_device(name: str) -> torch.device:
    """The device `name` stands for, checked to exist on this machine; `auto` is CUDA, else MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VaekitError(f"unknown device {name!r}: use {DEVICES}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VaekitError(f"--device {name}, but torch sees no CUDA GPU on this machine: use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            last = f"cuda:{count - 1}"
            raise VaekitError(f"--device {name}, but this machine has {count} CUDA GPU(s): use cuda:0 to {last}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise VaekitError(f"--device {name}, but torch sees no Apple GPU (MPS) on this machine: use --device cpu")
    elif device.type != "cpu":
        raise VaekitError(f"unknown device {name!r}: use {DEVICES}")
    return device


def accumulate_dtype(device: torch.device) -> torch.dtype:
    """float64 for sums over many batches, except on MPS, which has no float64 (`RunningSum` compensates there)."""
    return torch.float32 if device.type == "mps" else torch.float64


def generator_on(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator that draws on `device`. Meta tensors hold no values, so a CPU generator serves them."""
    return torch.Generator(device="cpu" if device.type == "meta" else device).manual_seed(seed)


class RunningSum:
    """Running sums of same-shaped tensors on one device: float64 where the device has it, else Kahan-compensated.

    Kahan summation (Kahan 1965) keeps what each addition rounds away, c = (t − s) − y, and subtracts it from the next
    term, so the error of n float32 additions stays O(ε) instead of growing as O(n·ε).
    """

    def __init__(self, shape: int | tuple[int, ...], device: torch.device, dtype: torch.dtype | None = None) -> None:
        self.dtype = dtype or accumulate_dtype(device)
        self.total = torch.zeros(shape, dtype=self.dtype, device=device)
        self.lost = None if self.dtype == torch.float64 else torch.zeros_like(self.total)

    def add(self, values: Tensor) -> None:
        values = values.to(self.dtype)
        if self.lost is None:
            self.total += values
            return
        corrected = values - self.lost
        total = self.total + corrected
        self.lost = (total - self.total) - corrected  # the low-order bits of `corrected` that `total` could not hold
        self.total = total
