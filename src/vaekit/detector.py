"""`vaekit.Detector`: a VAE as an outlier detector with the scikit-learn and PyOD interface, so a pipeline that uses a
PyOD detector can use it instead.

`fit(X)` trains a VAE on the rows of X (or, given `run`, takes a trained run folder) and sets `threshold_` so that the
`contamination` share of X scores above it; `decision_function(X)` gives each row's score, higher for rows less like
the training data; `predict(X)` is 1 above the threshold and 0 below (PyOD's labels: 1 for an outlier). X is what
vaekit reads from an array file: (N, H, W), (N, C, H, W) or (N, D) rows, uint8 pixels or floats in [0, 1].

The score is one of `vaekit score`'s columns: the importance-weighted NLL bound by default, or the −ELBO, the KL, the
reconstruction term or the reconstruction's squared error (what PyOD's own VAE scores by); for a hierarchy
(`layers` ≥ 2, or a run trained with `--latent hierarchy`) also the likelihood ratio `llr>k` of Havtorn et al. (2021),
which separates best with a spatial z1 (`z1_channels` maps on the ladder network's grid; `hidden` is then its
channels, e.g. (32,)).
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin

from vaekit.errors import VaekitError

SCORES = ("nll", "neg_elbo", "kl", "reconstruction_nll", "mse", "llr>k")
LLR = re.compile(r"llr>[1-9][0-9]*")


class Detector(OutlierMixin, BaseEstimator):  # type: ignore[misc]
    """A VAE outlier detector: `fit`, `decision_function`, `predict`, `threshold_`, `decision_scores_`, `labels_`."""

    def __init__(
        self,
        run: str | Path | None = None,
        score: str = "nll",
        contamination: float = 0.1,
        k: int = 100,
        epochs: int = 20,
        latent_dim: int = 8,
        hidden: tuple[int, ...] = (256,),
        layers: int = 1,
        z1_channels: int = 0,
        batch_size: int = 128,
        seed: int = 0,
        work_dir: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.run = run
        self.score = score
        self.contamination = contamination
        self.k = k
        self.epochs = epochs
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.layers = layers
        self.z1_channels = z1_channels
        self.batch_size = batch_size
        self.seed = seed
        self.work_dir = work_dir
        self.device = device

    def fit(self, X: Any, y: Any = None) -> Detector:
        """Train a VAE on X (or load `run`), then set the threshold on X's own scores."""
        from vaekit.training.runs import load_run

        if self.score not in SCORES[:-1] and not LLR.fullmatch(self.score):
            raise VaekitError(f"score={self.score!r}: use one of {', '.join(SCORES)} (k from 1 to layers − 1)")
        if not 0 < self.contamination < 0.5:
            raise VaekitError(f"contamination={self.contamination}: give the share of outliers, above 0 and below 0.5")
        self.run_ = Path(self.run) if self.run is not None else self._train(np.asarray(X))
        self.model_ = load_run(self.run_, self.device)
        self.decision_scores_ = self.decision_function(X)
        self.threshold_ = float(np.quantile(self.decision_scores_, 1 - self.contamination))
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Each row's score: higher means less like the training data."""
        from vaekit.analysis.evaluate import image_terms
        from vaekit.data.userdata import images_from_array

        if not hasattr(self, "model_"):
            raise VaekitError("this Detector is not fitted yet: call fit(X) first")
        x = images_from_array(np.asarray(X), "X", whole=False)
        expected = self.model_.config.model.input_shape
        if list(x.shape[1:]) != expected:
            raise VaekitError(f"X has rows of shape {list(x.shape[1:])} and the model takes {expected}: reshape them")
        from vaekit.analysis.scores import score_columns

        terms = image_terms(self.model_.model.eval(), x, self.k, self.seed, self.model_.config.data)
        columns = score_columns(terms, math.prod(expected))
        if self.score not in columns:
            if terms.bound is None:
                raise VaekitError(f"the run is an autoencoder, which has no {self.score}: use score='mse'")
            allowed = [name for name in columns if LLR.fullmatch(name)]
            raise VaekitError(
                f"the run has no {self.score}: "
                + (f"its hierarchy allows {', '.join(allowed)}" if allowed else "LLR>k needs layers ≥ 2 (a hierarchy)")
            )
        return columns[self.score]

    def predict(self, X: Any) -> np.ndarray:
        """1 for a row scored above `threshold_` (an outlier), 0 otherwise."""
        return (self.decision_function(X) > self.threshold_).astype(int)

    def _train(self, x: np.ndarray) -> Path:
        """A VAE trained on the rows, in `work_dir` (a fresh temporary folder when None)."""
        from vaekit.api import train
        from vaekit.config import DataConfig, ModelConfig, TrainConfig
        from vaekit.model.hierarchy import hierarchy_settings

        folder = Path(self.work_dir) if self.work_dir is not None else Path(tempfile.mkdtemp(prefix="vaekit-detector-"))
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "train.npz", x=x)
        hierarchy = hierarchy_settings(self.layers, self.z1_channels) if self.layers > 1 else {}
        config = TrainConfig(
            model=ModelConfig(latent_dim=self.latent_dim, hidden=list(self.hidden), **hierarchy),
            data=DataConfig(dataset=str(folder / "train.npz"), val_size=0),
            epochs=self.epochs, batch_size=self.batch_size, seed=self.seed, device=self.device,
        )  # fmt: skip
        return train(config, folder / "run").path
