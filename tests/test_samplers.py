"""The sampler registry: `vaekit sample`'s options, help panels and refusals come from each sampler's settings."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import invoke
from vaekit.analysis import samplers
from vaekit.errors import VaekitError
from vaekit.parts import SAMPLERS


def test_every_sampler_option_is_in_the_help_under_its_sampler_with_its_help_and_default() -> None:
    code, stdout, _ = invoke("sample", "--help")
    assert code == 0
    samplers.load()
    for name, part in SAMPLERS.items():
        assert f"--sampler {name}" in stdout and name in stdout.split("--sampler ")[1]  # a panel, and a choice
        panel = stdout.split(f"--sampler {name} ")[1]
        for field in dataclasses.fields(part.impl.settings):
            assert "--" + field.name.replace("_", "-") in panel
            assert field.metadata["help"].split()[0] in panel
            if field.default is not None:
                assert f"[default: {field.default}]" in " ".join(panel.replace("│", " ").split())


def test_settings_take_what_is_given_and_the_defaults_for_the_rest() -> None:
    gmm = samplers.settings_of("gmm", {"components": 3, "fit_images": None, "label": None})
    assert (gmm.components, gmm.fit_images) == (3, dataclasses.fields(gmm)[1].default)
    assert samplers.settings_of("prior", {"label": 2, "components": None}).label == 2


def test_an_option_of_another_sampler_is_refused_naming_its_sampler() -> None:
    with pytest.raises(
        VaekitError, match=r"^--fit-images sets up --sampler gmm: add --sampler gmm, or drop --fit-images$"
    ):
        samplers.settings_of("prior", {"fit_images": 50})
    with pytest.raises(VaekitError, match=r"^--label sets up --sampler prior"):
        samplers.settings_of("gmm", {"label": 1})
    with pytest.raises(VaekitError, match="unknown sampler 'vamp'"):
        samplers.settings_of("vamp", {})
