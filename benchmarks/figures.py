"""Every figure the README and the docs quote is held by a file a command wrote, or by a published paper we cite.

A figure is a number with a decimal point in a page's prose, tables or output blocks: a bound, an AUROC, a ratio, a
time. It is *held* when a results file under benchmarks/ (results.json, results.md, and the outputs in
benchmarks/outputs/; not a record marked withdrawn) or benchmarks/published.json has a number that rounds to it at
the decimals the page shows (a percentage may also hold a fraction a hundred times smaller). Commands are not
figures: inline code and fenced blocks in a language (bash, python, toml) are skipped, as are version strings
(2.13.0), link targets and the tables a script renders between markers (their own tests re-render them).
tests/test_figures.py fails when any page quotes a figure that nothing holds, so a number reaches the docs only by a
command that wrote it down (`make bench`, the scripts in benchmarks/) or from a source the page cites.

    python benchmarks/figures.py          # each figure nothing holds, as page:line: figure
"""

from __future__ import annotations

import bisect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PUBLISHED = ROOT / "benchmarks" / "published.json"
OUTPUTS = ROOT / "benchmarks" / "outputs"
FIGURE = re.compile(r"(?<![\w.,/-])[-+−]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)(e[-+]?\d+)?(?![\w]*\.\d)(%?)")
ANY_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # 71,543.9 as a table prints it
SKIPPED_BLOCK = re.compile(r"^```(bash|sh|python|toml|console|json)\n.*?^```", flags=re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]+`")
LINK_TARGET = re.compile(r"\]\([^)\s]+\)")
COMMENT = re.compile(r"<!--.*?-->", flags=re.DOTALL)
RENDERED = re.compile(r"<!-- why-table -->.*?<!-- /why-table -->", flags=re.DOTALL)  # its own test re-renders it
OUTPUT_BLOCK = re.compile(r"<!-- output: ([\w-]+) -->\s*```\n(.*?)```", flags=re.DOTALL)
QUOTED_BLOCK = re.compile(r"<!-- from: ([\w./-]+) -->\s*```\n(.*?)```", flags=re.DOTALL)
ELISION = "..."


@dataclass(frozen=True)
class Figure:
    page: Path
    line: int
    text: str
    value: float
    decimals: int
    percent: bool


def withdrawn(folder: Path) -> bool:
    """A results folder kept as history (its results.json says why it is withdrawn) holds no figures to quote."""
    record = folder / "results.json"
    return record.exists() and '"withdrawn"' in record.read_text(encoding="utf-8")[:200]


def source_files() -> list[Path]:
    """The files figures may come from: what the benchmarks wrote (not the withdrawn records), their recorded
    outputs, the cited papers."""
    bench = ROOT / "benchmarks"
    files = [*bench.rglob("results.json"), *bench.rglob("results.md"), *sorted(OUTPUTS.glob("*.txt")), PUBLISHED]
    return sorted(path for path in set(files) if path.exists() and not withdrawn(path.parent))


def held_values(files: list[Path]) -> list[float]:
    """Every number the source files hold, sorted for a search by interval."""
    texts = [path.read_text(encoding="utf-8") for path in files]
    values = [float(token) for text in texts for token in ANY_NUMBER.findall(text)]
    values += [float(token.replace(",", "")) for text in texts for token in GROUPED.findall(text)]
    return sorted({abs(value) for value in values})


def _blank(match: re.Match[str]) -> str:
    """Blank out what a pattern matched but keep its line breaks, so line numbers stay the page's."""
    return re.sub(r"[^\n]", " ", match.group())


def figures(page: Path) -> Iterator[Figure]:
    """The figures a page quotes, with commands, link targets and comments left out."""
    text = page.read_text(encoding="utf-8")
    for pattern in (RENDERED, SKIPPED_BLOCK, COMMENT, INLINE_CODE, LINK_TARGET):
        text = pattern.sub(_blank, text)
    for number, line in enumerate(text.splitlines(), start=1):
        for match in FIGURE.finditer(line):
            whole, fraction, exponent, percent = match.groups()
            value = float(whole.replace(",", "") + fraction + (exponent or ""))
            yield Figure(page, number, match.group().strip("+−-"), value, len(fraction) - 1, percent == "%")


def is_held(figure: Figure, values: list[float]) -> bool:
    """Some held number rounds to the figure at its decimals (for a percentage, also a fraction of it)."""
    tolerance = 0.5 * 10.0**-figure.decimals + 1e-9
    candidates = [(figure.value, tolerance)]
    if figure.percent:
        candidates.append((figure.value / 100, tolerance / 100))
    for target, within in candidates:
        low = bisect.bisect_left(values, target - within)
        if low < len(values) and values[low] <= target + within:
            return True
    return False


def unheld(pages: list[Path] = PAGES) -> list[Figure]:
    values = held_values(source_files())
    return [figure for page in pages for figure in figures(page) if not is_held(figure, values)]


def output_blocks(page: Path) -> list[tuple[str, str]]:
    """The page's recorded outputs: (name, block) for each fenced block after an `<!-- output: NAME -->` marker."""
    return OUTPUT_BLOCK.findall(page.read_text(encoding="utf-8"))


def quoted_blocks(page: Path) -> list[tuple[str, str]]:
    """The blocks a page copies from a results file: (path, block) after a `<!-- from: PATH -->` marker."""
    return QUOTED_BLOCK.findall(page.read_text(encoding="utf-8"))


def is_excerpt(block: str, recorded: str) -> bool:
    """The block is the recorded output, where a line `...` may stand for lines left out: the runs of lines between
    such marks appear in the recording whole and in order, the first at its start and the last at its end unless a
    `...` comes before or after them."""
    lines = recorded.splitlines()
    runs: list[list[str]] = [[]]
    for line in block.splitlines():
        if line.strip() == ELISION:
            runs.append([])
        else:
            runs[-1].append(line.rstrip())
    at = 0
    for number, run in enumerate(runs):
        first, last = number == 0, number == len(runs) - 1
        places = [i for i in range(at, len(lines) - len(run) + 1) if lines[i : i + len(run)] == run]
        if first:
            places = [i for i in places if i == 0]
        if last:
            places = [i for i in places if i + len(run) == len(lines)] if run or len(runs) == 1 else places[:1]
        if not places:
            return False
        at = places[0] + len(run)
    return True


def main() -> None:
    missing = unheld()
    for figure in missing:
        print(f"{figure.page.relative_to(ROOT)}:{figure.line}: {figure.text}")
    print(f"{len(missing)} figures held by no results file", file=sys.stderr)
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    main()
