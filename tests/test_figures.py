"""Numbers are generated, not typed: every figure the README and the docs quote is held by a file that a command
wrote (or by a paper the page cites), and every example output a page shows is the output the command printed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def benchmark_module(name: str) -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # benchmarks/outputs.py imports its helpers from benchmarks/demo.py
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up while they are made
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


figures = benchmark_module("figures")
outputs = benchmark_module("outputs")
SHOWN = [(page, name, block) for page in figures.PAGES for name, block in figures.output_blocks(page)]
QUOTED = [(page, path, block) for page in figures.PAGES for path, block in figures.quoted_blocks(page)]


def test_every_figure_the_pages_quote_is_held_by_a_results_file() -> None:
    missing = [f"{f.page.relative_to(ROOT)}:{f.line}: {f.text}" for f in figures.unheld()]
    assert missing == [], "figures no results file holds (run the command that makes them, or cite the source)"


def test_a_typed_figure_fails_the_check_and_a_cited_one_passes(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Burda et al. give 82.90 nats; our row reached 81.234567 nats.\n"
        "`--lr 0.000123` is a command, not a figure.\n"
        "```bash\nvaekit train --beta 0.987654\n```\n",
        encoding="utf-8",
    )
    assert [figure.text for figure in figures.unheld([page])] == ["81.234567"]


def test_every_cited_figure_is_quoted_and_names_its_source() -> None:
    """benchmarks/published.json holds what the pages cite from papers, each with its source: nothing else."""
    records = json.loads(figures.PUBLISHED.read_text(encoding="utf-8"))
    text = "\n".join(page.read_text(encoding="utf-8") for page in figures.PAGES)
    for record in records:
        assert record["what"] and record["source"], record
        assert f"{record['figure']:.2f}" in text or f"{record['figure']:.3f}" in text, record


def test_a_percentage_is_held_by_its_fraction_and_rounding_is_to_the_shown_decimals() -> None:
    values = sorted([0.4454, 86.2])
    held = figures.Figure(Path("p"), 1, "44.5%", 44.5, 1, True)
    rounded = figures.Figure(Path("p"), 1, "86.20", 86.2, 2, False)
    off = figures.Figure(Path("p"), 1, "86.21", 86.21, 2, False)
    assert figures.is_held(held, values) and figures.is_held(rounded, values) and not figures.is_held(off, values)


def test_the_pages_show_recorded_outputs() -> None:
    """The example outputs are shown from the recording (the count guards against a marker that matches nothing)."""
    assert len(SHOWN) >= 6 and {name for _, name, _ in SHOWN} <= set(outputs.BY_NAME)


@pytest.mark.parametrize(("page", "name", "block"), SHOWN, ids=[f"{p.name}:{n}" for p, n, _ in SHOWN])
def test_an_output_a_page_shows_is_what_the_command_printed(page: Path, name: str, block: str) -> None:
    recorded = (outputs.OUT / f"{name}.txt").read_text(encoding="utf-8")
    assert figures.is_excerpt(block, recorded), f"{page.name} shows {name} otherwise than recorded"
    entries = {entry["name"]: entry for entry in json.loads((outputs.OUT / "results.json").read_text())["outputs"]}
    assert "+changes" not in entries[name]["commit"] and entries[name]["command"] == outputs.BY_NAME[name].command


def test_a_block_a_page_copies_from_a_results_file_is_in_it_as_shown() -> None:
    """The speed and memory blocks are copied from benchmarks/results.md, which `make bench` writes: whole lines,
    unchanged, so a page cannot keep an older sitting's figures beside the file's newer ones."""
    assert len(QUOTED) >= 9
    for page, path, block in QUOTED:
        assert block in (ROOT / path).read_text(encoding="utf-8"), f"{page.name}: a block {path} does not hold"


def test_an_excerpt_may_leave_lines_out_only_where_it_says_so() -> None:
    recorded = "epoch 1\nepoch 2\nepoch 3\n\ntest ELBO -245.26\n"
    assert figures.is_excerpt("epoch 1\n...\nepoch 3\n\ntest ELBO -245.26", recorded)
    assert not figures.is_excerpt("epoch 1\nepoch 3\n\ntest ELBO -245.26", recorded)  # a line dropped silently
    assert not figures.is_excerpt("epoch 1\n...\ntest ELBO -245.25", recorded)  # a figure changed


def test_the_outputs_runner_records_every_step_in_order(tmp_path: Path) -> None:
    """Each step needs only steps listed before it, so one pass in order can run them."""
    names = [step.name for step in outputs.STEPS]
    assert all(names.index(need) < names.index(step.name) for step in outputs.STEPS for need in step.needs)
    assert [step.name for step in outputs.with_needs(["evaluate-demo"])] == ["train-demo", "evaluate-demo"]
