"""Typed configuration: three small dataclasses, their defaults beside them, to and from JSON.

A run folder's `config.json` is `TrainConfig.to_dict()`; `TrainConfig.from_dict` rebuilds it, so a model can be
rebuilt from the run folder alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vaekit.errors import VaekitError

FORMAT_VERSION = 1

NETWORKS = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian-learned", "gaussian-pixel")
BINARIZE = ("none", "dynamic", "static")
KINDS = ("vae", "ae")
LATENTS = ("gaussian", "categorical")
ESTIMATORS = ("reparam", "score-function", "score-function-baseline")  # see vaekit.objectives.elbo
DEFAULT_HIDDEN: dict[str, list[int]] = {"mlp": [400], "conv": [32, 64]}


@dataclass
class ModelConfig:
    """What to build. `input_shape` is filled in from the data when training starts."""

    kind: str = "vae"  # "vae", or "ae": the deterministic autoencoder baseline (same networks, no noise, no KL)
    network: str = "mlp"  # "mlp" | "conv"
    hidden: list[int] = field(default_factory=list)  # MLP widths or conv channels; empty: DEFAULT_HIDDEN[network]
    latent_dim: int = 20
    likelihood: str = "bernoulli"  # see LIKELIHOODS
    gaussian_scale: float = 0.1  # fixed σ of the "gaussian" likelihood; initial σ of the learned ones
    latent: str = "gaussian"  # "gaussian", or "categorical": latent_vars variables of `categories` classes each
    categories: int = 10
    latent_vars: int = 30
    temperature: float = 1.0  # Gumbel-softmax τ at the first step, annealed as τ0·exp(−anneal_rate·step)…
    temperature_min: float = 0.5  # … down to this (Jang et al. 2017)
    anneal_rate: float = 1e-4  # τ reaches 0.5 after about 7,000 steps (16 Fashion-MNIST epochs at batch 128)
    straight_through: bool = False  # hard one-hot forward, relaxed gradient backward
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])  # (C, H, W)


@dataclass
class DataConfig:
    """Where the images come from and how they are presented to the model."""

    dataset: str = "fashion-mnist"  # a registered name, or a path to an image folder, .npy or .npz
    data_dir: str | None = None  # the only folder searched (default $VAEKIT_DATA); must exist
    binarize: str = "none"  # "none" (grey values as targets) | "dynamic" (fresh draw per batch) | "static"
    val_size: int = 5000  # held out of the training split with `split_seed`; capped at 10% for small sets
    split_seed: int = 0


@dataclass
class TrainConfig:
    """Everything a run needs; saved as the run folder's config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0  # weight of the KL term (β-VAE); 1 gives the true ELBO
    warmup_epochs: float = 0.0  # β ramps linearly from 0 over this many epochs (Bowman et al. 2016)
    estimator: str = "reparam"  # how the encoder gradient is estimated: see ESTIMATORS and objectives.elbo
    samples: int = 1  # z samples per image in each training step
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> TrainConfig:
        """Reject settings that would fail later, deep inside torch, with a message nobody can act on."""
        checks = [
            (self.model.kind in KINDS, f"unknown model {self.model.kind!r}: use one of {KINDS}"),
            (self.model.latent in LATENTS, f"unknown latent {self.model.latent!r}: use one of {LATENTS}"),
            (self.model.categories >= 2 and self.model.latent_vars >= 1, "categories must be ≥ 2 and latent_vars ≥ 1"),
            (0 < self.model.temperature_min <= self.model.temperature, "need 0 < temperature_min ≤ temperature"),
            (self.model.latent == "gaussian" or self.model.kind == "vae", "--model ae takes a gaussian latent"),
            (self.model.network in NETWORKS, f"unknown network {self.model.network!r}: use one of {NETWORKS}"),
            (
                self.model.likelihood in LIKELIHOODS,
                f"unknown likelihood {self.model.likelihood!r}: use one of {LIKELIHOODS}",
            ),
            (self.data.binarize in BINARIZE, f"unknown binarize mode {self.data.binarize!r}: use one of {BINARIZE}"),
            (self.model.latent_dim >= 1, "latent_dim must be at least 1"),
            (all(h >= 1 for h in self.model.hidden), "hidden widths must be positive"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.beta >= 0, "beta must be zero or positive"),
            (self.warmup_epochs >= 0, "warmup_epochs must be zero or positive"),
            (self.model.gaussian_scale > 0, "gaussian_scale must be positive"),
            (self.estimator in ESTIMATORS, f"unknown estimator {self.estimator!r}: use one of {ESTIMATORS}"),
            (self.samples >= 1, "samples must be at least 1"),
            (
                self.estimator != "score-function-baseline" or self.samples >= 2,
                "the leave-one-out baseline needs at least 2 samples per image: add --samples 4",
            ),
            (self.data.val_size >= 0, "val_size must be zero or positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise VaekitError(message)
        if not self.model.hidden:
            self.model.hidden = list(DEFAULT_HIDDEN[self.model.network])
        if self.model.latent == "categorical":  # the decoder reads the flattened one-hot codes
            self.model.latent_dim = self.model.latent_vars * self.model.categories
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are errors so a typo never passes silently."""
        raw = dict(raw)
        version = raw.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise VaekitError(f"config format_version {version} is not supported (this vaekit reads {FORMAT_VERSION})")
        model = _build(ModelConfig, raw.pop("model", {}), "model")
        data = _build(DataConfig, raw.pop("data", {}), "data")
        config: TrainConfig = _build(cls, raw, "train", model=model, data=data)
        return config


# Flat setting names (CLI flags and TOML keys) and the section of TrainConfig each lives in ("" = top level).
FLAT_SETTINGS = {
    **{name: "data" for name in ("dataset", "data_dir", "binarize", "val_size", "split_seed")},
    **{
        name: "model"
        for name in (
            "kind",
            "network",
            "hidden",
            "latent_dim",
            "likelihood",
            "gaussian_scale",
            "latent",
            "categories",
            "latent_vars",
            "temperature",
            "temperature_min",
            "anneal_rate",
            "straight_through",
        )
    },
    **{
        name: ""
        for name in ("epochs", "batch_size", "lr", "beta", "warmup_epochs", "seed", "device", "estimator", "samples")
    },
}


def with_overrides(config: TrainConfig, flat: dict[str, Any]) -> TrainConfig:
    """A copy of `config` with flat settings (`latent_dim=8`, `latent-dim=8`) applied; unknown names are errors."""
    raw = config.to_dict()
    for key, value in flat.items():
        name = key.replace("-", "_")
        if name not in FLAT_SETTINGS:
            raise VaekitError(f"unknown setting {key!r}: valid ones are {', '.join(sorted(FLAT_SETTINGS))}")
        section = FLAT_SETTINGS[name]
        (raw[section] if section else raw)[name] = value
    return TrainConfig.from_dict(raw)


def _build(kind: type[Any], raw: dict[str, Any], section: str, **extra: Any) -> Any:
    """Construct a config dataclass from a dict, rejecting unknown names and values of the wrong type."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise VaekitError(
            f"unknown {section} setting(s) {', '.join(unknown)}: valid ones are {', '.join(sorted(fields))}"
        )
    defaults = kind(**extra)
    for name, value in raw.items():
        expected = getattr(defaults, name)
        if not _same_kind(value, expected):
            raise VaekitError(f"setting {name} = {value!r} should be a {type(expected).__name__}: fix the value")
    return kind(**raw, **extra)


def _same_kind(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True  # optional settings (data_dir)
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, type(default))
