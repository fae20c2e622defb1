"""Data-parallel cost: `torchrun --nproc-per-node 2` against 1 process on the same cores, the same global batch.

Both runs train the MLP 784-400-20 on Fashion-MNIST for 2 epochs through `vaekit train`; the rate is the training
images over each epoch's `seconds` in metrics.jsonl (the steps, the gradient all-reduce, and validation on rank 0).
The cores are split, not added: 1 process with N threads against N processes with 1 thread each, so on a 2-core
machine the ratio is the price of DistributedDataParallel's communication and of the smaller per-rank batch (~1x
is the best it can be). On a machine with a GPU per rank the same command shows the speed-up instead.

    python benchmarks/ddp_speed.py [--repeats 2] [--batch-size 128] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN_IMAGES = 55_000  # Fashion-MNIST's training split after the default 5,000 validation images
PARAMETERS = 784 * 400 + 400 + 400 * 40 + 40 + 20 * 400 + 400 + 400 * 784 + 784  # the MLP 784-400-20's


def rates(processes: int, threads: int, batch_size: int) -> list[float]:
    """One rate per epoch of a `vaekit train` launched by torchrun with `processes` ranks of `threads` threads."""
    with tempfile.TemporaryDirectory() as out:
        run = Path(out) / "run"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command += ["-m", "vaekit", "train", "--dataset", "fashion-mnist", "--epochs", "2"]
        command += ["--batch-size", str(batch_size), "--out", str(run)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(command, check=True, capture_output=True, env=env)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [TRAIN_IMAGES / record["seconds"] for record in records]


def allreduce_ms(processes: int, parameters: int) -> float:
    """The gradient all-reduce alone: `parameters` float32 values summed over `processes` ranks, ms per call."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += [__file__, "--probe", str(parameters)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return float(done.stdout.split()[-1])


def probe(parameters: int) -> None:
    """Under torchrun: time all_reduce of one gradient-sized tensor; rank 0 prints ms per call."""
    import time

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    values = torch.randn(parameters)
    for _ in range(5):
        dist.all_reduce(values)
    start = time.perf_counter()
    for _ in range(50):
        dist.all_reduce(values)
    if dist.get_rank() == 0:
        print(f"{(time.perf_counter() - start) / 50 * 1e3:.3f}")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--probe", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe(args.probe)
    cores = os.cpu_count() or 1
    per_rank = max(1, cores // args.processes)
    results: dict[str, list[float]] = {"1 process": [], f"{args.processes} processes": []}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        results["1 process"] += rates(1, cores, args.batch_size)
        results[f"{args.processes} processes"] += rates(args.processes, per_rank, args.batch_size)
    print(f"{cores} cores; MLP 784-400-20, global batch {args.batch_size}, gloo on CPU; vaekit train under torchrun, "
          f"{args.repeats} x 2 epochs, median (range)")  # fmt: skip
    print(f"  1 process, {cores} threads{'':14s}", end="")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for i, (name, values) in enumerate(results.items()):
        if i:
            print(f"  {args.processes} processes, {per_rank} thread(s) each  ", end="")
        print(f"{medians[name]:7.0f} samples/s ({min(values):.0f}-{max(values):.0f})")
    ratio = medians[f"{args.processes} processes"] / medians["1 process"]
    print(f"  {args.processes} processes / 1 process: {ratio:.2f}x")
    step_ms = 1e3 * args.batch_size / medians[f"{args.processes} processes"]
    reduce_ms = allreduce_ms(args.processes, PARAMETERS)
    print(f"  of a {step_ms:.1f} ms step on {args.processes} processes, the all-reduce of the {PARAMETERS:,} gradients "
          f"({PARAMETERS * 4 / 2**20:.1f} MiB) alone takes {reduce_ms:.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
