"""Importance-weighted NLL speed: k samples for every Fashion-MNIST test image, against the FLOP bound.

Times `likelihood_report` (the ELBO and the k-sample bound for each of the 10,000 test images) of the MLP 784-400-20
model, and prints it next to the FLOP bound at this machine's 2048x2048 fp32 matmul rate measured in the same run:
the encoder's FLOPs once per image (q(z|x) is computed once and sampled k times) plus the decoder's for each of the
k·N samples. Peak memory is the process's maximum resident set size.

    python benchmarks/evaluate_speed.py [--k 1000] [--images 10000] [--run runs/demo]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import torch
from train_speed import matmul_gflops  # type: ignore[import-not-found]

from vaekit import DataConfig, TrainConfig, load_run, train
from vaekit.analysis.evaluate import likelihood_report
from vaekit.data.sources import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--run", default=None, help="a trained run (default: train one for 1 epoch)")
    args = parser.parse_args()
    if args.run:
        model = load_run(args.run).model
    else:
        with tempfile.TemporaryDirectory() as out:
            model = train(TrainConfig(data=DataConfig(dataset="fashion-mnist"), epochs=1), out).model
    x = load_dataset(DataConfig(dataset="fashion-mnist")).test.x[: args.images]
    rate = matmul_gflops() * 1e9
    start = time.perf_counter()
    report = likelihood_report(model, x, "test", args.k)
    seconds = time.perf_counter() - start
    rate = (rate + matmul_gflops() * 1e9) / 2  # before and after, against drift
    encoder = 2 * (784 * 400 + 400 * 40)
    decoder = 2 * (20 * 400 + 400 * 784)
    bound = (len(x) * encoder + args.k * len(x) * decoder) / rate
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul {rate / 1e9:.0f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (ratios need an idle machine)")  # fmt: skip
    print(f"k = {args.k}, {len(x):,} Fashion-MNIST test images: NLL {report.nll:.2f} ± {report.nll_se:.2f}, "
          f"−ELBO {report.neg_elbo:.2f} nats")  # fmt: skip
    print(f"  time                                    {seconds:7.1f} s")
    print(f"  bound: encoder/image + decoder/sample   {bound:7.1f} s   ratio {seconds / bound:.2f}x  (target <= 2x)")
    print(f"  peak memory (max RSS of this process): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
