"""Where and how the networks run: device names, the dtype sums accumulate in, mixed precision and torch.compile.

Every command runs where the model is. An analysis moves its input to `model.device` at its boundary, draws its
noise from a generator on that device (`generator_on`), accumulates on the device (`RunningSum`, float64 where the
device has it) and moves results to the CPU only to hand them to numpy, a picture or JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.model import VAE

DEVICES = "auto | cpu | cuda | cuda:N | mps"
AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}  # by config.PRECISIONS
log = logging.getLogger(__name__)


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


class NetworkForward:
    """A network's own forward, run under autocast (output cast back to float32, so the likelihood and the KL are
    computed in float32) and, with `compile`, through torch.compile, falling back to eager where compiling fails."""

    def __init__(self, net: nn.Module, precision: str, compile: bool, notice: CompileNotice) -> None:
        self.settings = (precision, compile)
        self.notice = notice
        self.eager: Callable[[Tensor], Tensor] = net.forward
        self.dtype = AUTOCAST[precision]
        self.compiled: Callable[[Tensor], Tensor] | None = None
        if compile:
            try:
                self.compiled = torch.compile(self.run)
            except Exception as error:  # an unsupported Python or platform refuses at once
                self.fall_back(error)

    def run(self, x: Tensor) -> Tensor:
        if self.dtype is None:
            return self.eager(x)
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.eager(x)
        return out.float()

    def __call__(self, x: Tensor) -> Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as error:  # no C compiler, an unsupported device: compiling fails at the first call
                out = self.run(x)  # a fault in the input itself raises here, exactly as it would uncompiled
                self.fall_back(error)
                return out
        return self.run(x)

    def fall_back(self, error: Exception) -> None:
        self.compiled = None
        self.notice.give(error)


class CompileNotice:
    """One line, once per model, when torch.compile cannot be used: the networks then run eager."""

    def __init__(self) -> None:
        self.given = False

    def give(self, error: Exception) -> None:
        if not self.given:
            self.given = True
            reason = (str(error).strip().splitlines() or [""])[0][:160]
            kind = type(error).__name__
            log.warning(f"--compile: torch.compile is unavailable here ({kind}: {reason}); running eager")


def prepare_networks(model: VAE, precision: str = "fp32", compile: bool = False) -> None:
    """Run the model's encoder and decoder in `precision` and, with `compile`, compiled. The weights and their names
    are untouched, so checkpoints do not depend on these settings; calling again with the same settings is free."""
    if precision not in AUTOCAST:
        raise VaekitError(f"unknown precision {precision!r}: use one of {', '.join(AUTOCAST)}")
    notice = CompileNotice()
    for net in (model.encoder, model.decoder):
        installed = vars(net).get("forward")
        if getattr(installed, "settings", ("fp32", False)) == (precision, compile):
            continue
        vars(net).pop("forward", None)  # back to the network's own forward
        if (precision, compile) != ("fp32", False):
            net.forward = NetworkForward(net, precision, compile, notice)  # type: ignore[method-assign]
