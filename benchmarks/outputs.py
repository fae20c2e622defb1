"""The command outputs the docs show, recorded: an example output on a page is what the command printed, not typed.

Runs the docs' example commands in order, as a user would (fresh processes, in a scratch folder: the demo run
first, then the commands that read it), and writes what each printed to benchmarks/outputs/NAME.txt, with the
commands, their seconds, the commit and the machine in benchmarks/outputs/results.json. A page shows an output as
the fenced block after a `<!-- output: NAME -->` marker; tests/test_figures.py fails unless the block is the recorded
output (a line `...` may stand for lines left out), and benchmarks/figures.py holds the page's prose figures to the
same files.

    python benchmarks/outputs.py                        # every output (about 20 minutes on 2 cores)
    python benchmarks/outputs.py --only evaluate-demo   # one output and the ones it needs (the demo run)
    python benchmarks/outputs.py --dataset digits --epochs 1 --out /tmp/outputs   # the path, in a minute or two
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from demo import commit, processor  # benchmarks/demo.py: the commit (marked +changes) and the processor

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "outputs"
MNIST = "../shared/data"  # where the score example finds MNIST, as the docs name it (relative to the repository)


@dataclass(frozen=True)
class Step:
    """One command of the docs, by the name its output is recorded under; `needs` are the steps that make its run."""

    name: str
    command: str
    needs: tuple[str, ...] = ()
    columns: int = 80


DEMO = "vaekit train --dataset fashion-mnist --epochs 10 --out runs/demo"  # make demo's command
ESTIMATOR = "vaekit train --dataset fashion-mnist --epochs 10 --estimator {0} --samples 4 --out runs/{0}"
STEPS = [
    Step("train-demo", DEMO),
    Step("evaluate-demo", "vaekit evaluate runs/demo --k 1000 --split both", ("train-demo",)),
    Step(
        "score-ood-demo",
        f"vaekit score runs/demo --dataset fashion-mnist --ood mnist --ood-data-dir {MNIST} --k 100",
        ("train-demo",),
    ),
    Step("train-ae", "vaekit train --model ae --dataset fashion-mnist --epochs 10 --out runs/ae"),
    Step("evaluate-ae", "vaekit evaluate runs/ae --split test", ("train-ae",)),
    Step("smoothness-demo", "vaekit latent smoothness runs/demo", ("train-demo",), columns=88),
    Step("smoothness-ae", "vaekit latent smoothness runs/ae", ("train-ae",), columns=88),
    Step("gradients-demo", "vaekit gradients runs/demo --at-init", ("train-demo",), columns=112),
    *(
        Step(f"train-{name}", ESTIMATOR.format(name))
        for name in ("reparam", "score-function", "score-function-baseline")
    ),
    Step(
        "train-categorical",
        "vaekit train --dataset fashion-mnist --epochs 10 --latent categorical --categories 10 --latent-vars 30 "
        "--out runs/categorical",
    ),
    Step("evaluate-categorical", "vaekit evaluate runs/categorical --k 1000 --split test", ("train-categorical",)),
]
BY_NAME = {step.name: step for step in STEPS}


def with_needs(names: list[str]) -> list[Step]:
    """The steps named and those they need, in the order STEPS lists them."""
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending.extend(BY_NAME[name].needs)
    return [step for step in STEPS if step.name in wanted]


def adapted(command: str, dataset: str | None, epochs: int | None) -> list[str]:
    """The step's command as run: `vaekit` is this interpreter's, and a check run swaps in a small dataset."""
    words = shlex.split(command)
    if dataset is not None:
        words = [dataset if word in ("fashion-mnist", "mnist") else word for word in words]
        if "--ood" in words:  # a check run has no second dataset at hand: score against its own data
            at = words.index("--ood")
            del words[at : at + 4]
    if epochs is not None and "--epochs" in words:
        words[words.index("--epochs") + 1] = str(epochs)
    return [sys.executable, "-m", "vaekit", *words[1:]]


def record(step: Step, work: Path, args: argparse.Namespace) -> dict[str, object]:
    """Run one step in the scratch folder and write what it printed (both streams: a run's epoch lines go to the
    error stream, beside its progress), as a terminal of the step's width shows it."""
    env = {**os.environ, "COLUMNS": str(step.columns), "TERM": "dumb", "NO_COLOR": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        adapted(step.command, args.dataset, args.epochs),
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{step.name}: `{step.command}` failed (exit {done.returncode}):\n{done.stdout[-2000:]}")
    text = "\n".join(line.rstrip() for line in done.stdout.splitlines()).strip("\n") + "\n"
    (args.out / f"{step.name}.txt").write_text(text, encoding="utf-8")
    print(f"{step.name}: {seconds:.0f} s", flush=True)
    load = os.getloadavg()[0]  # the last minute: about 2 for a step alone on 2 cores, more beside other work
    return {"name": step.name, "command": step.command, "seconds": round(seconds, 1), "load_average": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", help="comma-separated step names (with the steps they need)")
    parser.add_argument("--dataset", help="another dataset, to check the path (not the docs' outputs)")
    parser.add_argument("--epochs", type=int, help="fewer epochs, to check the path (not the docs' outputs)")
    args = parser.parse_args()
    steps = with_needs(args.only.split(",")) if args.only else STEPS
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    kept = json.loads(results_file.read_text()) if results_file.exists() else {"outputs": []}
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "vaekit"  # beside a link to ../shared, so the score example's relative path holds
        work.mkdir()
        shared = (ROOT / MNIST).parent
        if shared.exists():
            (Path(scratch) / shared.name).symlink_to(shared.resolve(), target_is_directory=True)
        measured = [record(step, work, args) for step in steps]
    machine = {
        "commit": commit(),
        "processor": processor(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    fresh = {entry["name"] for entry in measured}
    outputs = [entry for entry in kept["outputs"] if entry["name"] not in fresh]
    outputs += [{**entry, **machine} for entry in measured]
    outputs.sort(key=lambda entry: [step.name for step in STEPS].index(str(entry["name"])))
    results_file.write_text(json.dumps({"outputs": outputs}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(measured)} outputs and {results_file}")


if __name__ == "__main__":
    main()
