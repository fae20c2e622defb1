"""The epoch's running record (`vaekit.training.epoch.StepSums`): each step writes a row, sync points fold them."""

from __future__ import annotations

import math

import torch

from vaekit.training.callbacks import STEP_EVERY
from vaekit.training.epoch import StepSums

Terms = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # log p(x|z), KL, extra term, loss


def per_step_terms(steps: int, seed: int = 0) -> list[Terms]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(16, generator=g) * 300,
            torch.rand(16, generator=g) * 30,
            torch.randn(16, generator=g),
            torch.randn(()),
        )
        for _ in range(steps)
    ]


def run(terms: list[Terms], first: int = 0, carried: torch.Tensor | None = None, stop: int | None = None) -> StepSums:
    """Steps `first`.. (`stop` excluded) as the epoch loop takes them: a row each, folded at every sync point."""
    sums = StepSums(torch.device("cpu"), first, carried)
    last = len(terms) - 1
    for step in range(first, len(terms) if stop is None else stop):
        sums.add(step, *terms[step])
        if step % STEP_EVERY == 0 or step == last:
            assert int(sums.fold(step)) == 0
    return sums


def test_the_totals_are_the_float64_sums_of_every_step() -> None:
    terms = per_step_terms(95)
    expected = torch.stack([torch.stack([t.sum(dtype=torch.float64) for t in step[:3]]) for step in terms]).sum(0)
    torch.testing.assert_close(run(terms).total, expected, rtol=1e-6, atol=0)


def test_an_epoch_resumed_at_a_sync_point_folds_to_the_same_bits() -> None:
    terms = per_step_terms(95, seed=1)
    whole = run(terms).total
    cut = 2 * STEP_EVERY + 1  # a checkpoint is taken after the sync point at step 2 · STEP_EVERY
    first_half = run(terms, stop=cut).total.clone()
    assert torch.equal(run(terms, first=cut, carried=first_half).total, whole)


def test_a_step_without_an_extra_term_records_zero_for_it() -> None:
    sums = StepSums(torch.device("cpu"), 0)
    sums.add(0, torch.ones(4), torch.full((4,), 2.0), None, torch.tensor(1.0))
    sums.fold(0)
    assert sums.total.tolist() == [4.0, 8.0, 0.0]


def test_fold_names_the_first_step_whose_loss_was_not_finite() -> None:
    terms = per_step_terms(STEP_EVERY + 1)
    terms[7] = (*terms[7][:3], torch.tensor(math.nan))
    terms[9] = (*terms[9][:3], torch.tensor(math.inf))
    sums = StepSums(torch.device("cpu"), 0)
    sums.add(0, *terms[0])
    assert int(sums.fold(0)) == 0
    for step in range(1, STEP_EVERY + 1):
        sums.add(step, *terms[step])
    assert int(sums.fold(STEP_EVERY)) == 8  # 1 + step 7: the steps count from 1 in messages
