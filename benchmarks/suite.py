"""`make bench`: every benchmark in one sitting, written to benchmarks/results.md.

Each benchmark prints its figures as ratios to a baseline it measures in the same run (the tutorial pipeline, a
minimal loop, the matmul rate, one process, the FLOP bound, one client, data in memory); this collects what they
print, with the machine, the commit and each benchmark's wall time, into one Markdown file. Run it on an otherwise
idle machine: two CPU-bound processes on a small machine slow each other several times over.

    python benchmarks/suite.py [--out benchmarks/results.md] [--only train_speed ...] [--quick]

--only reruns the benchmarks named and replaces their sections of an existing results file, leaving the others as
they were; every section names the date, machine and commit it was measured on, so a file updated in parts stays
truthful. --quick runs each benchmark that has one on sizes that take seconds: it checks the plumbing, and measures
nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, arguments, what its figures are measured against)
BENCHMARKS: list[tuple[str, list[str], str]] = [
    ("train_speed", [], "training throughput against the tutorial and a minimal loop; fraction of matmul rate"),
    ("train_speed", ["--batch-size", "1024", "--batches", "40"], "the same at batch 1024, where per-step costs fade"),
    ("binarize_speed", [], "training's fresh Bernoulli draw (uniform compare) against torch.bernoulli"),
    ("ddp_speed", [], "torchrun DDP, 2 processes against 1 process on the same cores"),
    ("evaluate_speed", [], "the k = 1000 importance-weighted evaluation against its FLOP bound"),
    ("iwae_speed", [], "IWAE k = 50 training, negligible weights dropped against every weight carried"),
    ("loop_costs", [], "each training-loop feature's cost, the loop with it against the loop without"),
    ("serve_latency", [], "explorer decode latency, 1 client against 8 concurrent clients"),
    ("memory_scaling", [], "resident memory and time per sample from packs of 10k to 1M images, against memory"),
    ("quality", [], "test −ELBO after 10 epochs against the tutorial pipeline"),
    ("demo", [], "make demo's run, recorded in benchmarks/demo/results.json: the figures the README quotes"),
    ("outputs", [], "the command outputs the docs show, recorded in benchmarks/outputs/ (about 20 minutes)"),
    ("why_report", [], "vaekit why --budget 15m, recorded in benchmarks/why/ for docs/why.md"),
]

QUICK = {
    "memory_scaling": ["--sizes", "300", "600", "--baseline-max", "300"],
    "iwae_speed": ["--dataset", "digits", "--k", "5", "--warmup-steps", "2", "--blocks", "1", "--block", "2"],
    "loop_costs": ["--dataset", "digits", "--batches", "30", "--rounds", "2", "--batch-size", "32"],
    "outputs": ["--dataset", "digits", "--epochs", "1", "--only", "train-demo", "--out", "/tmp/vaekit-outputs-quick"],
    "why_report": ["--dataset", "digits", "--budget", "60s", "--out", "/tmp/vaekit-why-quick"],
}
HEADER = [
    "# vaekit benchmarks",
    "",
    "Every figure is a ratio to a baseline measured in the same run; absolute rates move.",
    "",
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=HERE
    )
    changes = "+changes" if changed.stdout.strip() else ""  # the tree differed from the commit: not its code alone
    import torch

    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, torch {torch.__version__}; "
        f"commit {commit.stdout.strip() or 'unknown'}{changes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks (script names)")
    parser.add_argument("--quick", action="store_true", help="seconds-long sizes where a benchmark has them")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only]
    sections = earlier_sections(args.out) if args.only else {}
    failed = 0
    for script, arguments, about in chosen:
        arguments = QUICK.get(script, arguments) if args.quick else arguments
        command = [sys.executable, f"{script}.py", *arguments]
        title = f"## {script} {' '.join(arguments)}".rstrip()
        print(f"== {' '.join([script, *arguments])}", flush=True)
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        start = time.perf_counter()
        done = subprocess.run(command, cwd=HERE, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        output = done.stdout.rstrip() if done.returncode == 0 else (done.stdout + done.stderr).rstrip()
        print(output, flush=True)
        failed += done.returncode != 0
        status = "" if done.returncode == 0 else f" — FAILED (exit {done.returncode})"
        lines = [title, "", f"{about}. Measured {started} on {machine()}; {seconds:.0f} s{status}.", ""]
        lines += [f"    python benchmarks/{script}.py {' '.join(arguments)}".rstrip(), "", "```", output, "```", ""]
        sections[title] = lines
    order = [f"## {script} {' '.join(arguments)}".rstrip() for script, arguments, _ in BENCHMARKS]
    titles = sorted(sections, key=lambda t: order.index(t) if t in order else len(order))
    args.out.write_text("\n".join([*HEADER, *(line for title in titles for line in sections[title])]))
    print(f"wrote {args.out}")
    sys.exit(1 if failed else 0)


def earlier_sections(path: Path) -> dict[str, list[str]]:
    """The sections of an earlier results file, by their "## " title line (none when there is no file)."""
    sections: dict[str, list[str]] = {}
    title = None
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.startswith("## "):
            title = line
            sections[title] = []
        if title is not None:
            sections[title].append(line)
    return sections


if __name__ == "__main__":
    main()
