"""Typed configuration: three small dataclasses, their defaults beside them, to and from JSON.

A run folder's `config.json` is `TrainConfig.to_dict()`; `TrainConfig.from_dict` rebuilds it, so a model can be
rebuilt from the run folder alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from vaekit.errors import VaekitError
from vaekit.parts import (
    CONDITIONS,
    KINDS,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    POSTERIORS,
    PRIORS,
    REGISTRIES,
    Registry,
    check_parts,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
OPTIONS = "options"  # the section of a part's own settings: ModelConfig.options

FORMAT_VERSION = 3  # 3: parts' own settings in model.options; 2: the model's parts (prior, activation, objective)
READABLE_VERSIONS = (1, 2, 3)  # older folders keep a part's setting beside the others; it moves into options

LATENTS = POSTERIORS  # the model's parts are registries (vaekit.parts) that each part's module fills
ACTIVATIONS = ("relu", "tanh", "elu", "gelu")
BINARIZE = ("none", "dynamic", "static")
ELBO_ESTIMATORS = ("reparam", "score-function", "score-function-baseline")  # see vaekit.model.objectives.elbo
ESTIMATORS = (*ELBO_ESTIMATORS, "dreg")  # dreg: for the importance-weighted bound
# The networks' forward passes; see vaekit.training.precision.prepare_networks
PRECISIONS = {"fp32": "", "bf16": "networks under autocast; likelihood and KL in fp32"}
# The weights model.safetensors keeps; see vaekit.training.selection
SELECTIONS = {"last": "the last epoch's", "best": "the epoch's with the highest validation ELBO"}
# Bounds on sizes, far above any sensible model: a config.json is input like any other, and a tampered size must be
# refused before it allocates anything.
MAX_WIDTH, MAX_LAYERS, MAX_COUNT = 1 << 16, 64, 1 << 30
MAX_SEED = (1 << 63) - 1  # torch seeds its generators from a 64-bit integer; every seed here is 0 to this
MAX_CLASSES = 1000  # of a conditional model: every image carries a one-hot label, and pictures draw every class
PANELS = ("data", "model", "objective", "optimization", "run", "logging")  # of `vaekit train --help`, in this order


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    panel: str = "model",
    *,
    factory: Callable[[], Any] | None = None,
    choices: Collection[str] | None = None,
    noun: str | None = None,
    flag: str | None = None,
    shown: str | None = None,
    bounds: tuple[int, int] | None = None,
) -> Any:
    """A setting a user chooses: its default, help line and help panel written once, for the config validation, the
    `vaekit train` flags and TOML keys. `choices` is a tuple of names or a registry of parts (the parts' own help
    lines join the help), `noun` how an unknown choice is reported, `flag` the flag's name where it is not the
    setting's, `shown` the default as the help line shows it (else the value itself; "" shows none), `bounds` the
    lowest and highest integer it takes, checked in a config and on the command line alike."""
    metadata = {
        "help": help,
        "panel": panel,
        "choices": choices,
        "noun": noun,
        "flag": flag,
        "shown": shown,
        "bounds": bounds,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    """What to build. `input_shape` (and `classes`, for a conditional model) is filled in from the data when training
    starts."""

    kind: str = setting("vae", "", choices=KINDS, flag="model")  # or ae: same networks, no noise, no KL
    network: str = setting("mlp", "", choices=NETWORKS)
    # MLP widths or conv channels; empty: DEFAULT_HIDDEN[network]
    hidden: list[int] = setting(  # noqa: RUF009 (a field, like dataclasses.field)
        help="Comma-separated widths (MLP) or channels (conv).", factory=list, shown="400 | 32,64"
    )
    latent_dim: int = setting(20, "Size of z.")
    likelihood: str = setting("bernoulli", "", choices=LIKELIHOODS)
    latent: str = setting("gaussian", "", choices=LATENTS)  # categorical: its settings in vaekit.model.posteriors
    activation: str = setting("relu", "Hidden activation", choices=ACTIVATIONS)
    prior: str = setting("standard", "", choices=PRIORS)  # mog and vamp are learned, with `prior_components`
    # A second stochastic layer z2 (Burda et al. 2016): the widths of the q(z2|z1) and p(z1|z2) networks, then z2's
    # size, e.g. [100, 100, 50]; `hidden` and `latent_dim` stay the first layer's. Empty: one stochastic layer.
    second_layer: list[int] = setting(  # noqa: RUF009
        help="A second stochastic layer: its networks' widths, then its size (e.g. 100,100,50).",
        factory=list,
        shown="none",
    )
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])  # (C, H, W)
    # label: q(z|x, y) and p(x|z, y) see the class label y (Sohn et al. 2015)
    condition: str = setting("none", "", choices=CONDITIONS)
    classes: int = 0  # labels 0..classes−1; filled in from the data when training starts, like input_shape
    # The settings parts declare in their own modules (`vaekit.parts.Part.settings`), by name; one left out takes its
    # default. Read them with `options_of`.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where the images come from and how they are presented to the model."""

    dataset: str = setting(
        "fashion-mnist",
        "fashion-mnist | mnist | digits | an image folder | .npy/.npz | .parquet | a datasets folder",
        "data",
    )
    data_dir: str | None = setting(  # default $VAEKIT_DATA; must exist
        None, "Folder holding the dataset files: the only one searched, downloaded into when empty.", "data", shown=""
    )
    binarize: str = setting("none", "", "data", choices=BINARIZE, noun="binarize mode")
    val_size: int = setting(5000, "Validation images held out of train.", "data")  # capped at 10% for small sets
    split_seed: int = setting(
        0, "Seed that picks the validation images out of train.", "data", noun="seed", bounds=(0, MAX_SEED)
    )
    image_column: str | None = setting(None, "Image column of a table.", "data", shown="image, img or pixels")
    label_column: str | None = setting(None, "Label column of a table.", "data", shown="label, labels or y, if present")


