"""Registries of the model's parts: one dict per kind, name → part, that each part fills from its own module.

A part declares here what the rest of vaekit needs to know of it without building it: its name, its help line, its
own settings (a small dataclass) and the requirements it places on the other settings (each a predicate with one
message). The config validation, the
`vaekit train` options and their help panels, TOML keys and the docs all read these tables, so a new part is one new
module under `vaekit/model/` that calls `register`, plus its tests. What the part *does* is attached by its module
too, as `impl`.

This module imports no torch and no other stage: the part modules (`vaekit.model`, imported by the package itself)
fill the registries, and everyone else reads them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.config import TrainConfig


@dataclass(frozen=True)
class Requirement:
    """What a part needs of the other settings: `holds(config)`, or the one-line `message` (which says the fix)."""

    holds: Callable[[TrainConfig], bool]
    message: str | Callable[[TrainConfig], str]

    def text(self, config: TrainConfig) -> str:
        return self.message(config) if callable(self.message) else self.message


@dataclass(frozen=True)
class Part:
    """One registered part: its name (the config value that selects it), its help line, its requirements, what it
    derives from the other settings once they are valid (`settle`: a default width, the size of a code), and `impl`:
    the part itself as its kind's module uses it (a builder, or an object with its kind's interface)."""

    name: str
    help: str = ""
    requires: tuple[Requirement, ...] = ()
    settle: Callable[[TrainConfig], None] | None = None
    impl: Any = None
    export: str | None = None  # what export.json says of it where the part says more than its distribution does
    doc: str = ""  # its line in the docs' table, where that says more than the help line (the paper, its options)
    # Its own settings: a dataclass whose fields `vaekit.config.setting()` wrote. They become `vaekit train` flags,
    # TOML keys and checked config values like the settings config.py declares, kept in `ModelConfig.options`; the
    # part reads them with `vaekit.config.options_of(model_config, ItsSettings)`.
    settings: type | None = None


@dataclass(frozen=True)
class Output:
    """One tensor an exported graph returns: its name there, the distribution's attribute it holds, and how to read
    it. A distribution class lists its own as `export` (a tuple of these), or says in one line why it has none."""

    name: str
    attribute: str
    meaning: str


Exported = tuple[Output, ...] | str  # a distribution's graph outputs, or the one-line reason it has no export


class Registry(dict[str, Part]):
    """Name → part for one kind of part, in the order the parts registered; a config setting picks one by name, and
    an unknown name is a one-line error that lists the others."""

    def __init__(self, kind: str, noun: str | None = None) -> None:
        super().__init__()
        self.kind = kind  # e.g. "prior"
        self.noun = noun or kind  # how an unknown name is reported ("unknown prior 'x'")

    def register(self, part: Part) -> Part:
        """Add `part`; a second part under one name is a programming error, caught at import."""
        if part.name in self:
            raise ValueError(f"two {self.kind} parts are named {part.name!r}")
        self[part.name] = part
        return part

    def names(self) -> tuple[str, ...]:
        return tuple(self)

    def __missing__(self, name: str) -> Part:
        raise VaekitError(f"unknown {self.noun} {name!r}: use one of {self.names()}")

    def choices_help(self) -> str:
        """`a (its help) | b | c (its help)`: the choices as a help line shows them."""
        return " | ".join(f"{p.name} ({p.help})" if p.help else p.name for p in self.values())


POSTERIORS = Registry("posterior family", "latent")  # picked by `latent`: the kind of code
KINDS = Registry("model kind", "model")  # picked by `kind`: a VAE, or the autoencoder's point mass
PRIORS = Registry("prior")
LIKELIHOODS = Registry("likelihood")
NETWORKS = Registry("network")
OBJECTIVES = Registry("objective")
CONDITIONS = Registry("condition")  # what else than z the encoder and decoder see (`--condition`)
SAMPLERS = Registry("sampler")  # what `vaekit sample` decodes draws of (`vaekit.analysis.samplers`)
REGISTRIES = (KINDS, POSTERIORS, NETWORKS, LIKELIHOODS, PRIORS, OBJECTIVES, CONDITIONS, SAMPLERS)


def check_parts(config: TrainConfig, selected: list[tuple[Registry, str]]) -> None:
    """The one place parts' requirements are checked: every selected part's, in the order given; the first that
    fails is the error. Then each part settles what it derives from the others."""
    parts = [registry[name] for registry, name in selected]
    for part in parts:
        for requirement in part.requires:
            if not requirement.holds(config):
                raise VaekitError(requirement.text(config))
    for part in parts:
        if part.settle is not None:
            part.settle(config)


def markdown_table(registry: Registry) -> str:
    """The registry as a Markdown table (name, docs line or else help line, and the flags of its own settings with
    their defaults), for the docs."""
    rows = [f"| `{part.name}` | {part.doc or part.help}{settings_text(part)} |" for part in registry.values()]
    return "\n".join([f"| {registry.kind} | what it is |", "| --- | --- |", *rows])


def settings_text(part: Part) -> str:
    """` — settings: --mixtures (default 5): its help` for a part with settings of its own, else nothing."""
    if part.settings is None:
        return ""
    described = []
    for field in dataclasses.fields(part.settings):
        flag = "--" + (field.metadata.get("flag") or field.name).replace("_", "-")
        described.append(f"`{flag}` (default {field.default}): {field.metadata.get('help', '')}")
    return " — settings: " + "; ".join(described)


TABLE_MARKER = re.compile(r"<!--\s*parts:\s*([a-z][a-z ]*?)\s*-->")  # <!-- parts: likelihood -->


def fill_part_tables(markdown: str) -> str:
    """A docs page with each `<!-- parts: KIND -->` marker replaced by that kind's registry as a table, so a part
    reaches the docs from its own module (the docs build's hook calls this). Call it once the parts have registered
    (`import vaekit`); an unknown kind is an error, which fails the docs build."""
    by_kind = {registry.kind: registry for registry in REGISTRIES}

    def table(marker: re.Match[str]) -> str:
        kind = marker.group(1)
        if kind not in by_kind:
            raise ValueError(f"<!-- parts: {kind} --> names no kind of part: use one of {', '.join(by_kind)}")
        return markdown_table(by_kind[kind])

    return TABLE_MARKER.sub(table, markdown)
