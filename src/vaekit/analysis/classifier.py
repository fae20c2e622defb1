"""A small CNN classifier, trained once per dataset and cached, whose penultimate layer is vaekit's feature space.

Inception features (FID) describe ImageNet photographs; for 28x28 greyscale clothes or digits a classifier trained
on the dataset's own labels is the better-matched yardstick. It is trained on the training split only, cached under
~/.cache/vaekit/classifiers keyed by dataset name and content, and reported with its test accuracy.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor, nn

from vaekit.data.sources import CACHE_ROOT, Dataset, to_float
from vaekit.errors import VaekitError
from vaekit.files import atomic_write, atomic_write_json
from vaekit.small_files import read_json

FEATURE_DIM = 128
MIN_STEPS = 1000  # small datasets get more epochs so the classifier is still trained properly


class Classifier(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(32 * 16, FEATURE_DIM), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURE_DIM, classes)

    def features(self, x: Tensor) -> Tensor:
        features: Tensor = self.body(x)
        return features

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.head(self.features(x))
        return logits


@dataclass
class FeatureSpace:
    """The trained classifier, and what a report should say about it."""

    model: Classifier
    test_accuracy: float
    key: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed(self, x: Tensor, chunk: int = 2000) -> Tensor:
        """(N, C, H, W) images (uint8 or float in [0, 1], on any device) to (N, 128) features on the classifier's."""
        self.model.eval()
        chunks = (x[i : i + chunk].to(self.device) for i in range(0, len(x), chunk))  # uint8 travels, 4× less
        return torch.cat([self.model.features(to_float(images)) for images in chunks])

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.model.head(self.embed(x)).argmax(-1).cpu()  # type: ignore[no-any-return]


def dataset_key(data: Dataset) -> str:
    """Name plus a hash of the training images and labels: a changed dataset never reuses a stale classifier."""
    digest = hashlib.sha256(data.train.x.contiguous().numpy().tobytes())
    if data.train.y is not None:
        digest.update(data.train.y.numpy().tobytes())
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(data.name).name)}-{digest.hexdigest()[:16]}"


def feature_space(
    data: Dataset, cache: Path | None = None, seed: int = 0, device: torch.device | None = None
) -> FeatureSpace | None:
    """The cached classifier for `data`, trained now (on `device`) if missing, and run on `device` (the CPU by
    default); None when the data has no labels."""
    if data.train.y is None or data.test.y is None:
        return None
    # The cache is the user's own folder, not a shared run folder: a link they made to put it elsewhere is followed.
    folder = (cache or Path(CACHE_ROOT).expanduser() / "classifiers").resolve()
    key = dataset_key(data)
    classes = int(max(data.train.y.max(), data.test.y.max())) + 1
    model = Classifier(data.shape[0], classes)
    weights, info = folder / f"{key}.safetensors", folder / f"{key}.json"
    cached = _cached_accuracy(model, weights, info)
    if cached is not None:
        return FeatureSpace(model.to(device).eval(), cached, key)
    train_classifier(model, data, seed, device)
    space = FeatureSpace(model.eval(), 0.0, key)
    space.test_accuracy = float((space.predict(data.test.x) == data.test.y).float().mean())
    atomic_write(weights, save({k: v.cpu().contiguous() for k, v in model.state_dict().items()}))
    atomic_write_json(info, {"dataset": data.name, "test_accuracy": space.test_accuracy, "classes": classes})
    return space


def _cached_accuracy(model: Classifier, weights: Path, info: Path) -> float | None:
    """Load the cached classifier into `model` and return its recorded test accuracy; None when there is no cache or
    it is damaged (then it is trained again and rewritten)."""
    if not (weights.is_file() and info.is_file()):
        return None
    try:
        accuracy = read_json(info, "")["test_accuracy"]
        model.load_state_dict(load_file(weights))
    except (VaekitError, OSError, KeyError, TypeError, RuntimeError, SafetensorError):
        return None
    return float(accuracy) if isinstance(accuracy, int | float) else None


def train_classifier(
    model: Classifier, data: Dataset, seed: int, device: torch.device | None = None, batch_size: int = 128
) -> None:
    """Train `model` on `device` (moving it there); initialisation and batch order are drawn on the CPU, so they do
    not depend on the device."""
    assert data.train.y is not None
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.cpu().apply(lambda m: m.reset_parameters() if isinstance(m, nn.Conv2d | nn.Linear) else None)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps_per_epoch = math.ceil(len(data.train) / batch_size)
    epochs = max(3, math.ceil(MIN_STEPS / steps_per_epoch))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, y = data.train.x[idx].to(device), data.train.y[idx].to(device)
            loss = F.cross_entropy(model(to_float(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
