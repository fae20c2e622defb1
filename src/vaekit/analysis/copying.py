"""Does a model copy its training images? The data-copying test of Meehan, Chaudhuri & Dasgupta (2020), in its simplest
form: against the *whole* training set, are the model's samples nearer their nearest training image than held-out
images (which the model never saw) are to theirs?

If samples were fresh draws from the data's law, a sample and a held-out image would be equally likely to be the
farther of the two: `farther` = P(sample's distance > held-out image's distance) is 0.5. A model that copies puts its
samples nearer the training set, well below 0.5; one that underfits puts them farther, above it. Comparing samples
with a subset of the training set instead (as an audit of a few thousand images would) cannot see copying: a copy of an
image outside the subset is as far from it as anything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.analysis.intervals import bootstrap
from vaekit.analysis.sample_quality import nearest

MAX_HELD_OUT = 2000  # held-out images compared; the bootstrap's cost grows with samples × held-out


@dataclass
class CopyingAudit:
    space: str  # "pixels" or "classifier features"
    training_images: int  # the whole training split, every image a candidate neighbour
    held_out_images: int
    samples: int
    sample_to_train: float  # mean distance of a sample to its nearest training image
    held_out_to_train: float  # mean distance of a held-out image to its nearest training image
    ratio: float  # sample_to_train / held_out_to_train: about 1 like unseen data, well below 1 copies
    farther: float  # P(a sample is farther from the training set than a held-out image): 0.5 like unseen data
    farther_interval: tuple[float, float]  # 95% bootstrap interval, samples and held-out images resampled


def copying_audit(samples: Tensor, train: Tensor, held_out: Tensor, space: str, seed: int = 0) -> CopyingAudit:
    """The audit of `samples` against every image of `train`, with `held_out` (at most MAX_HELD_OUT of them) as the
    yardstick; on the samples' device."""
    held_out = held_out[:MAX_HELD_OUT].to(samples.device)
    train = train.to(samples.device)
    to_train = nearest(samples, train)[0][:, 0].double().cpu()
    held = nearest(held_out, train)[0][:, 0].double().cpu()
    beats = (to_train[:, None] > held[None, :]).double() + 0.5 * (to_train[:, None] == held[None, :]).double()

    def farther(w_samples: Tensor, w_held: Tensor) -> Tensor:
        return ((w_samples @ beats) * w_held).sum(1) / (w_samples.sum(1) * w_held.sum(1))

    ones = [torch.ones(1, len(to_train), dtype=torch.float64), torch.ones(1, len(held), dtype=torch.float64)]
    return CopyingAudit(
        space=space, training_images=len(train), held_out_images=len(held), samples=len(samples),
        sample_to_train=float(to_train.mean()), held_out_to_train=float(held.mean()),
        ratio=float(to_train.mean() / held.mean()), farther=float(farther(*ones)[0]),
        farther_interval=bootstrap(farther, [to_train, held], resamples=1000, seed=seed),
    )  # fmt: skip