@dataclass
class TrainConfig:
    """Everything a run needs; saved as the run folder's config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = setting(10, "Epochs to train (with --resume: the new total).", "optimization")
    batch_size: int = setting(128, "Examples per step.", "optimization")
    lr: float = setting(1e-3, "Adam learning rate.", "optimization")
    beta: float = setting(1.0, "KL weight β.", "objective")  # 1 gives the true ELBO
    warmup_epochs: float = setting(  # Bowman et al. 2016
        0.0, "Epochs of linear KL warm-up from 0 to β.", "objective", flag="warmup"
    )
    estimator: str = setting(  # see objectives.elbo
        "reparam", "Encoder gradient (dreg: with --objective iwae)", "objective", choices=ESTIMATORS
    )
    samples: int = setting(1, "z samples per image per step.", "objective")
    objective: str = setting("elbo", "", "objective", choices=OBJECTIVES)
    k: int = setting(5, "Importance samples per image for --objective iwae.", "objective")
    free_bits: float = setting(  # Kingma et al. 2016
        0.0, "Nats per latent unit under which its KL is not pushed down.", "objective"
    )
    average_decay: float = setting(  # Polyak & Juditsky 1992
        0.0,
        "Evaluate and save a moving average of the weights with this decay per step (0.999, say); the optimizer "
        "still steps the weights themselves.",
        "optimization",
        shown="0: no average",
    )
    select: str = setting(
        "last",
        "Weights the run keeps in model.safetensors and scores",
        "optimization",
        choices=SELECTIONS,
        noun="selection",
    )
    patience: int = setting(
        0,
        "Stop after this many epochs without a better validation ELBO.",
        "optimization",
        shown="0: never",
        bounds=(0, MAX_COUNT),
    )
    seed: int = setting(0, "Seed for initialisation, batch order and noise.", "run", noun="seed", bounds=(0, MAX_SEED))
    device: str = setting("cpu", "auto | cpu | cuda | cuda:N | mps", "run")  # see vaekit.devices.resolve_device
    precision: str = setting("fp32", "", "run", choices=PRECISIONS)
    compile: bool = setting(False, "Run the networks through torch.compile (eager where it fails).", "run", shown="")
    checkpoint_every: float = setting(30.0, "Minutes between checkpoints inside an epoch.", "run")
    world_size: int = 1  # processes the run last trained with (set by the trainer; --batch-size is global)

    def validate(self) -> TrainConfig:
        """Reject settings that would fail later, deep inside torch, with a message nobody can act on.

        Also the gate for a config.json read back from disk, so sizes are bounded (a tampered `latent_dim` must not
        allocate terabytes) and every float is finite: `inf` or `nan` would only surface epochs later as a NaN loss.
        Names are checked against their choices, then sizes, then what each chosen part requires of the others.
        """
        for name, value in self._floats().items():
            if not math.isfinite(value):
                raise VaekitError(f"{name} = {value} is not a finite number: give a finite value")
        for spec in settings().values():
            choices, value = spec.choices, spec.value(self)
            if choices is not None and value not in choices:
                raise VaekitError(f"unknown {spec.noun} {value!r}: use one of {tuple(choices)}")
            if spec.bounds is not None and not spec.bounds[0] <= value <= spec.bounds[1]:
                low, high = spec.bounds
                raise VaekitError(f"{spec.name} must be between {low} and {high}: change that setting")
        model, data = self.model, self.data
        checks = [
            (0 <= model.classes <= MAX_CLASSES, f"classes must be between 0 and {MAX_CLASSES}"),
            (1 <= self.k <= MAX_WIDTH, f"k must be between 1 and {MAX_WIDTH}"),
            (self.free_bits >= 0, "free_bits must be zero or positive"),
            (1 <= model.latent_dim <= MAX_WIDTH, f"latent_dim must be between 1 and {MAX_WIDTH}"),
            (len(model.hidden) <= MAX_LAYERS, f"at most {MAX_LAYERS} hidden layers"),
            (len(model.second_layer) <= MAX_LAYERS + 1, f"second_layer takes at most {MAX_LAYERS} widths and a size"),
            (
                all(1 <= h <= MAX_WIDTH for h in model.second_layer),
                f"second_layer widths and size must be between 1 and {MAX_WIDTH}",
            ),
            (all(1 <= h <= MAX_WIDTH for h in model.hidden), f"hidden widths must be between 1 and {MAX_WIDTH}"),
            (
                len(model.input_shape) == 3 and all(1 <= d <= MAX_WIDTH for d in model.input_shape),
                f"input_shape must be [channels, height, width], each between 1 and {MAX_WIDTH}",
            ),
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
            (data.val_size >= 0, "val_size must be zero or positive"),
            (
                data.val_size > 0 or (self.select == "last" and not self.patience),
                f"{_judged_on_validation(self)} the validation ELBO, and val_size is 0: set --val-size above 0 "
                "(a split held out of train), or drop it",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise VaekitError(message if ":" in message else f"{message}: change that setting")
        chosen = [(s.choices, s.value(self)) for s in settings().values() if isinstance(s.choices, Registry)]
        check_parts(self, chosen)
        return self

    def _floats(self) -> dict[str, float]:
        """Every float setting by its flat name, for the finiteness check."""
        values = {name: spec.value(self) for name, spec in settings().items()}
        return {name: value for name, value in values.items() if isinstance(value, float)}

    def to_dict(self) -> dict[str, Any]:
        """The config as config.json keeps it: every part's own setting written out, defaults included."""
        raw = {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}
        own = [spec for spec in settings().values() if spec.section == OPTIONS]
        raw["model"]["options"] = {spec.name: spec.value(self) for spec in own}
        return raw

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
        raw_model = dict(raw.pop("model", {}))
        options = _options(raw_model.pop("options", {}), raw_model)
        model = _build(ModelConfig, raw_model, "model", options=options)
        data = _build(DataConfig, raw.pop("data", {}), "data")
        config: TrainConfig = _build(cls, raw, "train", model=model, data=data)
        return config


