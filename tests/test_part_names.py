"""Only a part's own module asks which part a run has: code outside `vaekit/model/` that names a specific part, or
compares a part-picking setting with a name, fails here. The defaults in `config.py` (a choice, not a question) are the
one exception; `elbo`, `vae`, `prior`, `none` and `label` are also ordinary words (metrics, report sections, columns),
so only comparisons catch them."""

from __future__ import annotations

import re
from pathlib import Path

from vaekit.analysis import samplers
from vaekit.parts import REGISTRIES

SOURCE = Path(__file__).parents[1] / "src" / "vaekit"
ALSO_WORDS = {"elbo", "vae", "prior", "none", "label"}  # also ordinary words: only comparisons catch them
# Configurations, not questions: the why report's control runs are settings it trains, as a user's TOML would be.
# The samplers' own modules live beside the analysis they draw with.
ALLOWED = {
    "analysis/why/runs.py",
    *(module.removeprefix("vaekit.").replace(".", "/") + ".py" for module in samplers.MODULES),
}
PICKERS = ("kind", "latent", "network", "likelihood", "prior", "objective", "condition")
COMPARISON = re.compile(rf"(\b(model|config)\.({'|'.join(PICKERS)})|\bsampler)\s*(==|!=|\bin\b|\bnot in\b)\s*[\"'(]")
DEFAULT = re.compile(r"=\s*setting\(\s*[\"'][\w-]+[\"']")  # `network: str = setting("mlp", …)` in config.py


def names() -> set[str]:
    samplers.load()  # the sampler parts register when the sample command needs them
    return {name for registry in REGISTRIES for name in registry} - ALSO_WORDS


def offences(root: Path, named: set[str]) -> list[str]:
    quoted = re.compile(r"[\"'](" + "|".join(map(re.escape, sorted(named, key=len, reverse=True))) + r")[\"']")
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("model/") or relative in ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if COMPARISON.search(code) or (quoted.search(code) and not DEFAULT.search(code)):
                found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_no_code_outside_the_model_names_a_part() -> None:
    assert offences(SOURCE, names()) == []


def test_the_search_finds_a_planted_name_and_a_planted_question(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "priors.py").write_text('if prior == "vamp": pass\n')
    (tmp_path / "export.py").write_text('label = "vamp"\nif config.model.objective == "elbo": pass\n')
    (tmp_path / "cli.py").write_text('if sampler == "prior": pass\nkind = "gmm"\n')
    assert len(offences(tmp_path, names())) == 4


def test_a_docs_marker_naming_no_kind_of_part_fails_the_docs_build() -> None:
    import pytest

    from vaekit.parts import fill_part_tables

    assert "| `mog` |" in fill_part_tables("<!-- parts: prior -->")
    with pytest.raises(ValueError, match="names no kind of part: use one of model kind, posterior family"):
        fill_part_tables("<!-- parts: priors -->")
