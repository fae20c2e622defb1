"""`make demo`'s run, recorded: the figures the README quotes about it come from the file this writes.

Runs the demo's own command (the Makefile's `demo` target; a test keeps the two the same) into a temporary folder and
writes benchmarks/demo/results.json: the test ELBO it ends with, its bits/dim, the seconds of its training passes and
of its whole epochs, the epochs, the wall time of the command, and the commit, machine and torch it ran on.

    python benchmarks/demo.py [--out benchmarks/demo]
    python benchmarks/demo.py --dataset digits --epochs 1 --out /tmp/demo   # the path, in seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMAND = ["vaekit", "train", "--dataset", "fashion-mnist", "--epochs", "10", "--out", "runs/demo"]  # as make demo


def commit() -> str:
    git = ["git", "-C", str(HERE)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return (head or "unknown") + ("+changes" if changed.stdout.strip() else "")


def processor() -> str:
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if "model name" in line]
    return names[0] if names else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "demo")
    parser.add_argument("--epochs", type=int, help="fewer epochs, to check the path (not the demo's figures)")
    parser.add_argument("--dataset", help="another dataset, to check the path (not the demo's figures)")
    args = parser.parse_args()
    command = list(COMMAND)
    for flag, value in (("--epochs", args.epochs), ("--dataset", args.dataset)):
        if value is not None:
            command[command.index(flag) + 1] = str(value)
    import torch

    with tempfile.TemporaryDirectory() as work:
        run_dir = Path(work) / "run"
        ran = [sys.executable, "-m", "vaekit", *command[1 : command.index("--out")], "--quiet", "--out", str(run_dir)]
        start = time.perf_counter()
        subprocess.run(ran, check=True)
        wall = time.perf_counter() - start
        final = json.loads((run_dir / "metrics.json").read_text())
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    results = {
        "command": shlex.join(command),
        "epochs": len(history),
        "test_elbo": round(final["test"]["elbo"], 2),
        "test_bits_per_dim": round(final["test"]["bits_per_dim"], 4),
        "train_seconds": round(sum(record["train_seconds"] for record in history), 3),
        "epoch_seconds": round(sum(record["seconds"] for record in history), 3),
        "wall_seconds": round(wall, 1),
        "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "processor": processor(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(
        f"{results['command']}: {results['epochs']} epochs, test ELBO {results['test_elbo']:.2f} nats/image "
        f"({results['test_bits_per_dim']:.4f} bits/dim); {results['train_seconds']:.0f} s of training passes, "
        f"{results['epoch_seconds']:.0f} s with validation, {results['wall_seconds']:.0f} s in all\n"
        f"{results['processor']}, {results['cores']} cores, torch {results['torch']}, commit {results['commit']}"
    )
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