def _judged_on_validation(config: TrainConfig) -> str:
    """What of `config` judges epochs on the validation split, as the refusal without one names it."""
    named = [f"--select {config.select}"] if config.select != "last" else []
    named += [f"--patience {config.patience}"] if config.patience else []
    return " and ".join(named) + (" judge" if len(named) > 1 else " judges") + " epochs by"


@dataclass(frozen=True)
class Setting:
    """One setting a user chooses, by its flat name (a `vaekit train` flag and TOML key): where it lives in
    TrainConfig, and what `setting()` wrote beside its default."""

    name: str
    section: str  # "" (TrainConfig itself), "model", "data" or OPTIONS (ModelConfig.options, a part's own)
    default: Any
    help: str
    panel: str
    choices: Collection[str] | None
    noun: str  # what a value is called in an error: "unknown {noun} 'x'", "give a {noun} from 0 to …"
    flag: str  # the flag's name, underscores for dashes
    shown: str  # the default as a help line shows it ("": none)
    bounds: tuple[int, int] | None  # the lowest and highest integer it takes

    def value(self, config: TrainConfig) -> Any:
        if self.section == OPTIONS:
            return config.model.options.get(self.name, self.default)
        return getattr(getattr(config, self.section) if self.section else config, self.name)

    def help_text(self) -> str:
        """The help line with its choices (a registry's parts with their own help lines)."""
        if self.choices is None:
            return self.help
        if isinstance(self.choices, Registry):
            listed = self.choices.choices_help()
        elif isinstance(self.choices, Mapping):  # name → its help
            listed = " | ".join(f"{name} ({text})" if text else name for name, text in self.choices.items())
        else:
            listed = " | ".join(self.choices)
        return f"{self.help}: {listed}" if self.help else listed


def _shown(default: Any) -> str:
    if default is None or isinstance(default, bool):
        return ""
    if isinstance(default, list):
        return ",".join(map(str, default)) or "none"
    return f"{default:g}" if isinstance(default, float) else str(default)


