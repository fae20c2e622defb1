"""How the networks run: mixed precision (autocast) and torch.compile, installed on a model's encoder and decoder
without touching their weights, so checkpoints do not depend on these settings."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vaekit.errors import VaekitError
from vaekit.model.vae import VAE

AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}  # by config.PRECISIONS
log = logging.getLogger(__name__)


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
        if x.device.type == "meta":  # a count of shapes (vaekit.memory.layer_outputs): nothing to cast or compile
            return self.eager(x)
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
