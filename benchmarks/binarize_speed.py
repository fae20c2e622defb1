"""Dynamic binarization's cost: a fresh Bernoulli draw of every pixel of every training batch, made the two ways
`vaekit.data.scoring.bernoulli_draw` knows, on MNIST-sized batches in one sitting.

- bernoulli: torch.bernoulli(p, generator), the stream seeded draws (evaluation's fixed test set) keep;
- uniform compare: (U[0, 1) < p), what training's fresh draws use.

The two run interleaved, so drift on a shared machine hits them alike; each prints its median and range over the
repeats, in seconds per epoch (60,000 images by default), and the ratio of the medians.

    python benchmarks/binarize_speed.py [--batch-size 100] [--repeats 5] [--images 60000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaekit.data.scoring import bernoulli_draw

PIXELS = 784


def epoch_seconds(p: torch.Tensor, batch_size: int, fresh: bool) -> float:
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for first in range(0, len(p), batch_size):
        bernoulli_draw(p[first : first + batch_size], generator, fresh)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=60_000)
    args = parser.parse_args()
    p = torch.rand(args.images, PIXELS, generator=torch.Generator().manual_seed(1))
    seconds: dict[str, list[float]] = {"bernoulli": [], "uniform compare": []}
    for _ in range(args.repeats):
        seconds["bernoulli"].append(epoch_seconds(p, args.batch_size, fresh=False))
        seconds["uniform compare"].append(epoch_seconds(p, args.batch_size, fresh=True))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images:,} images of {PIXELS} pixels, "
          f"batch {args.batch_size}; {args.repeats} repeats, median (range)")  # fmt: skip
    for name, values in seconds.items():
        print(f"  {name:16s} {statistics.median(values):.3f} s an epoch ({min(values):.3f}-{max(values):.3f})")
    ratio = statistics.median(seconds["bernoulli"]) / statistics.median(seconds["uniform compare"])
    print(f"  bernoulli / uniform compare: {ratio:.2f}x")


if __name__ == "__main__":
    main()
