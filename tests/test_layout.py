"""The package layout shows the data flow: imports run one way, from the model's parts down to the command line.

Every top-level module and subpackage of vaekit is a stage; a module imports its own and earlier stages only, written
absolutely or relatively. The facade (vaekit/__init__.py) is for users: no module inside a stage imports names from it,
since it loads the later stages, and a module it loads that imported it back would find it half built.
"""

from __future__ import annotations

import ast
import functools
import shutil
from pathlib import Path

import pytest

import vaekit

# Each stage may import its own and earlier stages only.
STAGES = {
    "config": 0, "errors": 0, "devices": 0, "files": 0, "memory": 0, "parts": 0, "small_files": 0, "version": 0,
    "model": 1, "data": 2, "training": 3, "analysis": 4, "export": 4, "tracking": 4, "api": 5, "detector": 5,
    "web": 6, "cli": 7,
}  # fmt: skip
ABOVE_EVERY_STAGE = ("__init__", "__main__")  # the facade and `python -m vaekit`
PACKAGE = Path(vaekit.__file__).parent


def unstaged_entries(package: Path) -> list[str]:
    """Top-level modules and subpackages that STAGES does not place."""
    modules = {path.stem: path.name for path in package.glob("*.py") if path.stem not in ABOVE_EVERY_STAGE}
    folders = [path for path in package.iterdir() if path.is_dir() and any(path.rglob("*.py"))]
    subpackages = {path.name: f"{path.name}/" for path in folders}
    entries = modules | subpackages
    return [f"{package.name}/{entries[name]} belongs to no stage" for name in sorted(entries) if name not in STAGES]


def dotted_name(package: Path, path: Path) -> tuple[str, str]:
    """A file's module name and the package its relative imports start from."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


@functools.cache
def import_statements(source: str) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """(level, module, names) of every import in a source text, `import a.b` as (0, "a.b", ()). Cached by text: the
    copies of the package that the self-test plants violations in parse nothing twice."""
    found: list[tuple[int, str, tuple[str, ...]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
    return tuple(found)


def imports_of(package: Path, path: Path) -> list[str]:
    """The package modules a file imports, relative imports resolved; `<facade>` for a name taken from the facade."""
    _, base = dotted_name(package, path)
    root, found = package.name, []
    for level, module, names in import_statements(path.read_text()):
        if level:
            anchor = base.split(".")[: len(base.split(".")) - (level - 1)]
            module = ".".join([*anchor, module] if module else anchor)
        if module != root and not module.startswith(f"{root}."):
            continue
        if not names:  # `import vaekit` loads the facade; `import vaekit.cli.main`, that module
            found.append("<facade>" if module == root else module)
        for name in names:  # `from vaekit.training import loop` names a submodule; `from vaekit import train`, a name
            if is_module(package, f"{module}.{name}"):
                found.append(f"{module}.{name}")
            else:
                found.append("<facade>" if module == root else module)
    return found


def is_module(package: Path, name: str) -> bool:
    folder = package.parent.joinpath(*name.split("."))
    return folder.with_suffix(".py").is_file() or (folder / "__init__.py").is_file()


def layout_violations(package: Path) -> list[str]:
    """Every way the package breaks its layout: an unplaced module, a backward import, an import of the facade."""
    problems = unstaged_entries(package)
    for path in sorted(package.rglob("*.py")):
        module, _ = dotted_name(package, path)
        parts = module.split(".")
        if len(parts) == 1 or parts[1] in ABOVE_EVERY_STAGE or parts[1] not in STAGES:
            continue
        own = parts[1]
        for target in imports_of(package, path):
            if target == "<facade>":
                problems.append(f"{module} imports the package facade: import from the module that defines the name")
                continue
            other = target.split(".")[1]
            if other not in STAGES:
                problems.append(f"{module} imports {target}, which belongs to no stage")
            elif STAGES[other] > STAGES[own]:
                problems.append(f"{module} imports {target}: stage {other} comes after {own}")
    return problems


def test_every_module_belongs_to_a_stage_and_imports_run_one_way() -> None:
    assert layout_violations(PACKAGE) == []


# One planted file per kind of violation, and what the check must say about it.
PLANTED = {
    "absolute import of a later stage": (
        "model/planted.py", "from vaekit.training.loop import train\n",
        "vaekit.model.planted imports vaekit.training.loop: stage training comes after model",
    ),
    "plain import of a later stage": (
        "model/planted.py", "import vaekit.cli.main\n",
        "vaekit.model.planted imports vaekit.cli.main: stage cli comes after model",
    ),
    "relative import of a later stage": (
        "model/planted.py", "from ..training import loop\n",
        "vaekit.model.planted imports vaekit.training.loop: stage training comes after model",
    ),
    "relative import inside a subpackage's __init__": (
        "data/__init__.py", "from ..analysis.evaluate import evaluate\n",
        "vaekit.data imports vaekit.analysis.evaluate: stage analysis comes after data",
    ),
    "name taken from the facade": (
        "export.py", "from vaekit import __version__\n",
        "vaekit.export imports the package facade: import from the module that defines the name",
    ),
    "name taken from the facade, relatively": (
        "data/planted.py", "from .. import train\n",
        "vaekit.data.planted imports the package facade: import from the module that defines the name",
    ),
    "the facade imported whole": (
        "cli/planted.py", "def version() -> str:\n    import vaekit\n\n    return vaekit.__version__\n",
        "vaekit.cli.planted imports the package facade: import from the module that defines the name",
    ),
    "a subpackage missing from the table": ("plugins/__init__.py", "", "vaekit/plugins/ belongs to no stage"),
    "a module missing from the table": ("extras.py", "", "vaekit/extras.py belongs to no stage"),
}  # fmt: skip


@pytest.mark.parametrize("kind", PLANTED)
def test_the_layout_check_reports_a_planted_violation(kind: str, tmp_path: Path) -> None:
    """The check can fail: in a copy of the package, one planted file breaks the layout and is the one reported."""
    relative, source, expected = PLANTED[kind]
    copy = Path(shutil.copytree(PACKAGE, tmp_path / "vaekit", ignore=shutil.ignore_patterns("__pycache__", "static")))
    assert layout_violations(copy) == []
    planted = copy / relative
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(source + (planted.read_text() if planted.exists() else ""))
    assert layout_violations(copy) == [expected]
