"""The package layout shows the data flow: imports run one way, from the model's parts down to the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import vaekit

# Each stage may import its own and earlier stages only.
STAGES = {
    "config": 0, "errors": 0, "devices": 0, "files": 0, "memory": 0,
    "model": 1, "data": 2, "training": 3, "analysis": 4, "export": 4, "tracking": 4, "api": 5, "web": 6, "cli": 7,
}  # fmt: skip
PACKAGE = Path(vaekit.__file__).parent


def imports_of(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaekit"):
            names = [f"vaekit.{alias.name}" for alias in node.names] if node.module == "vaekit" else [node.module]
            found += names
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("vaekit")]
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_every_module_belongs_to_a_stage() -> None:
    loose = [
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.parent == PACKAGE and path.stem not in STAGES and path.stem not in ("__init__", "__main__")
    ]
    assert not loose, f"modules outside every stage: {loose}"


def test_imports_run_one_way() -> None:
    backwards = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("vaekit", *path.relative_to(PACKAGE).with_suffix("").parts))
        own = stage_of(module)
        if own is None:  # vaekit/__init__.py and __main__.py sit above every stage
            continue
        for target in imports_of(path):
            other = stage_of(target)
            if other is not None and STAGES[other] > STAGES[own]:
                backwards.append(f"{module} imports {target}")
    assert not backwards, backwards


def test_the_layout_test_sees_a_backward_import(tmp_path: Path) -> None:
    """The check itself can fail: a model part that imported the trainer would be reported."""
    sample = tmp_path / "part.py"
    sample.write_text("from vaekit.training.loop import train\nimport vaekit.cli.main\n")
    targets = imports_of(sample)
    assert targets == ["vaekit.training.loop", "vaekit.cli.main"]
    assert all(STAGES[stage_of(t) or ""] > STAGES["model"] for t in targets)
