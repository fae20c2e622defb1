"""The README is executable: the blocks marked as run by this file must work as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaekit.cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- The block below is run by tests/test_readme.py. -->"


def marked_blocks(language: str) -> list[str]:
    pattern = re.escape(MARKER) + r"\s*```" + language + r"\n(.*?)```"
    return re.findall(pattern, README.read_text(), flags=re.DOTALL)


@pytest.mark.slow
def test_readme_cli_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = marked_blocks("bash")
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert len(commands) >= 5
    for command in commands:
        assert command[0] == "vaekit"
        result = CliRunner().invoke(app, command[1:])
        assert result.exit_code == 0, f"{' '.join(command)}: {result.stderr}"
    run = tmp_path / "runs" / "digits"  # every command writes into the run folder
    for picture in ("sample.png", "reconstruct.png", "latent/interpolate.png"):
        assert (run / picture).stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = marked_blocks("python")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    for run in ("api-demo", "kl-watch"):
        assert (tmp_path / "runs" / run / "model.safetensors").exists()


def test_readme_pictures_exist() -> None:
    for link in re.findall(r"\]\((docs/images/[^)]+)\)", README.read_text()):
        assert (README.parent / link).is_file(), link


def test_every_path_the_readme_names_exists() -> None:
    """The README's file map and prose point at real files (a module moved without its README line would not)."""
    named = set(re.findall(r"`?((?:src/vaekit|benchmarks|tests)/[\w/]+\.(?:py|sh))", README.read_text()))
    root = README.parent
    assert named, "the README names no files"
    assert sorted(path for path in named if not (root / path).exists()) == []
