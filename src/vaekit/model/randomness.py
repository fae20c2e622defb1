"""Where a part's noise comes from: a generator, or one process's slice of a batch drawn in full (see BatchSlice)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BatchSlice:
    """Randomness for rows [start, stop) of a batch of `total`: every draw is made for the whole batch and sliced.

    Processes that train on slices of one global batch each pass their own slice of one shared generator; all of them
    draw the same numbers and keep their rows, so the noise an example gets does not depend on how many processes
    there are, and every process ends each step with the same generator state.
    """

    generator: torch.Generator
    start: int
    stop: int
    total: int


Randomness = torch.Generator | BatchSlice | None


def draw(
    sampler: Callable[..., Tensor], shape: Sequence[int], source: Randomness, like: Tensor, batch_dim: int
) -> Tensor:
    """`sampler(shape)` (torch.randn, torch.rand) with `like`'s dtype and device, from a generator or a BatchSlice
    whose batch is dimension `batch_dim` of `shape`."""
    if not isinstance(source, BatchSlice):
        return sampler(tuple(shape), generator=source, dtype=like.dtype, device=like.device)
    full = list(shape)
    full[batch_dim] = source.total
    whole = sampler(tuple(full), generator=source.generator, dtype=like.dtype, device=like.device)
    return whole.narrow(batch_dim, source.start, source.stop - source.start)
