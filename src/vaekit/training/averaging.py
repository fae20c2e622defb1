"""Polyak averaging of the weights (Polyak & Juditsky 1992): a moving average of every parameter, updated after each
optimizer step, which the run evaluates, draws and saves as its model in place of the last step's weights.

SGD's iterates wander around a minimum at the scale the learning rate sets; their average sits nearer its middle, so
at a constant rate it does much of what stepping the rate down does. Training itself is unchanged: the optimizer steps
the raw weights, which state.pt keeps beside the average so that a resume continues both exactly.

`torch.optim.swa_utils.AveragedModel` does the same job for any averaging rule, but finds and groups the tensors at
every step: 0.16 s an epoch of the paper's MNIST model (600 steps) against 0.07 s for the one fused lerp a step here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.errors import VaekitError
from vaekit.model.vae import VAE


class WeightAverage(nn.Module):
    """An averaged copy (`module`) of `model`'s weights, which the optimizer steps in place: after step t its
    parameters are the plain mean of the weights after steps 1..t while t ≤ 1/(1 − decay), then an exponential
    average with that horizon. A short run is so not dominated by its initial weights, as a bare exponential average
    would be. Buffers (a fixed σ, say) are the model's constants, copied once."""

    def __init__(self, model: VAE, decay: float) -> None:
        super().__init__()
        self.module: VAE = copy.deepcopy(model).requires_grad_(False)
        self.decay, self.steps = decay, 0
        # Both lists, once: walking the modules for them at every step cost more than the average itself.
        self.averaged: list[Tensor] = list(self.module.parameters())
        self.current = [p.detach() for p in model.parameters()]  # views of the weights the optimizer updates

    def update(self) -> None:
        """Average in the model's weights after one more optimizer step (the first step's are copied: weight 1)."""
        self.steps += 1
        torch._foreach_lerp_(self.averaged, self.current, max(1.0 - self.decay, 1.0 / self.steps))

    def checkpoint(self) -> dict[str, Any]:
        """What state.pt keeps of the average: its step count and its weights (on the CPU)."""
        weights = {name: t.detach().cpu().contiguous() for name, t in self.module.state_dict().items()}
        return {"steps": self.steps, "weights": weights}


def weight_average(model: VAE, decay: float) -> WeightAverage | None:
    """An averaged copy of `model`, or None when `decay` is 0 (no averaging)."""
    return WeightAverage(model, decay) if decay else None


def saved_average(state: dict[str, Any], source: Path) -> dict[str, Any] | None:
    """A checkpoint's weight average, checked (None when the run keeps none)."""
    average = state.get("average")
    if average is None:
        return None
    if not (
        isinstance(average, dict)
        and isinstance(average.get("steps"), int)
        and isinstance(average.get("weights"), dict)
        and all(isinstance(t, Tensor) for t in average["weights"].values())
    ):
        raise VaekitError(f"{source} holds a damaged weight average: delete it to restart the run")
    return average
