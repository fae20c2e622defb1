"""Typed configuration: three small dataclasses, their defaults beside them, to and from JSON.

A run folder's `config.json` is `TrainConfig.to_dict()`; `TrainConfig.from_dict` rebuilds it, so a model can be
rebuilt from the run folder alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from vaekit.errors import VaekitError

FORMAT_VERSION = 2  # 2: the model's parts (prior, activation, objective); version 1 folders still load
READABLE_VERSIONS = (1, 2)

NETWORKS = ("mlp", "conv", "resconv")
ACTIVATIONS = ("relu", "tanh", "elu", "gelu")
PRIORS = ("standard", "mog", "vamp")  # standard: N(0, I), or uniform for categorical latents
OBJECTIVES = ("elbo", "iwae")
LIKELIHOODS = (
    "bernoulli",
    "gaussian",
    "gaussian-learned",
    "gaussian-pixel",
    "continuous-bernoulli",
    "discretized-logistic",
)  # see vaekit.model.heads
BINARIZE = ("none", "dynamic", "static")
KINDS = ("vae", "ae")
CONDITIONS = ("none", "label")  # label: encoder and decoder see the image's class (a conditional VAE)
LATENTS = ("gaussian", "categorical")
ELBO_ESTIMATORS = ("reparam", "score-function", "score-function-baseline")  # see vaekit.model.objectives.elbo
ESTIMATORS = (*ELBO_ESTIMATORS, "dreg")  # dreg: for the importance-weighted bound
PRECISIONS = ("fp32", "bf16")  # the networks' forward passes; see vaekit.training.precision.prepare_networks
DEFAULT_HIDDEN: dict[str, list[int]] = {"mlp": [400], "conv": [32, 64]}
# Bounds on sizes, far above any sensible model: a config.json is input like any other, and a tampered size must be
# refused before it allocates anything.
MAX_WIDTH, MAX_LAYERS, MAX_COUNT = 1 << 16, 64, 1 << 30
MAX_SEED = (1 << 63) - 1  # torch seeds its generators from a 64-bit integer; every seed here is 0 to this
MAX_CLASSES = 1000  # of a conditional model: every image carries a one-hot label, and pictures draw every class


@dataclass
class ModelConfig:
    """What to build. `input_shape` (and `classes`, for a conditional model) is filled in from the data when training
    starts."""

    kind: str = "vae"  # "vae", or "ae": the deterministic autoencoder baseline (same networks, no noise, no KL)
    network: str = "mlp"  # "mlp" | "conv"
    hidden: list[int] = field(default_factory=list)  # MLP widths or conv channels; empty: DEFAULT_HIDDEN[network]
    latent_dim: int = 20
    likelihood: str = "bernoulli"  # see LIKELIHOODS
    gaussian_scale: float = 0.1  # fixed σ of the "gaussian" likelihood; initial σ of the learned ones
    mixtures: int = 5  # logistic components per pixel of the "discretized-logistic" likelihood
    latent: str = "gaussian"  # "gaussian", or "categorical": latent_vars variables of `categories` classes each
    categories: int = 10
    latent_vars: int = 30
    temperature: float = 1.0  # Gumbel-softmax τ at the first step, annealed as τ0·exp(−anneal_rate·step)…
    temperature_min: float = 0.5  # … down to this (Jang et al. 2017)
    anneal_rate: float = 1e-4  # τ reaches 0.5 after about 7,000 steps (16 Fashion-MNIST epochs at batch 128)
    straight_through: bool = False  # hard one-hot forward, relaxed gradient backward
    activation: str = "relu"  # of the hidden layers; see ACTIVATIONS
    prior: str = "standard"  # see PRIORS; mog and vamp are learned, with `prior_components` components
    prior_components: int = 10
    # A second stochastic layer z2 (Burda et al. 2016): the widths of the q(z2|z1) and p(z1|z2) networks, then z2's
    # size, e.g. [100, 100, 50]; `hidden` and `latent_dim` stay the first layer's. Empty: one stochastic layer.
    second_layer: list[int] = field(default_factory=list)
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])  # (C, H, W)
    condition: str = "none"  # "label": q(z|x, y) and p(x|z, y) see the class label y (Sohn et al. 2015)
    classes: int = 0  # labels 0..classes−1; filled in from the data when training starts, like input_shape


@dataclass
class DataConfig:
    """Where the images come from and how they are presented to the model."""

    dataset: str = "fashion-mnist"  # a registered name, or a path to an image folder, .npy/.npz, Parquet or datasets
    data_dir: str | None = None  # the only folder searched (default $VAEKIT_DATA); must exist
    binarize: str = "none"  # "none" (grey values as targets) | "dynamic" (fresh draw per batch) | "static"
    val_size: int = 5000  # held out of the training split with `split_seed`; capped at 10% for small sets
    split_seed: int = 0
    image_column: str | None = None  # of a table (Parquet, datasets); default: the column named image, img or pixels
    label_column: str | None = None  # default: the column named label, labels or y, if any


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
    objective: str = "elbo"  # or "iwae": the importance-weighted bound with `k` samples (Burda et al. 2016)
    k: int = 5  # importance samples per image for --objective iwae
    free_bits: float = 0.0  # nats per latent unit below which its KL is not pushed down (Kingma et al. 2016)
    average_decay: float = 0.0  # >0: evaluate and save a moving average of the weights (Polyak & Juditsky 1992)
    seed: int = 0
    device: str = "cpu"  # or auto (CUDA, else MPS, else CPU), cuda, cuda:N, mps; see vaekit.devices.resolve_device
    precision: str = "fp32"  # "bf16": the networks under autocast; log-likelihoods and KL stay float32
    compile: bool = False  # run the networks through torch.compile (eager, with a notice, where it fails)
    checkpoint_every: float = 30.0  # minutes between checkpoints inside an epoch (besides one after every epoch)
    world_size: int = 1  # processes the run last trained with (set by the trainer; --batch-size is global)

    def validate(self) -> TrainConfig:
        """Reject settings that would fail later, deep inside torch, with a message nobody can act on.

        Also the gate for a config.json read back from disk, so sizes are bounded (a tampered `latent_dim` must not
        allocate terabytes) and every float is finite: `inf` or `nan` would only surface epochs later as a NaN loss.
        """
        for name, value in self._floats().items():
            if not math.isfinite(value):
                raise VaekitError(f"{name} = {value} is not a finite number: give a finite value")
        model, data = self.model, self.data
        checks = [
            (model.kind in KINDS, f"unknown model {model.kind!r}: use one of {KINDS}"),
            (model.latent in LATENTS, f"unknown latent {model.latent!r}: use one of {LATENTS}"),
            (model.network in NETWORKS, f"unknown network {model.network!r}: use one of {NETWORKS}"),
            (model.likelihood in LIKELIHOODS, f"unknown likelihood {model.likelihood!r}: use one of {LIKELIHOODS}"),
            (data.binarize in BINARIZE, f"unknown binarize mode {data.binarize!r}: use one of {BINARIZE}"),
            (self.estimator in ESTIMATORS, f"unknown estimator {self.estimator!r}: use one of {ESTIMATORS}"),
            (self.precision in PRECISIONS, f"unknown precision {self.precision!r}: use one of {PRECISIONS}"),
            (model.activation in ACTIVATIONS, f"unknown activation {model.activation!r}: use one of {ACTIVATIONS}"),
            (model.prior in PRIORS, f"unknown prior {model.prior!r}: use one of {PRIORS}"),
            (model.condition in CONDITIONS, f"unknown condition {model.condition!r}: use one of {CONDITIONS}"),
            (0 <= model.classes <= MAX_CLASSES, f"classes must be between 0 and {MAX_CLASSES}"),
            (
                model.condition == "none" or model.prior != "vamp",
                "the VampPrior encodes pseudo-inputs, which have no label: use --prior standard or mog with "
                "--condition label",
            ),
            (self.objective in OBJECTIVES, f"unknown objective {self.objective!r}: use one of {OBJECTIVES}"),
            (1 <= model.prior_components <= MAX_WIDTH, f"prior_components must be between 1 and {MAX_WIDTH}"),
            (1 <= self.k <= MAX_WIDTH, f"k must be between 1 and {MAX_WIDTH}"),
            (1 <= model.mixtures <= 256, "mixtures must be between 1 and 256"),
            (self.free_bits >= 0, "free_bits must be zero or positive"),
            (
                model.prior == "standard" or (model.latent == "gaussian" and model.kind == "vae"),
                f"the {model.prior} prior is a density over Gaussian codes: use it with --model vae --latent gaussian",
            ),
            (
                model.prior == "standard" or self.estimator in ("reparam", "dreg"),
                "a learned prior's KL is estimated at samples of q, which needs their path: use --estimator reparam",
            ),
            (
                self.objective == "elbo" or (model.latent == "gaussian" and model.kind == "vae"),
                "the importance-weighted bound needs a Gaussian posterior: use --model vae --latent gaussian",
            ),
            (
                self.objective == "iwae" or self.estimator != "dreg",
                "the doubly reparameterized estimator is for the importance-weighted bound: add --objective iwae",
            ),
            (
                self.objective == "elbo" or self.estimator in ("reparam", "dreg"),
                "--objective iwae takes --estimator reparam (IWAE) or dreg",
            ),
            (
                self.objective == "elbo" or (self.beta == 1 and self.warmup_epochs == 0 and self.samples == 1),
                "--objective iwae has its own k samples and no KL weight: drop --beta, --warmup and --samples",
            ),
            (
                self.free_bits == 0 or model.kind == "vae",
                "an autoencoder's code has no KL for free bits to floor: drop --free-bits",
            ),
            (
                self.free_bits == 0 or (self.objective == "elbo" and model.prior == "standard"),
                "free bits apply to a closed-form KL per unit: use --objective elbo with the standard prior",
            ),
            (2 <= model.categories <= MAX_WIDTH, f"categories must be between 2 and {MAX_WIDTH}"),
            (1 <= model.latent_vars <= MAX_WIDTH, f"latent_vars must be between 1 and {MAX_WIDTH}"),
            (0 < model.temperature_min <= model.temperature, "need 0 < temperature_min ≤ temperature"),
            (model.anneal_rate >= 0, "anneal_rate must be zero or positive"),
            (model.latent == "gaussian" or model.kind == "vae", "--model ae takes a gaussian latent"),
            (
                model.kind == "vae" or self.estimator == "reparam",
                "an autoencoder's code has no density, so no score-function gradient: use --estimator reparam",
            ),
            (1 <= model.latent_dim <= MAX_WIDTH, f"latent_dim must be between 1 and {MAX_WIDTH}"),
            (len(model.hidden) <= MAX_LAYERS, f"at most {MAX_LAYERS} hidden layers"),
            (len(model.second_layer) <= MAX_LAYERS + 1, f"second_layer takes at most {MAX_LAYERS} widths and a size"),
            (
                all(1 <= h <= MAX_WIDTH for h in model.second_layer),
                f"second_layer widths and size must be between 1 and {MAX_WIDTH}",
            ),
            (
                not model.second_layer or (model.kind == "vae" and model.latent == "gaussian"),
                "a second stochastic layer is Gaussian: use it with --model vae --latent gaussian",
            ),
            (
                not model.second_layer or model.prior == "standard",
                f"a second stochastic layer brings its own prior N(z2; 0, I)·p(z1|z2): drop --prior {model.prior}",
            ),
            (
                not model.second_layer or self.estimator in ("reparam", "dreg"),
                "the two-layer KL is estimated at samples of q, which needs their path: use --estimator reparam",
            ),
            (
                not model.second_layer or self.free_bits == 0,
                "free bits need a closed-form KL per unit, which two stochastic layers lack: drop --free-bits",
            ),
            (all(1 <= h <= MAX_WIDTH for h in model.hidden), f"hidden widths must be between 1 and {MAX_WIDTH}"),
            (
                len(model.input_shape) == 3 and all(1 <= d <= MAX_WIDTH for d in model.input_shape),
                f"input_shape must be [channels, height, width], each between 1 and {MAX_WIDTH}",
            ),
            (model.gaussian_scale > 0, "gaussian_scale must be positive"),
            (1 <= self.epochs <= MAX_COUNT, f"epochs must be between 1 and {MAX_COUNT}"),
            (1 <= self.batch_size <= MAX_COUNT, f"batch_size must be between 1 and {MAX_COUNT}"),
            (1 <= self.samples <= MAX_WIDTH, f"samples must be between 1 and {MAX_WIDTH}"),
            (1 <= self.world_size <= MAX_COUNT, "world_size must be at least 1"),
            (0 < self.lr <= 10, "lr must be positive and at most 10"),
            (self.beta >= 0, "beta must be zero or positive"),
            (self.warmup_epochs >= 0, "warmup_epochs must be zero or positive"),
            (self.checkpoint_every > 0, "checkpoint_every must be positive (minutes)"),
            (
                0 <= self.average_decay < 1,
                "average_decay must be at least 0 and below 1: use 0.999, say, or 0 for none",
            ),
            (
                self.estimator != "score-function-baseline" or self.samples >= 2,
                "the leave-one-out baseline needs at least 2 samples per image: add --samples 4",
            ),
            (data.val_size >= 0, "val_size must be zero or positive"),
            (0 <= self.seed <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}"),
            (0 <= data.split_seed <= MAX_SEED, f"split_seed must be between 0 and {MAX_SEED}"),
        ]
        for ok, message in checks:
            if not ok:
                raise VaekitError(message if ":" in message else f"{message}: change that setting")
        if not model.hidden:
            model.hidden = list(DEFAULT_HIDDEN[model.network])
        if model.latent == "categorical":  # the decoder reads the flattened one-hot codes
            model.latent_dim = model.latent_vars * model.categories
            if model.latent_dim > MAX_WIDTH:
                raise VaekitError(f"latent_vars × categories must be at most {MAX_WIDTH}")
        return self

    def _floats(self) -> dict[str, float]:
        """Every float setting by its flat name, for the finiteness check."""
        sections = {"": self, "model": self.model, "data": self.data}
        return {
            name: getattr(sections[section], name)
            for name, section in FLAT_SETTINGS.items()
            if isinstance(getattr(sections[section], name), float)
        }

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys are errors so a typo never passes silently."""
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k, {}), dict) for k in ("model", "data")):
            raise VaekitError("a config must be a JSON object with `model` and `data` objects: fix or restore it")
        raw = dict(raw)
        version = raw.pop("format_version", FORMAT_VERSION)
        if version not in READABLE_VERSIONS:
            raise VaekitError(
                f"config format_version {version} is not supported (this vaekit reads {READABLE_VERSIONS}): "
                "use the vaekit that wrote it"
            )
        model = _build(ModelConfig, raw.pop("model", {}), "model")
        data = _build(DataConfig, raw.pop("data", {}), "data")
        config: TrainConfig = _build(cls, raw, "train", model=model, data=data)
        return config


