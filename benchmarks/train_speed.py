"""Training speed: `vaekit train` as a user runs it, vaekit's training loop, a minimal hand-written PyTorch loop and
the common tutorial pipeline, on the same model, in one sitting.

- tutorial: pytorch/examples `vae/main.py` rebuilt without torchvision: a Dataset whose __getitem__ turns one uint8
  image into a PIL image and back into a float tensor (torchvision's MNIST + ToTensor), a DataLoader(batch_size=128,
  shuffle=True), the tutorial's own model (fc1, fc21, fc22, fc3, fc4) and loss;
- minimal: the same networks and loss written as the shortest eager loop PyTorch allows (tensors in memory, one
  randn, fused Adam, nothing else): what any trainer pays for the framework alone at this batch size;
- loop: `vaekit.training.epoch.train_epoch`, in process;
- command line: `vaekit train --epochs 2` in a fresh process; its rate is the training images over the two epochs'
  `train_seconds` in metrics.jsonl (the training passes, as the minimal loop's), and beside it over their `seconds`
  (with the validation passes): what a user's run achieves.

Every figure is also a fraction of this machine's fp32 2048x2048 matmul rate, measured in the same run; the MLP's
training FLOPs are counted as 3x its forward matmul FLOPs. The cases run interleaved, one of each per repeat, so drift
on a shared machine hits them alike; each prints its median and range over the repeats, and each ratio is the median
(and range) of the repeats' own ratios, a pair measured minutes apart rather than medians taken from different ones.

    python benchmarks/train_speed.py [--batches 300] [--repeats 5] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vaekit import DataConfig, TrainConfig
from vaekit.data.sources import load_dataset
from vaekit.training.epoch import train_epoch
from vaekit.training.loop import make_optimizer
from vaekit.training.runs import build_model

HIDDEN, LATENT = 400, 20  # vaekit's default MLP; the input width is the images' pixels (784 for Fashion-MNIST)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9


def training_flops_per_sample(d: int) -> float:
    h, z = HIDDEN, LATENT
    forward = 2 * (d * h + h * 2 * z + z * h + h * d)
    return 3 * forward


class TutorialImages(TorchDataset[tuple[torch.Tensor, int]]):
    """torchvision's MNIST.__getitem__ followed by ToTensor(), one sample at a time: uint8 -> PIL -> float tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.data, self.targets = images, labels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index], int(self.targets[index])
        picture = Image.fromarray(img.numpy(), mode="L")
        pixels = torch.from_numpy(np.array(picture, np.uint8, copy=True))  # ToTensor
        pixels = pixels.view(picture.size[1], picture.size[0], 1).permute((2, 0, 1)).contiguous()
        return pixels.to(dtype=torch.get_default_dtype()).div(255), target


class TutorialVAE(nn.Module):
    def __init__(self, pixels: int = 784) -> None:
        super().__init__()
        self.pixels = pixels
        self.fc1, self.fc21, self.fc22 = nn.Linear(pixels, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, pixels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x.view(-1, self.pixels)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def tutorial_rate(images: torch.Tensor, labels: torch.Tensor, batches: int, batch_size: int) -> float:
    model = TutorialVAE(images[0].numel())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TutorialImages(images, labels), batch_size=batch_size, shuffle=True)
    seen, train_loss, start = 0, 0.0, time.perf_counter()
    for i, (x, _) in enumerate(loader):
        if i == batches:
            break
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x.view(-1, model.pixels), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        optimizer.zero_grad()
        loss = bce + kld
        loss.backward()
        train_loss += loss.item()  # the tutorial accumulates the loss every step
        optimizer.step()
        seen += len(x)
    return seen / (time.perf_counter() - start)