def _setting(f: dataclasses.Field[Any], section: str) -> Setting:
    """The Setting a dataclass field declares through `setting()`."""
    meta = f.metadata
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    choices = meta["choices"]
    noun = meta["noun"] or (choices.noun if isinstance(choices, Registry) else f.name)
    shown = _shown(default) if meta["shown"] is None else meta["shown"]
    flag = meta["flag"] or f.name
    return Setting(f.name, section, default, meta["help"], meta["panel"], choices, noun, flag, shown, meta["bounds"])


def settings() -> dict[str, Setting]:
    """Every setting a user chooses, by flat name: the config dataclasses' fields that `setting()` wrote (data, then
    model), each registered part's own settings (`Part.settings`), then training's. Read once the parts have
    registered (`import vaekit` does that); two parts may share a settings class, never two meanings of one name."""
    key = tuple(len(registry) for registry in REGISTRIES)
    if _collected.get("key") != key:
        found: dict[str, Setting] = {}
        for section, kind in (("data", DataConfig), ("model", ModelConfig), ("", TrainConfig)):
            if section == "":
                found.update(_part_settings(found))
            found.update({f.name: _setting(f, section) for f in dataclasses.fields(kind) if "help" in f.metadata})
        _collected.update(key=key, settings=found)
    collected: dict[str, Setting] = _collected["settings"]
    return collected


_collected: dict[str, Any] = {}  # settings() as last collected, and the registries' sizes it was collected at


def _part_settings(taken: Mapping[str, Setting]) -> dict[str, Setting]:
    """The settings the registered parts declare, in the order the parts registered."""
    found: dict[str, Setting] = {}
    for registry in REGISTRIES:
        for part in registry.values():
            for f in dataclasses.fields(part.settings) if part.settings is not None else ():
                spec = _setting(f, OPTIONS)
                if f.name in taken or found.get(f.name, spec) != spec:
                    raise ValueError(f"the {registry.kind} {part.name!r} declares a setting {f.name!r} already taken")
                found[f.name] = spec
    return found


def flat_settings() -> dict[str, str]:
    """Flat name → section of TrainConfig ("" itself, "model", "data" or OPTIONS)."""
    return {name: spec.section for name, spec in settings().items()}


def setting_of_flag() -> dict[str, str]:
    """Flag name → flat setting name. `vaekit train` names each flag (and TOML key) after the flat setting it sets,
    except where `setting(flag=…)` says otherwise because it reads better on a command line: --model ae, --warmup 2."""
    return {spec.flag: name for name, spec in settings().items()}


def options_of(model: ModelConfig, kind: type[T]) -> T:
    """A part's own settings (`kind`, the dataclass it registered as `Part.settings`) as `model` holds them."""
    values = {f.name: model.options.get(f.name, _setting(f, OPTIONS).default) for f in dataclasses.fields(kind)}
    return kind(**values)


def _options(raw: Any, legacy: dict[str, Any]) -> dict[str, Any]:
    """config.json's model.options, checked: each a setting some part declares, of its default's kind. A setting an
    older config.json kept beside the model's own (`"mixtures": 5`) moves here from `legacy`."""
    if not isinstance(raw, dict):
        raise VaekitError("model.options must be a JSON object of part settings: fix or restore the config")
    declared = {name: spec for name, spec in settings().items() if spec.section == OPTIONS}
    options = dict(raw)
    for name in declared:
        if name in legacy:
            options.setdefault(name, legacy.pop(name))
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise VaekitError(
            f"unknown part setting(s) {', '.join(unknown)}: valid ones are {', '.join(sorted(declared)) or 'none'}"
        )
    for name, value in options.items():
        if not _same_kind(value, declared[name].default):
            kind = type(declared[name].default).__name__
            raise VaekitError(f"setting {name} = {value!r} should be a {kind}: fix the value")
    return options


def with_overrides(config: TrainConfig, flat: dict[str, Any]) -> TrainConfig:
    """A copy of `config` with flat settings (`latent_dim=8`, `latent-dim=8`) applied; unknown names are errors."""
    raw = config.to_dict()
    sections = flat_settings()
    for key, value in flat.items():
        name = key.replace("-", "_")
        if name not in sections:
            raise VaekitError(f"unknown setting {key!r}: valid ones are {', '.join(sorted(sections))}")
        section = sections[name]
        where = raw["model"]["options"] if section == OPTIONS else raw[section] if section else raw
        where[name] = value
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
    return settings()[name].value(config)


def as_flags(config: TrainConfig, names: tuple[str, ...]) -> list[str]:
    """`--gaussian-scale 1e-30` for each of `names` that `config` sets away from its default, as a user typed it."""
    default = TrainConfig()
    flags = []
    for name in names:
        value = flat_value(config, name)
        if value != flat_value(default, name):
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            flags.append(f"--{settings()[name].flag.replace('_', '-')} {shown}")
    return flags
