"""Bootstrap intervals: resample independent units (gradient draws, paths, images) with replacement and read the
percentiles of a statistic, so a reported number carries the spread of what it was measured on."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

RESAMPLES = 2000  # bootstrap resamples: the 2.5th and 97.5th percentiles settle to a few per mille
LEVEL = 0.95


def bootstrap(
    statistic: Callable[..., Tensor],
    samples: Sequence[Tensor],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The LEVEL percentile interval of `statistic(*weights)` when each of `samples` (independent groups: one
    model's draws, another's) is resampled with replacement, on its own.

    `statistic` receives, for each group, a (resamples, n_group) tensor of resampling counts (multinomial, summing to
    n_group) and returns (resamples,) values: weights rather than gathered copies, so a statistic that is a weighted
    mean or a quadratic form stays a matrix product."""
    generator = torch.Generator().manual_seed(seed)
    weights = []
    for group in samples:
        n = len(group)
        if n < 2:
            raise ValueError("a bootstrap needs at least two units in each group")
        picks = torch.randint(0, n, (resamples, n), generator=generator)
        weights.append(
            torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(
                1, picks, torch.ones_like(picks, dtype=torch.float64)
            )
        )
    values = statistic(*weights).double()  # a resample can leave a ratio 0/0 (every draw the same one): skipped
    tail = (1 - LEVEL) / 2
    low, high = torch.nanquantile(values, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(low), float(high)


def weighted_mean(weights: Tensor, values: Tensor) -> Tensor:
    """Each resample's mean of `values` (n,) under its counts `weights` (resamples, n)."""
    return weights @ values.double() / weights.sum(1)
