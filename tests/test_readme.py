"""The front page and the docs pages are executable and connected: the blocks marked as run by this file work as
written, every relative link and named file exists, and the README stays a front page."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaekit.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ROWS = ROOT / "benchmarks" / "protocol_rows.sh"  # the protocol rows' commands, committed before they run
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
MARKER = "<!-- The block below is run by tests/test_readme.py. -->"
FRONT_PAGE_LINES = 150
LINK = re.compile(r"\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.IGNORECASE)


def marked_blocks(page: Path, language: str) -> list[str]:
    pattern = re.escape(MARKER) + r"\s*```" + language + r"\n(.*?)```"
    return re.findall(pattern, page.read_text(encoding="utf-8"), flags=re.DOTALL)


def every_marked_block(language: str) -> list[str]:
    """The marked blocks of the README and the docs pages, each distinct block once (a page may repeat one)."""
    return list(dict.fromkeys(block for page in PAGES for block in marked_blocks(page, language)))


def test_readme_is_a_front_page() -> None:
    """At most 150 lines, and still the quick start: one tested command-line block and one tested Python block."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= FRONT_PAGE_LINES, f"README.md has {len(lines)} lines: move detail into a page under docs/"
    assert (len(marked_blocks(README, "bash")), len(marked_blocks(README, "python"))) == (1, 1)


def test_readme_links_every_docs_page() -> None:
    """The capability table reaches every page of the manual (the API reference has its own index)."""
    linked = {(README.parent / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    pages = {page.resolve() for page in DOCS.glob("*.md") if page.name not in ("benchmarks.md", "changelog.md")}
    assert sorted(page.name for page in pages - linked) == []


@pytest.mark.slow
def test_readme_cli_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = every_marked_block("bash")
    assert blocks
    monkeypatch.chdir(tmp_path)
    for block in blocks:
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
    blocks = every_marked_block("python")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    for run in ("api-demo", "kl-watch"):
        assert (tmp_path / "runs" / run / "model.safetensors").exists()


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    """Pictures, pages and reports, seen from the page that links them (a docs page sees from docs/)."""
    missing = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if path and not EXTERNAL.match(path) and not (page.parent / path).exists():
            missing.append(target)
    assert missing == []


def test_every_path_the_readme_names_exists() -> None:
    """The file maps and prose point at real files (a module moved without its line would not)."""
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    named = set(re.findall(r"`?((?:src/vaekit|benchmarks|tests)/[\w/]+\.(?:py|sh))", text))
    assert named, "the README and the docs name no files"
    assert sorted(path for path in named if not (ROOT / path).exists()) == []


def test_the_demo_figures_the_pages_quote_are_the_ones_its_results_file_records() -> None:
    """The README and the docs' front page quote `make demo`'s run; benchmarks/demo.py writes the file they come
    from, running the Makefile's own demo command."""
    results = json.loads((ROOT / "benchmarks" / "demo" / "results.json").read_text())
    assert f"\t$(BIN)/{results['command']}\n" in (ROOT / "Makefile").read_text()  # the run recorded is make demo's
    for page in (README, DOCS / "index.md"):
        text = page.read_text(encoding="utf-8")
        assert f"test ELBO {results['test_elbo']:.2f} nats/image" in text, page.name
        quoted = [int(n) for n in re.findall(r"about (\d+) seconds of training", text)]
        assert quoted == [round(results["train_seconds"], -1)], page.name


def test_the_why_table_is_the_one_its_results_file_gives() -> None:
    """docs/why.md's summary of `vaekit why` is written by benchmarks/why_report.py from benchmarks/why/results.json:
    every estimate, interval and verdict the page shows is one the report measured."""
    spec = importlib.util.spec_from_file_location("why_report", ROOT / "benchmarks" / "why_report.py")
    assert spec is not None and spec.loader is not None
    why_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(why_report)
    results = json.loads((ROOT / "benchmarks" / "why" / "results.json").read_text())
    page = (DOCS / "why.md").read_text(encoding="utf-8")
    shown = page.split(why_report.START, 1)[1].split(why_report.END, 1)[0].strip()
    assert shown == why_report.table(results)
    verdicts = [s["evidence"]["verdict"] for s in results["report"]["sections"] if s["evidence"]]
    assert len(verdicts) == 4 and set(verdicts) <= {"confirmed", "not confirmed"}


@pytest.mark.parametrize("folder", ["mnist-protocol", "fashion-mnist-protocol", "mnist-iwae5-2l-protocol"])
def test_the_protocol_rows_the_docs_quote_are_the_ones_their_results_files_record(folder: str) -> None:
    """docs/measured.md quotes the rows run under benchmarks/PROTOCOL.md: two seeds from a clean commit, with the
    budget benchmarks/protocol_rows.sh fixed for them, each seed's test NLL and their mean as
    benchmarks/FOLDER/results.json records them."""
    results = json.loads((ROOT / "benchmarks" / folder / "results.json").read_text())
    done = [row for row in results["rows"] if row["status"] == "done"]
    assert len(done) >= 2 and "+changes" not in results["hardware"]["commit"]
    committed = re.search(
        rf"--budget-epochs (\d+)[^\n]*\\\n\s*--out \"\$\{{OUT:-benchmarks/{folder}\}}\"", ROWS.read_text()
    )
    assert committed is not None, f"benchmarks/protocol_rows.sh has no row writing benchmarks/{folder}"
    assert results["protocol"]["val_size"] > 0 and results["protocol"]["budget_epochs"] == int(committed.group(1))
    text = (DOCS / "measured.md").read_text(encoding="utf-8")
    for row in done:
        assert f"seed {row['seed']}: {row['test_nll']:.2f}" in text
    mean = sum(row["test_nll"] for row in done) / len(done)
    assert f"mean **{mean:.2f}**" in text


def test_the_ood_figures_the_docs_quote_are_the_ones_its_results_file_records() -> None:
    """docs/evaluation.md quotes benchmarks/ood/results.json: every Fashion-MNIST → MNIST record's AUROC (but the
    per-layer KLs'), each model's and PyOD's, from two seeds of a clean commit."""
    rows = json.loads((ROOT / "benchmarks" / "ood" / "results.json").read_text())
    text = (DOCS / "evaluation.md").read_text(encoding="utf-8")
    quoted = [r for r in rows if (r["in"], r["out"]) == ("fashion-mnist", "mnist") and not r["score"].startswith("kl")]
    assert {"iw-nll", "llr>1", "recon", "pyod-vae", "pyod-vae-kl"} <= {r["score"] for r in quoted}
    vaekit_models = {r["model"] for r in quoted if r["model"].startswith("vaekit")}
    assert len(vaekit_models) >= 2 and any("(ladder)" in model for model in vaekit_models)  # the MLP's and the ladder's
    for r in quoted:
        assert len(r["seeds"]) >= 2 and "+changes" not in r["commit"]
        assert f"| `{r['score']}` | {r['auroc']:.3f} ({r['auroc_interval'][0]:.3f}–" in text, r