# Flat setting names (CLI flags and TOML keys) and the section of TrainConfig each lives in ("" = top level).
FLAT_SETTINGS = {
    **{
        name: "data"
        for name in ("dataset", "data_dir", "binarize", "val_size", "split_seed", "image_column", "label_column")
    },
    **{
        name: "model"
        for name in (
            "kind",
            "network",
            "hidden",
            "latent_dim",
            "likelihood",
            "gaussian_scale",
            "mixtures",
            "latent",
            "categories",
            "latent_vars",
            "temperature",
            "temperature_min",
            "anneal_rate",
            "straight_through",
            "activation",
            "prior",
            "prior_components",
            "second_layer",
            "condition",
        )
    },
    **{
        name: ""
        for name in (
            "epochs",
            "batch_size",
            "lr",
            "beta",
            "warmup_epochs",
            "seed",
            "device",
            "estimator",
            "samples",
            "checkpoint_every",
            "objective",
            "k",
            "free_bits",
            "average_decay",
        )
    },
    **{name: "" for name in ("precision", "compile")},
}


# `vaekit train` names each flag (and TOML key) after the flat setting it sets, except these two, which read better
# on a command line: --model ae, --warmup 2.
FLAG_NAMES = {"kind": "model", "warmup_epochs": "warmup"}
SETTING_OF_FLAG = {FLAG_NAMES.get(name, name): name for name in FLAT_SETTINGS}  # flag name → flat setting name


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
    if default is None:
        return value is None or isinstance(value, str)  # optional paths (data_dir)
    if value is None:
        return False
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    if isinstance(default, list):
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, type(default))


def flat_value(config: TrainConfig, name: str) -> Any:
    """A flat setting's value in `config` (`gaussian_scale`, `lr`), wherever its section keeps it."""
    section = FLAT_SETTINGS[name]
    return getattr(getattr(config, section) if section else config, name)


def as_flags(config: TrainConfig, names: tuple[str, ...]) -> list[str]:
    """`--gaussian-scale 1e-30` for each of `names` that `config` sets away from its default, as a user typed it."""
    default = TrainConfig()
    flags = []
    for name in names:
        value = flat_value(config, name)
        if value != flat_value(default, name):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            flags.append(f"--{FLAG_NAMES.get(name, name).replace('_', '-')} {shown}")
    return flags
