"""Packaging facts that a wheel build would only reveal later: the version, the package data, the changelog.

Building the wheel and installing it is CI's job (`make wheel-check`); these checks read files and run in no time.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import vaekit
import vaekit.version
from vaekit.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vaekit"


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_flag_prints_the_installed_version() -> None:
    try:
        installed = importlib.metadata.version("vaekit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("vaekit is not installed in this environment: no metadata to compare with")
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"vaekit {installed}\n"


def test_version_flag_falls_back_to_the_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(vaekit.version, "__version__", "9.8.7")
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    result = CliRunner().invoke(app, ["--version"])
    assert (result.exit_code, result.output) == (0, "vaekit 9.8.7\n")


def test_the_version_has_one_source() -> None:
    """pyproject states no version of its own: it reads vaekit.version.__version__, which the package re-exports."""
    config = pyproject()
    assert "version" not in config["project"]
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "vaekit.version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", vaekit.__version__) and vaekit.__version__ == vaekit.version.__version__


def test_package_data_globs_match_files() -> None:
    globs = pyproject()["tool"]["setuptools"]["package-data"]["vaekit"]
    empty = [pattern for pattern in globs if not any(path.is_file() for path in PACKAGE.glob(pattern))]
    assert empty == [], f"package-data globs that match no file under {PACKAGE}"


def test_every_data_file_is_package_data() -> None:
    """A file the package reads at run time (a page, a template) is shipped in the wheel only if a glob names it."""
    globs = pyproject()["tool"]["setuptools"]["package-data"]["vaekit"]
    shipped = {path for pattern in globs for path in PACKAGE.glob(pattern)}
    data = {
        path
        for path in PACKAGE.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }
    assert sorted(str(path.relative_to(PACKAGE)) for path in data - shipped) == []


def test_changelog_latest_release_is_the_package_version() -> None:
    headings = re.findall(r"^## \[([^\]]+)\](.*)$", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings and headings[0][0] == "Unreleased", "CHANGELOG.md starts with an [Unreleased] section"
    released = [(version, rest) for version, rest in headings if version != "Unreleased"]
    assert released, "CHANGELOG.md has no released version"
    version, rest = released[0]
    assert version == vaekit.__version__
    assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", rest), f"[{version}]{rest}: the release date is missing"


def test_every_docs_page_is_in_the_nav() -> None:
    """Each page under docs/ is its own source and has a place in mkdocs.yml's nav; a nav entry names a real page,
    and a file a page includes (`--8<-- "path"`, from the repository root) exists."""
    nav = re.findall(r"^ +- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), flags=re.MULTILINE)
    pages = {page.relative_to(ROOT / "docs").as_posix() for page in (ROOT / "docs").rglob("*.md")}
    assert sorted(pages - set(nav)) == [], "docs pages missing from the nav"
    assert sorted(set(nav) - pages) == [], "nav entries with no page"
    included = [
        path
        for page in (ROOT / "docs").rglob("*.md")
        for path in re.findall(r'^--8<-- "(.+)"$', page.read_text(), re.M)
    ]
    assert sorted(path for path in included if not (ROOT / path).is_file()) == []
