"""vaekit: train, measure and explore Variational Autoencoders.

from vaekit import VAE, TrainConfig, train, evaluate, load_run
"""

from vaekit.api import evaluate, train
from vaekit.config import DataConfig, ModelConfig, TrainConfig
from vaekit.errors import VaekitError
from vaekit.model.likelihoods import Bernoulli, Gaussian
from vaekit.model.pixel_likelihoods import ContinuousBernoulli, DiscretizedLogisticMixture
from vaekit.model.posteriors import DiagonalGaussian, PointMass, RelaxedCategorical, TwoLayerGaussian
from vaekit.model.priors import MixtureOfGaussians, Prior, StandardNormal, TwoLayerPrior, UniformCategorical, VampPrior
from vaekit.model.vae import VAE
from vaekit.training.callbacks import Callback, EpochEnd, RunEnd, RunStart, StepEnd
from vaekit.training.runs import Run, load_run
from vaekit.version import __version__ as __version__

__all__ = [
    "VAE",
    "Bernoulli",
    "Callback",
    "ContinuousBernoulli",
    "DataConfig",
    "Detector",
    "DiagonalGaussian",
    "DiscretizedLogisticMixture",
    "EpochEnd",
    "Gaussian",
    "MixtureOfGaussians",
    "ModelConfig",
    "PointMass",
    "Prior",
    "RelaxedCategorical",
    "Run",
    "RunEnd",
    "RunStart",
    "StandardNormal",
    "StepEnd",
    "TrainConfig",
    "TwoLayerGaussian",
    "TwoLayerPrior",
    "UniformCategorical",
    "VaekitError",
    "VampPrior",
    "evaluate",
    "load_run",
    "train",
]


def __getattr__(name: str) -> object:
    """`vaekit.Detector`, imported when first asked for: it brings scikit-learn, which nothing else here needs."""
    if name == "Detector":
        from vaekit.detector import Detector

        return Detector
    raise AttributeError(f"module 'vaekit' has no attribute {name!r}")
