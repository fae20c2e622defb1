"""Training speed: vaekit's in-memory trainer against the common tutorial pipeline, in one process, same model.

The tutorial pipeline (pytorch/examples `vae/main.py`) is rebuilt without torchvision: a Dataset whose __getitem__
turns one uint8 image into a PIL image and back into a float tensor (what torchvision's MNIST + ToTensor do), a
DataLoader(batch_size=128, shuffle=True), the tutorial's own model (fc1, fc21, fc22, fc3, fc4) and loss.

Both are also expressed as a fraction of this machine's fp32 matmul rate, measured here with a 2048x2048 matmul;
the MLP's training FLOPs are counted as 3x its forward matmul FLOPs.

    python benchmarks/train_speed.py [--batches 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vaekit import DataConfig, TrainConfig
from vaekit.data import load_dataset
from vaekit.runs import build_model
from vaekit.train import SilentReporter, make_optimizer, train_epoch

WIDTHS = (784, 400, 20)


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * 2 * n**3 / (time.perf_counter() - start) / 1e9


def training_flops_per_sample() -> float:
    d, h, z = WIDTHS
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
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h1), self.fc22(h1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def tutorial_rate(images: torch.Tensor, labels: torch.Tensor, batches: int) -> float:
    model = TutorialVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TutorialImages(images, labels), batch_size=128, shuffle=True)
    seen, train_loss, start = 0, 0.0, time.perf_counter()
    for i, (x, _) in enumerate(loader):
        if i == batches:
            break
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        optimizer.zero_grad()
        loss = bce + kld
        loss.backward()
        train_loss += loss.item()  # the tutorial accumulates the loss every step
        optimizer.step()
        seen += len(x)
    return seen / (time.perf_counter() - start)


def vaekit_rate(config: TrainConfig, data, batches: int) -> float:  # type: ignore[no-untyped-def]
    model = build_model(config)
    optimizer = make_optimizer(model, config)
    data.train.x = data.train.x[: batches * config.batch_size]
    start = time.perf_counter()
    train_epoch(model, optimizer, data, config, 0, torch.Generator().manual_seed(0), SilentReporter())
    return len(data.train.x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = TrainConfig(data=DataConfig(dataset="fashion-mnist")).validate()
    full = load_dataset(config.data)
    config.model.input_shape = list(full.shape)
    images, labels = full.train.x[:, 0].contiguous(), full.train.y
    flops = training_flops_per_sample()
    results: dict[str, list[float]] = {"vaekit": [], "tutorial": [], "matmul": []}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        results["matmul"].append(matmul_gflops())
        results["vaekit"].append(vaekit_rate(config, load_dataset(config.data), args.batches))
        results["tutorial"].append(tutorial_rate(images, labels, args.batches))
    peak = statistics.median(results["matmul"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 2048x2048 matmul: {peak:.0f} GFLOP/s")
    print(f"MLP 784-400-20, batch 128, Adam; {args.batches} batches x {args.repeats} repeats (median)")
    rates = {name: statistics.median(results[name]) for name in ("vaekit", "tutorial")}
    for name, rate in rates.items():
        achieved = rate * flops / 1e9
        print(f"  {name:9s} {rate:9.0f} samples/s  {achieved:6.1f} GFLOP/s  = {achieved / peak:6.1%} of matmul rate")
    print(f"  ratio vaekit / tutorial: {rates['vaekit'] / rates['tutorial']:.2f}x  (target >= 2.5x; >= 35% of matmul)")


if __name__ == "__main__":
    main()
