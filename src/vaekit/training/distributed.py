"""Data parallelism on PyTorch's own engine: `torchrun` launches the processes, `torch.distributed` connects them,
DistributedDataParallel averages the gradients. This module is what the trainer needs of it, and nothing more.

One command means the same optimisation on 1 or N processes: `--batch-size` is the global batch, each rank takes a
contiguous slice of it, and every rank draws the global batch's randomness from the shared generator and keeps its
slice (`distributions.BatchSlice`), so every rank holds the same generator state and a checkpoint resumes on any
number of processes. Only rank 0 writes; metrics are all-reduced sums divided by true counts.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vaekit.errors import VaekitError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ones `torchrun` started (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def slice_of(self, batch: int) -> tuple[int, int]:
        """[start, stop) of this rank's rows of a global batch: contiguous, sizes differing by at most one, every row
        in exactly one slice (a last batch that does not split evenly included)."""
        base, extra = divmod(batch, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def sum(self, t: Tensor) -> Tensor:
        """The sum of `t` over all ranks (in place, and returned)."""
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def max(self, t: Tensor) -> Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def share(self, objects: list[Any]) -> list[Any]:
        """Rank 0's `objects` on every rank (pickled between these processes only; nothing is read from disk)."""
        if self.world > 1:
            dist.broadcast_object_list(objects, src=0)
        return objects

    def agree(self, error: str | None) -> None:
        """Raise on every rank when rank 0 met a VaekitError that the others could not see (a held lock, a run that
        already finished), so that no rank waits forever at the next collective."""
        error = self.share([error])[0]
        if error:
            raise VaekitError(error)


def launched_ranks() -> Ranks:
    """Ranks from torchrun's environment, without touching torch.distributed."""
    return Ranks(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def start(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA), and pick this rank's GPU."""
    ranks = launched_ranks()
    if ranks.world == 1:
        return ranks, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return ranks, device


# How long a leaving rank holds no GIL, so that the collectives' worker threads can let go of its tensors (see stop).
WORKERS_FINISH_S = 0.1


def stop() -> None:
    """Leave the process group, then give its worker threads the GIL before the interpreter finalizes.

    DistributedDataParallel keeps torch's process group alive past destroy_process_group (torch 2.13: a DDP module,
    even one deleted and collected, leaves the group's worker threads running). A gloo worker still dropping the last
    collective's tensors needs the GIL; if it asks while the interpreter finalizes, the process aborts after a run that
    succeeded ("terminate called without an active exception", seen in 1 launch in 40 of two CPU ranks). Sleeping
    releases the GIL.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(WORKERS_FINISH_S)


def data_parallel(module: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `module` when there is more than one rank; the module itself otherwise."""
    if ranks.world == 1:
        return module
    ids: Any = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
