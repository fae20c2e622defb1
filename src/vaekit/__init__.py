"""vaekit: train, measure and explore Variational Autoencoders.

from vaekit import VAE, TrainConfig, train, load_run
"""

from vaekit.api import train
from vaekit.config import DataConfig, ModelConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.model.likelihoods import Bernoulli, Gaussian
from vaekit.model.posteriors import DiagonalGaussian
from vaekit.model.vae import VAE
from vaekit.training.callbacks import Callback, EpochEnd, RunEnd, RunStart, StepEnd
from vaekit.training.runs import Run, load_run

__all__ = [
    "VAE",
    "Bernoulli",
    "Callback",
    "DataConfig",
    "DiagonalGaussian",
    "EpochEnd",
    "Gaussian",
    "ModelConfig",
    "Run",
    "RunEnd",
    "RunStart",
    "StepEnd",
    "TrainConfig",
    "VaekitError",
    "load_run",
    "train",
]
__version__ = "0.1.0"
