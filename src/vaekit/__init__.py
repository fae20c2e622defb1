"""vaekit: train, measure and explore Variational Autoencoders.

from vaekit import VAE, TrainConfig, train, load_run
"""

from vaekit.config import DataConfig, ModelConfig, TrainConfig
from vaekit.distributions import Bernoulli, DiagonalGaussian, Gaussian
from vaekit.errors import VaekitError
from vaekit.model import VAE
from vaekit.runs import Run, load_run
from vaekit.train import train

__all__ = [
    "VAE",
    "Bernoulli",
    "DataConfig",
    "DiagonalGaussian",
    "Gaussian",
    "ModelConfig",
    "Run",
    "TrainConfig",
    "VaekitError",
    "load_run",
    "train",
]
__version__ = "0.1.0"
