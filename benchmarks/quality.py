"""Quality after a fixed budget: vaekit against the common tutorial pipeline, same model, batch and learning rate.

Trains the MLP 784-400-20 VAE for N epochs on Fashion-MNIST (grey values as Bernoulli targets, as tutorials do)
with (a) the tutorial pipeline (pytorch/examples `vae/main.py`, rebuilt without torchvision: all 60,000 training
images, test loss = summed BCE + KL over the test set / 10,000) and (b) `vaekit.training.loop` with its defaults
(55,000 train + 5,000 validation) and with --val-size 0 (all 60,000, as the tutorial). Prints test −ELBO in nats.

Nothing here is chosen (benchmarks/PROTOCOL.md): every arm's settings are fixed, no epoch is selected, and each
arm's test split is scored once. The --val-size 0 arm is there to train on the tutorial's 60,000 images, like for
like, not to tune anything.

    python benchmarks/quality.py [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from train_speed import TutorialImages, TutorialVAE  # type: ignore[import-not-found]

from vaekit import DataConfig, TrainConfig, train
from vaekit.data.sources import load_dataset


def tutorial_test_loss(epochs: int, seed: int = 1) -> float:
    torch.manual_seed(seed)
    data = load_dataset(DataConfig(dataset="fashion-mnist", val_size=0))
    train_loader = DataLoader(
        TutorialImages(data.train.x[:, 0].contiguous(), data.train.y), batch_size=128, shuffle=True
    )
    test_loader = DataLoader(TutorialImages(data.test.x[:, 0].contiguous(), data.test.y), batch_size=128)
    model = TutorialVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_of(x: torch.Tensor) -> torch.Tensor:
        recon, mu, logvar = model(x)
        bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
        return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

    for _ in range(epochs):
        model.train()
        for x, _ in train_loader:
            optimizer.zero_grad()
            loss_of(x).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        return sum(loss_of(x).item() for x, _ in test_loader) / len(test_loader.dataset)  # type: ignore[arg-type]


def vaekit_test_loss(epochs: int, val_size: int) -> float:
    config = TrainConfig(data=DataConfig(dataset="fashion-mnist", val_size=val_size), epochs=epochs)
    with tempfile.TemporaryDirectory() as out:
        run = train(config, out)
    assert run.final is not None
    return float(-run.final["test"]["elbo"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    print(f"Fashion-MNIST, MLP 784-400-20, batch 128, Adam lr 1e-3, {args.epochs} epochs; test −ELBO, nats/image")
    for name, run in (
        ("tutorial pipeline (60,000 train)", lambda: tutorial_test_loss(args.epochs)),
        ("vaekit defaults (55,000 train + 5,000 val)", lambda: vaekit_test_loss(args.epochs, 5000)),
        ("vaekit --val-size 0 (60,000 train)", lambda: vaekit_test_loss(args.epochs, 0)),
    ):
        start = time.perf_counter()
        print(f"  {name:45s} {run():8.2f}   ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
