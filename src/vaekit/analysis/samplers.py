"""The samplers `vaekit sample --sampler NAME` decodes draws of: one part each in `vaekit.parts.SAMPLERS`.

A sampler's module registers it with its settings, a small frozen dataclass whose fields are the sampler's options
(default and help line in the field), and its `draw`. The command's options, their help and the refusal of an option
that belongs to another sampler are all made from these, so a new sampler is one module and its tests.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from vaekit.analysis.plots import sample_grid
from vaekit.errors import VaekitError
from vaekit.parts import SAMPLERS, Part
from vaekit.training.runs import Run

MODULES = ("vaekit.analysis.samplers", "vaekit.analysis.aggregate_sampler")  # the modules that register samplers
DEFAULT = "prior"  # what `vaekit sample` draws from unless told


@dataclass(frozen=True)
class Sampler:
    """A sampler as `vaekit sample` uses it: its `settings` class, and `draw(run, n, seed, settings)`, which returns
    the grid of decoded draws and a line to print beside it (or None)."""

    settings: type[Any]
    draw: Callable[[Run, int, int, Any], tuple[Image.Image, str | None]]


def setting(default: Any, help: str) -> Any:
    """A field of a sampler's settings: its default and its help line."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Option:
    """One option of one sampler: the sampler's name, the option's name, type, default and help line."""

    sampler: str
    name: str
    type: Any
    default: Any
    help: str


def options() -> dict[str, Option]:
    """Every sampler's options by name, samplers in registry order; two samplers may not share an option's name."""
    load()
    found: dict[str, Option] = {}
    for part in SAMPLERS.values():
        types = typing.get_type_hints(part.impl.settings)
        for field in dataclasses.fields(part.impl.settings):
            if field.name in found:
                raise ValueError(f"samplers {found[field.name].sampler} and {part.name} share an option {field.name!r}")
            found[field.name] = Option(part.name, field.name, types[field.name], field.default, field.metadata["help"])
    return found


def settings_of(name: str, given: dict[str, Any]) -> Any:
    """Sampler `name`'s settings from the options `given` (None: not given, the default holds). An option of another
    sampler is a one-line refusal that names it."""
    part = SAMPLERS[name]
    for option, value in given.items():
        owner = options()[option].sampler
        if value is not None and owner != name:
            flag = "--" + option.replace("_", "-")
            raise VaekitError(f"{flag} sets up --sampler {owner}: add --sampler {owner}, or drop {flag}")
    own = {field.name for field in dataclasses.fields(part.impl.settings)}
    return part.impl.settings(**{key: value for key, value in given.items() if key in own and value is not None})


def load() -> None:
    """Import every module that registers a sampler (they import torch and the run's stages, so only when asked)."""
    for module in MODULES:
        importlib.import_module(module)


@dataclass(frozen=True)
class PriorSettings:
    label: int | None = setting(None, "Class to draw (a run trained with --condition label; else a row per class).")


def draw_prior(run: Run, n: int, seed: int, settings: PriorSettings) -> tuple[Image.Image, str | None]:
    return sample_grid(run.model, n, seed, settings.label), None


SAMPLERS.register(Part("prior", "the run's prior", impl=Sampler(PriorSettings, draw_prior)))
