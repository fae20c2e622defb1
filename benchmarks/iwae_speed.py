"""Training speed of the importance-weighted bound: vaekit's step, which drops normalized weights below 1e-12, against
the same step carrying every weight (the plain log-sum-exp gradient), in one sitting on one model.

With k samples an image, most normalized weights of a trained model are tiny; carried into the backward pass, their
products underflow to subnormal floats, which x86 CPUs compute many times slower. The weights appear only after the
model has learned something, so the model first trains `--warmup-steps` steps, then the two cases alternate in blocks
of `--block` steps along one training trajectory (drift on a shared machine hits both alike). Each prints its median
milliseconds a step and the range over the blocks; the ratio is carried / dropped, with the host's fp32 2048³ matmul
rate beside it.

    python benchmarks/iwae_speed.py [--dataset fashion-mnist] [--k 50] [--blocks 4] [--block 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from train_speed import matmul_gflops  # type: ignore[import-not-found]

import vaekit.model.objectives as objectives
from vaekit import DataConfig, ModelConfig, TrainConfig
from vaekit.data.scoring import Scoring
from vaekit.data.sources import load_dataset
from vaekit.training.epoch import ObjectiveStep
from vaekit.training.loop import make_optimizer
from vaekit.training.runs import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--warmup-steps", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=4, help="blocks per case")
    parser.add_argument("--block", type=int, default=50, help="steps per block")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = TrainConfig(  # the paper's MNIST model (Burda et al. 2016), dynamically binarized
        model=ModelConfig(hidden=[200, 200], latent_dim=50, activation="tanh", likelihood="bernoulli"),
        data=DataConfig(dataset=args.dataset, data_dir=args.data_dir, binarize="dynamic", val_size=0),
        batch_size=args.batch_size,
        objective="iwae",
        k=args.k,
    )
    x_all = load_dataset(config.data).train.x
    config.model.input_shape = list(x_all.shape[1:])
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    step_fn = ObjectiveStep(model, config)
    scoring = Scoring.of(config.model, config.data)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x_all), generator=generator)
    position = 0

    def run(steps: int) -> float:
        """Train `steps` steps; milliseconds a step."""
        nonlocal position
        start = time.perf_counter()
        for _ in range(steps):
            if position + args.batch_size > len(x_all):
                position = 0
            x = scoring.input(x_all[order[position : position + args.batch_size]], generator, fresh=True)
            position += args.batch_size
            _, _, _, value = step_fn(x, generator, 1.0, len(x))
            optimizer.zero_grad(set_to_none=True)
            (-value.mean()).backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps * 1000

    gflops = matmul_gflops()
    run(args.warmup_steps)
    threshold = objectives.NEGLIGIBLE_WEIGHT
    times: dict[str, list[float]] = {"carried": [], "dropped": []}
    for _ in range(args.blocks):
        for case, negligible in (("carried", 0.0), ("dropped", threshold)):
            objectives.NEGLIGIBLE_WEIGHT = negligible
            times[case].append(run(args.block))
    objectives.NEGLIGIBLE_WEIGHT = threshold

    pixels = x_all[0].numel()
    print(
        f"{args.dataset}, IWAE k = {args.k}, batch {args.batch_size}, MLP {pixels}-200-200-50 tanh, Bernoulli decoder"
    )
    print(f"timed after {args.warmup_steps} training steps, in {args.blocks} blocks of {args.block} steps a case")
    print(f"host: fp32 2048^3 matmul {gflops:.0f} GFLOP/s, {torch.get_num_threads()} torch threads")
    for case, values in times.items():
        label = "every weight carried" if case == "carried" else f"weights < {threshold:g} dropped (vaekit)"
        print(f"  {label:<38} {statistics.median(values):7.1f} ms/step  ({min(values):.1f} to {max(values):.1f})")
    ratios = [carried / dropped for carried, dropped in zip(times["carried"], times["dropped"], strict=True)]
    print(
        f"  speed-up: {statistics.median(ratios):.2f}x  ({min(ratios):.2f} to {max(ratios):.2f} over {args.blocks} "
        "block pairs)"
    )


if __name__ == "__main__":
    main()
