"""The `vaekit why` report the docs show, recorded: docs/why/report.md with its figures, and benchmarks/why/results.json
(the report's numbers with the command, its wall time, commit and machine), from which docs/why.md's summary table is
written between its `<!-- why-table -->` markers. A test renders the table from the results file and fails when the
page quotes anything else.

    python benchmarks/why_report.py                       # vaekit why --dataset fashion-mnist --budget 15m
    python benchmarks/why_report.py --render              # only re-write docs/why.md's table from the results file
    python benchmarks/why_report.py --dataset digits --budget 60s --out /tmp/why   # the path, in a minute
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "why" / "results.json"
PAGE = ROOT / "docs" / "why.md"
START, END = "<!-- why-table -->", "<!-- /why-table -->"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def table(results: dict[str, Any]) -> str:
    """docs/why.md's summary: one row per claim, its evidence and verdict, from the results file alone."""
    rows = ["| claim | evidence | estimate (95% interval) | needs | verdict |", "|---|---|---|---|---|"]
    for section in results["report"]["sections"]:
        evidence = section["evidence"]
        if evidence is None:
            rows.append(f"| {section['title']} | control missing | — | — | not shown |")
            continue
        low, high = evidence["interval"]
        verdict = evidence["verdict"] if evidence["verdict"] == "confirmed" else f"**{evidence['verdict']}**"
        rows.append(
            f"| {section['title']} | {evidence['statistic']} | {_number(evidence['estimate'])} ({_number(low)} to "
            f"{_number(high)}; {evidence['n']} {evidence['unit']}) | {evidence['side']} {_number(evidence['null'])} "
            f"| {verdict} |"
        )
    minutes = results["wall_seconds"] / 60
    rows.append("")
    rows.append(
        f"`{results['command']}`: {minutes:.1f} min in all on {results['machine']['processor']} "
        f"({results['machine']['cores']} cores), commit {results['commit']}, {results['date']}; one training seed per "
        "arm."
    )
    return "\n".join(rows)


def render(results: dict[str, Any], page: Path = PAGE) -> None:
    """Write the table between the page's markers."""
    text = page.read_text(encoding="utf-8")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    page.write_text(f"{before}{START}\n{table(results)}\n{END}{after}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--out", type=Path, help="where to write instead of the docs (a check of the path)")
    parser.add_argument("--render", action="store_true", help="only re-write docs/why.md's table")
    parser.add_argument("--work", type=Path, help="keep the trained runs here (a second call measures them again "
                        "without training) [a temporary folder]")  # fmt: skip
    args = parser.parse_args()
    if args.render:
        render(json.loads(RESULTS.read_text()))
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from demo import commit, processor  # one definition of where a recorded run came from

    command = ["vaekit", "why", "--dataset", args.dataset, "--budget", args.budget]
    with tempfile.TemporaryDirectory() as temporary:
        work = str(args.work or temporary)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vaekit", *command[1:], "--out", work], check=True)
        wall = time.perf_counter() - start
        import torch

        results = {
            "command": " ".join(command), "wall_seconds": round(wall, 1), "commit": commit(),
            "date": datetime.now(UTC).date().isoformat(),
            "machine": {"processor": processor(), "cores": torch.get_num_threads(), "torch": torch.__version__},
            "report": json.loads((Path(work) / "report.json").read_text().replace(work, "OUT")),
        }  # fmt: skip
        docs = args.out or ROOT / "docs" / "why"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(docs / "figures", ignore_errors=True)
        shutil.copytree(Path(work) / "figures", docs / "figures")
        report = (Path(work) / "report.md").read_text().replace(work, "OUT")
        (docs / "report.md").write_text(report)
        target = (args.out / "results.json") if args.out else RESULTS
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=1) + "\n")
    if args.out is None:
        render(results)


if __name__ == "__main__":
    main()
