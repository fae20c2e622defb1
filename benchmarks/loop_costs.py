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

Each case's time is the mean time between optimizer steps over one pass (a mean, so the work done every
`STEP_EVERY` steps counts); the cases run interleaved, one pass each per round, and each cost is the median (and
range) over rounds of that round's own ratio of the time with the feature to the time without it.

    python benchmarks/loop_costs.py [--batches 150] [--rounds 5] [--dataset fashion-mnist]
"""

from __future__ import annotations

import argparse
import io
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
from vaekit.training.callbacks import Callback
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
    """The mean time between optimizer steps over one pass of `case`."""
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
    first = 5  # past the first steps' allocations
    return (stamps[-1] - stamps[first]) / (len(stamps) - 1 - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
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
    print("time a step: median (range) over rounds; the feature's cost: median (range) of each round's with / without")
    for case in CASES:
        own = times[case.name]
        line = f"  {case.name:24s} {statistics.median(own) * 1e3:6.2f} ms ({min(own) * 1e3:.2f}-{max(own) * 1e3:.2f})"
        if case.baseline != case.name:
            pairs = zip(own, times[case.baseline], strict=True)
            ratios = [(b / a if case.off else a / b) - 1 for a, b in pairs]
            line += f"  {statistics.median(ratios):+6.1%} ({min(ratios):+.1%} to {max(ratios):+.1%})"
        print(line)


if __name__ == "__main__":
    main()
