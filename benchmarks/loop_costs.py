"""What each of the training loop's features costs, with it on and off, in one sitting.

The loop (`vaekit.training.epoch.train_epoch`) at Fashion-MNIST's default model, one case per feature:

- progress bar: the command line's rich bar (`vaekit.cli.progress.ProgressBar`), drawn to a buffer; the loop calls
  it every `STEP_EVERY` steps;
- weight averaging: `--average-decay 0.999`, one fused lerp after each optimizer step;
- NaN flag and sums: the step's row of sums and loss, folded and checked at sync points. Always on, so its cost is
  measured against a loop with both replaced by nothing;
- mid-epoch checkpoints: `--checkpoint-every` so short that state.pt is written at every sync point (the default,
  10 minutes, writes none inside an epoch of this size);
- noise for any process count: rank 0 of 2 (its collectives stubbed out, so only the drawing differs) draws the
  whole batch's noise and keeps its half; compared with one process training on batches of that half's size;
- precision wrapper: the fp32 default installs none; the case forces `NetworkForward` in place to show what the
  wrapper would cost if it were always there.

Each case's time a step is the median gap between optimizer steps, with the median gap across a sync point (where
the loop reads its flags, calls back and may checkpoint, every `STEP_EVERY` steps) weighted in once per
`STEP_EVERY` steps: medians, because this shared host's bursts of noise move a mean by more than the costs measured.
The cases run interleaved in short passes, one each per round, since the host's speed drifts from second to second;
each cost is the median (and interquartile range) over rounds of that round's ratio of the time with the feature to
the time without it.

    python benchmarks/loop_costs.py [--batches 45] [--rounds 30] [--dataset fashion-mnist]
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from vaekit import DataConfig, TrainConfig
from vaekit.cli.progress import ProgressBar
from vaekit.data.sources import Dataset, load_dataset
from vaekit.training import epoch as epoch_module
from vaekit.training.averaging import weight_average
from vaekit.training.callbacks import STEP_EVERY, Callback
from vaekit.training.distributed import Ranks
from vaekit.training.loop import make_optimizer
from vaekit.training.precision import CompileNotice, NetworkForward
from vaekit.training.runs import build_model, save_checkpoint


class UncoupledRanks(Ranks):
    """Rank 0 of `world` with every collective a no-op: the rank's own work, without the waiting for the others."""

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        return t


@dataclass
class Case:
    """One pass of the loop with one setting changed; `baseline` names the case it is compared with, and `off` says
    that this case turns a feature off (then the baseline is the time with it)."""

    name: str
    baseline: str
    off: bool = False
    config: Callable[[TrainConfig], TrainConfig] = lambda c: c
    callback: Callable[[], Callback | None] = lambda: None
    ranks: Ranks = field(default_factory=Ranks)
    averaged: bool = False
    checkpoints: bool = False
    wrapped: bool = False
    recording: bool = True


CASES = (
    Case("plain loop", "plain loop"),
    Case("progress bar", "plain loop", callback=lambda: ProgressBar(Console(file=io.StringIO(), force_terminal=True))),
    Case("weight averaging", "plain loop", config=lambda c: replace(c, average_decay=0.999), averaged=True),
    Case("no NaN flag or sums", "plain loop", off=True, recording=False),
    Case("mid-epoch checkpoints", "plain loop", config=lambda c: replace(c, checkpoint_every=1e-9), checkpoints=True),
    Case("half batch, 1 process", "half batch, 1 process", config=lambda c: replace(c, batch_size=c.batch_size // 2)),
    Case("rank 0 of 2", "half batch, 1 process", ranks=UncoupledRanks(0, 2)),
    Case("precision wrapper", "plain loop", wrapped=True),
)


def step_seconds(case: Case, base: TrainConfig, data: Dataset) -> float:
    """The time a step of `case`, from the gaps between its optimizer steps over one pass."""
    config = case.config(base)
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    stamps: list[float] = []
    average = weight_average(model, config.average_decay) if case.averaged else None
    if average is not None:
        optimizer.register_step_post_hook(lambda *_: average.update())
    optimizer.register_step_post_hook(lambda *_: stamps.append(time.perf_counter()))
    if case.wrapped:
        notice = CompileNotice()
        for net in (model.encoder, model.decoder):
            net.forward = NetworkForward(net, "fp32", False, notice)  # type: ignore[method-assign]
    generator = torch.Generator().manual_seed(0)
    callback = case.callback()
    with tempfile.TemporaryDirectory() as run_dir:

        def checkpoint(position: dict[str, Any]) -> None:
            save_checkpoint(Path(run_dir), model, optimizer, generator, [], position, average)

        add, fold = epoch_module.StepSums.add, epoch_module.StepSums.fold
        if not case.recording:
            epoch_module.StepSums.add = lambda *_: None  # type: ignore[assignment, method-assign]
            epoch_module.StepSums.fold = lambda *_: torch.zeros((), dtype=torch.long)  # type: ignore[method-assign]
        try:
            epoch_module.train_epoch(
                model, optimizer, data, config, 0, generator, callback, case.ranks,
                checkpoint=checkpoint if case.checkpoints else None,
            )  # fmt: skip
        finally:
            epoch_module.StepSums.add, epoch_module.StepSums.fold = add, fold  # type: ignore[method-assign]
            if isinstance(callback, ProgressBar):
                callback.progress.stop()  # the live bar holds stdout until it stops
    # Between stamps i and i + 1 lies step i + 1, and after step i a sync point's work when i % STEP_EVERY == 0.
    gaps = {i: b - a for i, (a, b) in enumerate(itertools.pairwise(stamps)) if i >= 5}  # past warm-up
    plain = statistics.median(gap for i, gap in gaps.items() if i % STEP_EVERY)
    synced = statistics.median(gap for i, gap in gaps.items() if i % STEP_EVERY == 0)
    return ((STEP_EVERY - 1) * plain + synced) / STEP_EVERY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=45)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", default="fashion-mnist")
    args = parser.parse_args()

    config = TrainConfig(data=DataConfig(dataset=args.dataset), batch_size=args.batch_size).validate()
    data = load_dataset(config.data)
    config.model.input_shape = list(data.shape)
    data.train.x = data.train.x[: args.batches * args.batch_size]
    times: dict[str, list[float]] = {case.name: [] for case in CASES}
    for _ in range(args.rounds):
        for case in CASES:
            times[case.name].append(step_seconds(case, config, data))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.dataset}, default model, batch "
          f"{args.batch_size}, {args.batches} steps a pass, {args.rounds} rounds")  # fmt: skip
    print(
        "time a step: median (interquartile range) over rounds; each feature's cost: the median (interquartile range)"
    )
    print("of its rounds' ratios, time with the feature / time without")
    for case in CASES:
        own = times[case.name]
        low, mid, high = (t * 1e3 for t in statistics.quantiles(own, n=4, method="inclusive"))
        line = f"  {case.name:24s} {mid:6.2f} ms ({low:.2f}-{high:.2f})"
        if case.baseline != case.name:
            pairs = zip(own, times[case.baseline], strict=True)
            ratios = [(b / a if case.off else a / b) - 1 for a, b in pairs]
            low, mid, high = statistics.quantiles(ratios, n=4, method="inclusive")
            line += f"  {mid:+6.1%} ({low:+.1%} to {high:+.1%})"
        print(line)


if __name__ == "__main__":
    main()