def minimal_rate(images: torch.Tensor, batches: int, batch_size: int) -> float:
    """The floor: vaekit's networks (784-400-40 | 20-400-784) and loss in the fewest eager PyTorch calls."""
    d, h, z = images[0].numel(), HIDDEN, LATENT
    encoder = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 2 * z))
    decoder = nn.Sequential(nn.Linear(z, h), nn.ReLU(), nn.Linear(h, d))
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, fused=True)
    x_all = images[: batches * batch_size].reshape(-1, d).float().div(255)
    order = torch.randperm(len(x_all))
    start = time.perf_counter()
    for i in range(0, len(x_all), batch_size):
        x = x_all[order[i : i + batch_size]]
        mu, log_var = encoder(x).chunk(2, dim=-1)
        code = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        log_px = -F.binary_cross_entropy_with_logits(decoder(code), x, reduction="sum")
        kl = 0.5 * torch.sum(mu.pow(2) + log_var.exp() - 1 - log_var)
        loss = (kl - log_px) / len(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(x_all) / (time.perf_counter() - start)


def loop_rate(config: TrainConfig, batches: int) -> float:
    data = load_dataset(config.data)
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    data.train.x = data.train.x[: batches * config.batch_size]
    start = time.perf_counter()
    train_epoch(model, optimizer, data, config, 0, torch.Generator().manual_seed(0))
    return len(data.train.x) / (time.perf_counter() - start)


def command_line_rates(dataset: str, batch_size: int, train_images: int) -> tuple[float, float]:
    """`vaekit train --epochs 2` in its own process: the training images per second of its training passes, and of
    its whole epochs (validation included), from the epochs' own clocks in metrics.jsonl."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vaekit", "train", "--dataset", dataset, "--epochs", "2"]
        command += ["--batch-size", str(batch_size), "--out", str(Path(out) / "run")]
        subprocess.run(command, check=True, capture_output=True)
        records = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    images = train_images * len(records)
    return images / sum(r["train_seconds"] for r in records), images / sum(r["seconds"] for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", default="fashion-mnist", help="a built-in dataset (digits: a quick check)")
    args = parser.parse_args()

    config = TrainConfig(data=DataConfig(dataset=args.dataset), batch_size=args.batch_size).validate()
    full = load_dataset(config.data)
    config.model.input_shape = list(full.shape)
    images, labels = full.train.x[:, 0].contiguous(), full.train.y
    results: dict[str, list[float]] = {name: [] for name in ("command line", "with validation", "loop", "minimal")}
    results.update(tutorial=[], matmul=[])

    def command_line() -> None:
        training, whole = command_line_rates(args.dataset, args.batch_size, len(full.train))
        results["command line"].append(training)
        results["with validation"].append(whole)

    cases: list[Callable[[], None]] = [
        lambda: results["matmul"].append(matmul_gflops()),
        command_line,
        lambda: results["loop"].append(loop_rate(config, args.batches)),
        lambda: results["minimal"].append(minimal_rate(images, args.batches, args.batch_size)),
        lambda: results["tutorial"].append(tutorial_rate(images, labels, args.batches, args.batch_size)),
    ]
    for repeat in range(args.repeats):  # interleaved, so drift on a shared machine hits every case alike,
        for case in cases if repeat % 2 == 0 else cases[::-1]:  # and in turn first and last, so no order wins
            case()
    peak = statistics.median(results["matmul"])
    spread = f"{min(results['matmul']):.0f}-{max(results['matmul']):.0f}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 2048x2048 matmul: {peak:.0f} GFLOP/s "
          f"(range {spread})")  # fmt: skip
    pixels = images[0].numel()
    print(f"{args.dataset}, MLP {pixels}-{HIDDEN}-{LATENT}, batch {args.batch_size}, Adam; {args.repeats} repeats, "
          "median (range)")  # fmt: skip
    flops = training_flops_per_sample(pixels)
    for name, values in results.items():
        if name == "matmul":
            continue
        rate, achieved = statistics.median(values), statistics.median(values) * flops / 1e9
        print(f"  {name:15s} {rate:7.0f} samples/s ({min(values):.0f}-{max(values):.0f})  {achieved:5.1f} GFLOP/s = "
              f"{achieved / peak:5.1%} of matmul rate")  # fmt: skip
    print("ratios, each the median (range) of the repeats' own:")
    for top, bottom in (("command line", "minimal"), ("with validation", "minimal"), ("loop", "minimal")):
        print(f"  {top + ' / ' + bottom + ':':28s} {paired(results[top], results[bottom])}")
    print(f"  {'loop / tutorial:':28s} {paired(results['loop'], results['tutorial'])}")


def paired(top: list[float], bottom: list[float]) -> str:
    """The median and range of top[i] / bottom[i]: each ratio from one repeat's pair."""
    ratios = [a / b for a, b in zip(top, bottom, strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


if __name__ == "__main__":
    main()
