"""The published MNIST likelihood table (Burda, Grosse & Salakhutdinov 2016, Table 1), run and written by vaekit.

Each requested row is trained and evaluated through the `vaekit` command line, in subprocesses, with the paper's
architecture: dynamically binarized MNIST, MLP 784-200-200-50 with tanh, a Bernoulli decoder, batch 20, Adam at 1e-3,
test NLL from k = 5,000 importance samples, under benchmarks/PROTOCOL.md: a validation split (--val-size, 5,000 images
picked by vaekit's --split-seed 0) is held out of the 60,000 training images and scores every probe, and the test
split is scored once, at the end of the row. The paper trains 3,280 epochs on all 60,000; here each row gets a
wall-time budget, spent in chunks of `vaekit train --resume` with a growing --epochs, so the learning rate can follow
a step schedule between chunks (see `learning_rate`). After every chunk a cheap probe (k = 100 on the first 1,000
validation images, in this process) gives one point of nll_vs_time.png. A row whose flags this vaekit's
`train` does not accept is listed as "not run" with its command, never estimated.

    python benchmarks/mnist_likelihood.py --rows vae,iwae5,iwae50 --budget 60m [--dataset mnist] [--out DIR]
        [--batch-size 20 --lr 1e-3 --schedule paper|budget|decade|hold] [--decades 1] [--hold-at 0.75]
        [--device cuda] [--data-dir /work/shared/data]
        [--jobs 2]                       # two rows at a time, side by side, each on half the cores
    python benchmarks/mnist_likelihood.py --smoke --out /tmp/smoke     # seconds per row on `digits`, tiny widths
    python benchmarks/mnist_likelihood.py --render DIR [--add-rows OTHER]  # re-write DIR's report from its
        results.json, with the rows OTHER ran (same protocol, any budget) in place of DIR's rows of those names

Each row runs once per training seed (`--seeds`, 0 and 1 by default, as the protocol asks of a headline row), into
runs/ROW-seedS; the report gives each seed's number, their mean and their spread. Every seed's evaluation scores the
same binarized test draw (`--seed` of `vaekit evaluate`, fixed), so the seeds differ in training alone.

A flag named in --allow-missing (say `activation`) is dropped where this vaekit lacks it, and the row says so.
Writes DIR/results.md, DIR/results.json, DIR/nll_vs_time.png, the run folders in DIR/runs and logs in DIR/logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DECAY = 10 ** (-1 / 7)  # the paper's learning-rate step
STAGE_ENDS = [(3 ** (i + 1) - 1) // 2 for i in range(8)]  # stage i lasts 3^i epochs: ends 1, 4, 13, ..., 1093, 3280
HOLD_AT = 0.75  # the fraction of the budget the `hold` schedule keeps its first rate for, unless --hold-at says
PAPER = "Burda, Grosse & Salakhutdinov 2016, Table 1"
PYTHAE = "pythae (its README)"
# Row name -> (stochastic layers, flags beyond the shared architecture); --k is the training bound's sample count.
ROWS: dict[str, tuple[int, list[str]]] = {
    "vae": (1, []),
    "iwae5": (1, ["--objective", "iwae", "--k", "5"]),
    "iwae50": (1, ["--objective", "iwae", "--k", "50"]),
    "vae-2l": (2, []),
    "iwae5-2l": (2, ["--objective", "iwae", "--k", "5"]),
    "iwae50-2l": (2, ["--objective", "iwae", "--k", "50"]),
}
PUBLISHED: dict[str, dict[str, float]] = {  # test NLL, nats, dynamically binarized MNIST, k = 5,000
    "vae": {PAPER: 86.76, PYTHAE: 89.78},
    "iwae5": {PAPER: 85.54},
    "iwae50": {PAPER: 84.78, PYTHAE: 86.82},
    "vae-2l": {PAPER: 85.33},
    "iwae5-2l": {PAPER: 83.89},
    "iwae50-2l": {PAPER: 82.90},
}


@dataclass
class Protocol:
    """Everything a row's commands are built from; saved in results.json."""

    dataset: str = "mnist"
    hidden: str = "200,200"  # the (first) stochastic layer's encoder and decoder widths
    latent_dim: dict[int, int] = field(default_factory=lambda: {1: 50, 2: 100})  # z (z1 with two layers), by layers
    second_layer: str = "100,100,50"  # two-layer rows: the second layer's widths, then z2's size
    activation: str = "tanh"
    batch_size: int = 20
    lr: float = 1e-3
    schedule: str = "paper"
    decades: float = 1.0  # the `decade` and `hold` schedules' overall fall, in powers of ten (the paper's: one)
    hold_at: float = HOLD_AT  # the `hold` schedule's first step down, as a fraction of the budget
    warmup: float = 0.0  # epochs of linear KL warm-up, ELBO rows only (the importance-weighted bound has no KL weight)
    average_decay: float = 0.0  # >0: the run evaluates and saves a moving average of its weights (vaekit train's flag)
    estimator: str = "reparam"  # the importance-weighted rows' encoder gradient: reparam (IWAE's own) or dreg
    budget_s: float = 3600.0
    budget_epochs: int = 0  # >0: the budget is this many epochs, not budget_s of wall time (see in_epochs)
    max_epochs: int = STAGE_ENDS[-1]
    chunks: int = 12  # a chunk is at most budget / chunks long, so the probe curve has about this many points
    eval_k: int = 5000
    eval_samples: int = 1000  # prior samples for evaluate's neighbour audit and sample quality
    probe_k: int = 100
    probe_images: int = 1000
    seed: int = 0  # of the evaluation and the probes: one fixed binarized test draw for every row and training seed
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # training seeds: each row runs once per seed
    val_size: int = 5000  # validation images held out of training (vaekit's --split-seed 0 picks them)
    device: str | None = None
    data_dir: str | None = None
    allow_missing: list[str] = field(default_factory=list)
    smoke: bool = False


PER_ROW = (
    "budget_s",
    "budget_epochs",
    "warmup",
    "schedule",
    "decades",
    "hold_at",
    "average_decay",
    "estimator",
    "seeds",
)  # what --add-rows lets differ, kept by each row


def earlier_default(key: str) -> Any:
    """What a results.json written before `key` existed ran with: the protocol's default, except that rows then ran
    one training seed, the protocol's `seed`."""
    return [Protocol.seed] if key == "seeds" else getattr(Protocol, key)


SMOKE = {  # a few seconds a row: the full path, not a measurement
    "dataset": "digits", "hidden": "16,16", "latent_dim": {1: 4, 2: 6}, "second_layer": "8,4", "budget_s": 120.0,
    "max_epochs": 3, "chunks": 2, "eval_k": 20, "eval_samples": 64, "probe_k": 10, "probe_images": 200, "seeds": [0],
}  # fmt: skip


def hold_ends(hold_at: float) -> list[float]:
    """The fractions of the budget at which the `hold` schedule's three rates end: the first step down at `hold_at`,
    the second halfway from there to the end."""
    return [hold_at, (1 + hold_at) / 2, 1.0]


def learning_rate(
    schedule: str, base: float, epoch: int, fraction: float, decades: float = 1.0, hold_at: float = HOLD_AT
) -> float:
    """The rate for a chunk starting at `epoch` (0-based) after `fraction` of the budget.

    paper: stage i = 0..7 lasts 3^i epochs at base·10^(-i/7) (Burda et al. 2016, section 5; 3,280 epochs in all).
    budget: the same eight rates, with the stages' ends moved from epochs to the same fractions of the wall-time
    budget (1/3280, 4/3280, ..., 1), so a budgeted row spends the paper's share of its time at each rate.
    decade: the paper's overall decay (base to base/10), spread evenly in log-rate over the wall-time budget, one step
    per chunk: a short budget spends most of its time at high rates, where the paper's stages would spend it at low
    ones. `decades` sets the overall fall (base to base·10^-decades): short runs gain from less than the paper's.
    hold: base for the first `hold_at` of the budget (three quarters unless --hold-at says), then base·10^(-decades/2)
    for half of the rest and base·10^-decades for the last half. At a fixed number of epochs it beat every even decay
    (pilots scored on the test split, so withdrawn: the history of docs/measured.md, "How far the rate should fall")."""
    if schedule == "decade":
        return float(base * 10 ** (-decades * fraction))
    if schedule == "hold":
        return float(base * 10 ** (-decades * sum(fraction >= end for end in hold_ends(hold_at)[:-1]) / 2))
    if schedule == "paper":
        stage = sum(epoch >= end for end in STAGE_ENDS[:-1])
    elif schedule == "budget":
        stage = sum(fraction >= end / STAGE_ENDS[-1] for end in STAGE_ENDS[:-1])
    else:
        raise ValueError(f"unknown schedule {schedule!r}: use paper, budget, decade or hold")
    return base * DECAY**stage


def stage_ends_s(p: Protocol) -> list[float]:
    """Seconds into the budget at which the `budget` and `hold` schedules change rate (none for the others)."""
    ends = {"budget": [e / STAGE_ENDS[-1] for e in STAGE_ENDS], "hold": hold_ends(p.hold_at)}.get(p.schedule, [])
    return [p.budget_s * e for e in ends]


def schedule_time(p: Protocol, elapsed: float, epoch_s: float, overhead_s: float) -> float:
    """The time whose rate the next chunk takes: `elapsed`, or the start of the next stage when less than one epoch
    and a chunk's start-up are left of this one, so no chunk spends its start-up on a lone epoch at the old rate."""
    soon = [t for t in stage_ends_s(p) if elapsed < t <= elapsed + overhead_s + epoch_s]
    return soon[-1] if soon else elapsed


def chunk_end(p: Protocol, epoch: int, elapsed: float, epoch_s: float, overhead_s: float) -> int:
    """The --epochs of the next chunk: at most budget/chunks of wall time, what is left of the budget, and never
    across a stage of the schedule, so one learning rate holds for the whole chunk."""
    if epoch_s <= 0:  # nothing measured yet: one epoch tells how long an epoch takes
        return epoch + 1
    seconds = min(p.budget_s / p.chunks, p.budget_s - elapsed) - overhead_s
    end = epoch + max(1, math.floor(seconds / epoch_s))
    if p.schedule == "paper":
        end = min(end, next(e for e in [*STAGE_ENDS, math.inf] if e > epoch))
    elif p.schedule in ("budget", "hold"):
        start = schedule_time(p, elapsed, epoch_s, overhead_s)
        stage_left = next((t for t in stage_ends_s(p) if t > start), p.budget_s) - elapsed - overhead_s
        end = min(end, epoch + max(1, math.ceil(stage_left / epoch_s)))
    return int(min(end, p.max_epochs))


def parse_seeds(text: str) -> list[int]:
    """Training seeds from '0,1' (at least one; each a non-negative integer, none twice)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds {text!r}: give distinct non-negative integers such as 0,1")
    return seeds


def parse_budget(text: str) -> float:
    """Seconds in '90s', '60m', '1.5h' (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"budget {text!r}: give a positive time such as 90s, 60m or 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


# ---- commands ----------------------------------------------------------------------------------------------------


def vaekit(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaekit", *args]


def accepted_flags() -> set[str]:
    """The option names this vaekit's `train` accepts (the command `python -m vaekit` runs, read without running it)."""
    from typer.main import get_command

    from vaekit.cli.main import app

    train = get_command(app).commands["train"]  # type: ignore[attr-defined]
    return {name for param in train.params for name in [*param.opts, *param.secondary_opts]}


def warms_up(name: str) -> bool:
    """Whether KL warm-up reaches the row: only the ELBO rows have a KL weight to ramp."""
    return "--objective" not in ROWS[name][1]


def estimator_flags(name: str, p: Protocol) -> list[str]:
    """`--estimator` where it differs from IWAE's own gradient: the importance-weighted rows only (the ELBO rows keep
    the reparameterized gradient)."""
    return ["--estimator", p.estimator] if p.estimator != Protocol.estimator and not warms_up(name) else []


def row_flags(name: str, p: Protocol, seed: int = 0) -> list[str]:
    """The row's model and data flags, as the paper specifies them (the two-layer rows: 784-200-200-100 | 100-100-50
    as --hidden 200,200 --latent-dim 100 --second-layer 100,100,50)."""
    layers, extra = ROWS[name]
    flags = [
        "--dataset",
        p.dataset,
        "--binarize",
        "dynamic",
        "--val-size",
        str(p.val_size),
        "--likelihood",
        "bernoulli",
    ]
    flags += ["--hidden", p.hidden, "--latent-dim", str(p.latent_dim[layers]), "--activation", p.activation]
    flags += ["--second-layer", p.second_layer] if layers == 2 else []
    flags += ["--batch-size", str(p.batch_size), "--seed", str(seed), *extra]
    flags += ["--warmup", f"{p.warmup:g}"] if p.warmup and warms_up(name) else []
    flags += estimator_flags(name, p)
    flags += ["--average-decay", f"{p.average_decay:g}"] if p.average_decay else []
    flags += ["--data-dir", p.data_dir] if p.data_dir else []
    return flags + (["--device", p.device] if p.device else [])


def without(flags: list[str], names: set[str]) -> list[str]:
    """`flags` with each named option and its value removed."""
    kept: list[str] = []
    for i, flag in enumerate(flags):
        if flag in names or (i and flags[i - 1] in names):
            continue
        kept.append(flag)
    return kept


def run_logged(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    with log.open("a") as f:
        f.write(f"$ {shlex.join(command)}\n{done.stdout}{done.stderr}[exit {done.returncode}, {seconds:.1f} s]\n")
    return done, seconds


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return f"exit {done.returncode}: {lines[-1] if lines else 'no output'}"


# ---- one row -----------------------------------------------------------------------------------------------------


def probe(run_dir: Path, p: Protocol, cache: dict[str, Any]) -> tuple[float, float]:
    """Validation NLL (k = probe_k) of the first probe_images validation images, scored as `vaekit evaluate` scores
    them: the probes steer nothing, but a curve a reader may choose by must not read the test split."""
    from vaekit.analysis.evaluate import likelihood_report
    from vaekit.data.sources import load_dataset
    from vaekit.devices import resolve_device
    from vaekit.training.runs import load_run

    run = load_run(run_dir, str(resolve_device(p.device or "cpu")))
    if "val" not in cache:  # one load per invocation: every row reads the same data
        cache["val"] = load_dataset(run.config.data).val.x[: p.probe_images]
    report = likelihood_report(run.model, cache["val"], "validation", p.probe_k, p.seed, run.config.data)
    assert report.nll is not None and report.nll_se is not None
    return report.nll, report.nll_se


def in_epochs(p: Protocol) -> Protocol:
    """The protocol whose clock the schedule and the chunks follow. With an epoch budget that clock counts epochs (an
    epoch lasts 1, a chunk's start-up 0, the budget is budget_epochs long), so the row's rates, chunks and number
    of epochs are the same on a fast host, a slow one or a busy one; only its wall time differs."""
    if not p.budget_epochs:
        return p
    return dataclasses.replace(p, budget_s=float(p.budget_epochs), max_epochs=min(p.max_epochs, p.budget_epochs))


def train_chunks(
    run_dir: Path, flags: list[str], p: Protocol, log: Path, row: dict[str, Any], env: dict[str, str] | None
) -> None:
    """Train in chunks until the budget or max_epochs is reached; each chunk's command, rate and probe go into row."""
    epoch, elapsed, epoch_s, overhead_s, cache = 0, 0.0, 0.0, 0.0, {}
    clock = in_epochs(p)
    while epoch < clock.max_epochs:
        spent, each, start_up = (float(epoch), 1.0, 0.0) if p.budget_epochs else (elapsed, epoch_s, overhead_s)
        if epoch and clock.budget_s - spent < start_up + each:
            break
        end = chunk_end(clock, epoch, spent, each, start_up)
        fraction = schedule_time(clock, spent, each, start_up) / clock.budget_s
        lr = learning_rate(p.schedule, p.lr, epoch, fraction, p.decades, p.hold_at)
        tail = ["--epochs", str(end), "--lr", f"{lr:.6g}", "--quiet", "--out", str(run_dir)]
        command = vaekit("train", *flags, *tail) if epoch == 0 else vaekit("train", "--resume", *tail)
        row["commands"].append(shlex.join(command))
        done, seconds = run_logged(command, log, env)
        elapsed += seconds
        row["train_seconds"] = elapsed
        if done.returncode != 0:
            row["errors"].append(f"train chunk to epoch {end} failed ({last_line(done)})")
            return
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        epoch_s = sum(r["seconds"] for r in history[epoch:end]) / (end - epoch)
        row["median_epoch_s"] = median_epoch(run_dir, end)  # how fast this host was
        overhead_s = max(0.0, seconds - epoch_s * (end - epoch))  # start-up, data loading, the end-of-run test pass
        epoch = row["epochs"] = end
        start = time.perf_counter()
        nll, se = probe(run_dir, p, cache)
        row["probes"].append({"epoch": end, "train_seconds": elapsed, "lr": lr, "nll": nll, "nll_se": se})
        row["probe_seconds"] += time.perf_counter() - start


def summarize(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers from a run's evaluation.json."""
    by_split = {report["split"]: report for report in evaluation["likelihood"]}
    test, train = by_split["test"], by_split["train"]
    return {
        "test_nll": test["nll"], "test_nll_se": test["nll_se"], "neg_elbo": test["neg_elbo"],
        "neg_elbo_se": test["neg_elbo_se"], "eval_k": test["k"], "test_images": test["images"], "scored": test["data"],
        "train_nll": train["nll"], "train_images": train["images"], "train_minus_test_nll": train["nll"] - test["nll"],
        "active_units": evaluation["kl"]["active_units"], "latent_units": len(evaluation["kl"]["kl_per_dim"]),
    }  # fmt: skip


def run_folder(name: str, seed: int) -> str:
    """Where one seed of a row trains, under the output folder."""
    return f"runs/{name}-seed{seed}"


def run_row(
    name: str, p: Protocol, out: Path, accepted: set[str], env: dict[str, str] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Train, probe and evaluate one seed of one row; a row this vaekit cannot run says why and keeps its command.
    `env` is the environment of its vaekit subprocesses (OMP_NUM_THREADS, when rows run side by side)."""
    print(f"== {name}, seed {seed}", flush=True)
    run_dir, log = out / run_folder(name, seed), out / "logs" / f"{name}-seed{seed}.log"
    flags = row_flags(name, p, seed)
    evaluate = vaekit("evaluate", str(run_dir), "--k", str(p.eval_k), "--split", "both", "--seed", str(p.seed))
    evaluate += ["--prior-samples", str(p.eval_samples), *(["--device", p.device] if p.device else [])]
    row: dict[str, Any] = {
        "row": name, "status": "done", "reason": "", "deviations": [], "errors": [], "commands": [], "epochs": 0,
        "train_seconds": 0.0, "probe_seconds": 0.0, "eval_seconds": 0.0, "probes": [], "budget_s": p.budget_s,
        "budget_epochs": p.budget_epochs,
        "published": PUBLISHED[name] if p.dataset == "mnist" else {}, "seed": seed, "run_dir": run_folder(name, seed),
    }  # fmt: skip
    missing = [f for f in flags if f.startswith("--") and f not in accepted]
    blocking = [f for f in missing if f.removeprefix("--") not in p.allow_missing]
    if blocking:
        first = vaekit("train", *flags, "--epochs", "1", "--lr", f"{p.lr:g}", "--quiet", "--out", str(run_dir))
        row["commands"] = [shlex.join(first), shlex.join(evaluate)]
        row["status"], row["reason"] = "not run", f"this vaekit's train does not accept {', '.join(blocking)}"
        return row
    for flag in missing:
        row["deviations"].append(f"ran without {flag} {flags[flags.index(flag) + 1]}: this vaekit's train lacks it")
    flags = without(flags, set(missing))
    log.parent.mkdir(parents=True, exist_ok=True)
    row["started"] = now()
    train_chunks(run_dir, flags, p, log, row, env)
    if row["epochs"] == 0:
        row["status"], row["reason"] = "not run", row["errors"][-1]
        return row
    row["commands"].append(shlex.join(evaluate))
    done, row["eval_seconds"] = run_logged(evaluate, log, env)
    row["finished"] = now()
    if done.returncode != 0:
        row["status"], row["reason"] = "failed", f"evaluate failed ({last_line(done)})"
        return row
    row.update(summarize(json.loads((run_dir / "evaluation.json").read_text())))
    return row


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def not_run(name: str, p: Protocol) -> dict[str, Any]:
    """A row this invocation did not run, listed with the command that runs it: an hour for the ELBO rows, two for the
    importance-weighted ones, whose step costs k decoder passes an image (the issue's budgets)."""
    budget = "60m" if warms_up(name) else "2h"
    budget_flags = ["--budget-epochs", str(p.budget_epochs)] if p.budget_epochs else ["--budget", budget]
    command = ["python", "benchmarks/mnist_likelihood.py", "--rows", name, *budget_flags, "--dataset", p.dataset]
    command += ["--batch-size", str(p.batch_size), "--lr", f"{p.lr:g}", "--schedule", p.schedule]
    command += ["--decades", f"{p.decades:g}"] if p.decades != Protocol.decades else []
    command += ["--hold-at", f"{p.hold_at:g}"] if p.hold_at != HOLD_AT else []
    command += ["--warmup", f"{p.warmup:g}"] if p.warmup else []
    command += ["--average-decay", f"{p.average_decay:g}"] if p.average_decay else []
    command += estimator_flags(name, p)
    command += ["--data-dir", p.data_dir] if p.data_dir else []
    command += ["--seeds", ",".join(map(str, p.seeds))]
    return {
        "row": name, "status": "not run", "reason": "", "deviations": [], "errors": [],
        "commands": [shlex.join(command)], "epochs": 0, "train_seconds": 0.0, "probe_seconds": 0.0,
        "eval_seconds": 0.0, "probes": [], "published": PUBLISHED[name] if p.dataset == "mnist" else {},
    }  # fmt: skip


# ---- the report --------------------------------------------------------------------------------------------------


def hardware(device: str | None, jobs: int = 1) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    gpu = torch.cuda.get_device_name() if device and device.startswith("cuda") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "gpu": gpu, "python": platform.python_version(), "jobs": jobs, "commit": commit()}  # fmt: skip


def commit() -> str:
    """The commit the rows ran from, marked `+changes` when the working tree differed from it (such a row's code
    is not in the history: the protocol wants a clean tree)."""
    git = ["git", "-C", str(HERE)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    return (head or "unknown") + ("+changes" if changed.stdout.strip() else "")


def cell(row: dict[str, Any], key: str, se: str | None = None, digits: int = 2) -> str:
    value = row.get(key)
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + (f" ± {row[se]:.{digits}f}" if se else "")


def budget_text(p: dict[str, Any]) -> str:
    """The table's budget, as its header states it."""
    if p.get("budget_epochs"):
        return f", a budget of {p['budget_epochs']} epochs per row (the same rates and epochs on any host)"
    return f", wall-time budget {p['budget_s'] / 60:.1f} min of training per row (at most {p['max_epochs']} epochs)"


def train_time(row: dict[str, Any], p: dict[str, Any], hw: dict[str, Any]) -> str:
    """Minutes trained and the median epoch's seconds (hosts of one kind differ by half); a row merged in from a run
    with another budget, warm-up, schedule, thread count or CPU (see --add-rows) says which."""
    budget, threads = row.get("budget_s", p["budget_s"]), row.get("threads", hw["threads"])
    warmup, base_warmup = (
        (row.get("warmup", p.get("warmup", 0.0)), p.get("warmup", 0.0)) if warms_up(row["row"]) else (0, 0)
    )
    schedule, decades = row.get("schedule", p["schedule"]), row.get("decades", p.get("decades", Protocol.decades))
    hold_at = row.get("hold_at", p.get("hold_at", HOLD_AT))
    average = row.get("average_decay", p.get("average_decay", 0.0))
    epochs = row.get("budget_epochs", p.get("budget_epochs", 0))
    if epochs != p.get("budget_epochs", 0):
        other = [f"budget {epochs} epochs" if epochs else f"budget {budget / 60:g} min"]
    else:
        other = [f"budget {budget / 60:g} min"] if budget != p["budget_s"] and not epochs else []
    other += [f"KL warm-up {warmup:g} epochs"] if warmup != base_warmup else []
    if schedule != p["schedule"]:
        fall = f" falling {decades:g} decades" if decades != Protocol.decades else ""
        held = f", {first_step(hold_at)}" if schedule == "hold" and hold_at != HOLD_AT else ""
        other += [f"schedule `{schedule}`{fall}{held}"]
    else:
        other += [f"lr falling {decades:g} decades"] if decades != p.get("decades", Protocol.decades) else []
        other += [first_step(hold_at)] if hold_at != p.get("hold_at", HOLD_AT) else []
    other += [averaged(average)] if average != p.get("average_decay", 0.0) else []
    estimator = row.get("estimator", p.get("estimator", Protocol.estimator)) if not warms_up(row["row"]) else ""
    other += [f"`{estimator}` gradients"] if estimator and estimator != p.get("estimator", Protocol.estimator) else []
    other += [f"{threads} thread{'s' * (threads != 1)}"] if threads != hw["threads"] else []
    other += [f"on {row['cpu']}"] if row.get("cpu", hw["cpu"]) != hw["cpu"] else []
    speed = f", median epoch {row['median_epoch_s']:.1f} s" if "median_epoch_s" in row else ""
    return f"{row['train_seconds'] / 60:.1f} min{speed}" + (f" ({', '.join(other)})" if other else "")


def first_step(hold_at: float) -> str:
    return f"first step down at {hold_at:g} of the budget"


def averaged(decay: float) -> str:
    return f"weights averaged with decay {decay:g}" if decay else "no weight average"


def markdown(results: dict[str, Any]) -> str:
    p, hw = results["protocol"], results["hardware"]
    k = p["eval_k"]
    lines = [f"# {p['dataset']}: test log-likelihood, vaekit against {PAPER}", ""]
    if results.get("withdrawn"):  # a record kept as history, not as figures to quote (benchmarks/PROTOCOL.md)
        lines += [f"**Withdrawn**: {results['withdrawn']}", ""]
    if p["smoke"]:
        lines += ["**Smoke run**: seconds of training on tiny networks; these numbers measure nothing.", ""]
    lines += [
        f"Dynamically binarized {p['dataset']}, MLP with hidden widths {p['hidden']} and {p['latent_dim']['1']} latent "
        f"units (two stochastic layers: {p['latent_dim']['2']}, then {p['second_layer']}), {p['activation']}, "
        "Bernoulli decoder, batch "
        f"{p['batch_size']}, Adam from lr {p['lr']:g}, schedule `{p['schedule']}`"
        + (f" falling {p['decades']:g} decades" if p.get("decades", Protocol.decades) != Protocol.decades else "")
        + (f", {first_step(p['hold_at'])}" if p["schedule"] == "hold" and p.get("hold_at", HOLD_AT) != HOLD_AT else "")
        + (f", KL warm-up over {p['warmup']:g} epochs (ELBO rows)" if p.get("warmup") else "")
        + (f", {averaged(p['average_decay'])} (evaluated in their place)" if p.get("average_decay") else "")
        + (f", `{p['estimator']}` encoder gradients (IWAE rows)" if p.get("estimator", "reparam") != "reparam" else "")
        + budget_text(p) + ". Test NLL: importance-"
        f"weighted bound with k = {k}, nats per image, ± one standard error over images. The gap is the NLL of a "
        "training subset (its size in results.json) minus the test NLL, same k.",
        "",
        f"Hardware: {hw['cpu']}, {hw['cores']} cores, {hw['threads']} torch thread{'s' * (hw['threads'] != 1)}"
        + (f" per row, {hw['jobs']} rows at a time side by side (--jobs)" if hw.get("jobs", 1) > 1 else "")
        + (f", GPU {hw['gpu']}" if hw["gpu"] else "") + f"; torch {hw['torch']}, Python {hw['python']}.",
        "",
    ]  # fmt: skip
    if p["dataset"] != "mnist":
        lines += [f"No published reference for {p['dataset']}: the published columns are empty.", ""]
    lines += [
        f"| row | test NLL (k={k}) | −ELBO | train − test NLL | active units | epochs | train time | "
        f"{PAPER} | {PYTHAE} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        published = [f"{row['published'][s]:.2f}" if s in row["published"] else "—" for s in (PAPER, PYTHAE)]
        if row["status"] != "done":
            status = row["status"] + (f": {row['reason']}" if row["reason"] else "")
            spent = f"{row['epochs']} | {train_time(row, p, hw)}" if row["train_seconds"] else "— | —"
            lines.append(f"| {label(row)} | {status} | — | — | — | {spent} | {' | '.join(published)} |")
            continue
        units = f"{row['active_units']} / {row['latent_units']}"
        name = label(row) + (" (see its notes below)" if row["deviations"] or row["errors"] else "")
        lines.append(f"| {name} | {cell(row, 'test_nll', 'test_nll_se')} | {cell(row, 'neg_elbo', 'neg_elbo_se')}"
                     f" | {cell(row, 'train_minus_test_nll')} | {units} | {row['epochs']} | "
                     f"{train_time(row, p, hw)} | {' | '.join(published)} |")  # fmt: skip
    lines += seeds_table(results["rows"], k)
    if results.get("paired"):
        lines += ["", "Paired differences of test NLL on the same images (a − b, nats; 95% interval over images; "
                  "a row's seeds averaged image by image):", "", "| a | b | mean a − b | 95% interval | images |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {d['a']} | {d['b']} | {d['mean']:+.2f} | {d['low']:+.2f} to {d['high']:+.2f} | {d['images']} |"
                  for d in results["paired"]]  # fmt: skip
    lines += ["", "## Commands", ""]
    if "recipe" in results and any(row["status"] == "not run" and not row["reason"] for row in results["rows"]):
        lines += ["The rows not run give the recipe of the last row joined by `--add-rows`, not the protocol's.", ""]
    for row in results["rows"]:
        notes = row["deviations"] + row["errors"]
        lines += [f"### {label(row)} — {row['status']}" + (f": {row['reason']}" if row["reason"] else ""), ""]
        lines += [f"- {note}" for note in notes] + ([""] if notes else [])
        lines += ["```", *row["commands"], "```", ""]
    return "\n".join(lines)


def paired(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """Paired differences of test NLL on the same images (each run folder's per_image_nll.json): every later seed of
    a row against its first seed (the run-to-run variation, paired), and every row, its seeds averaged image by
    image, against the first row done."""
    from vaekit.analysis.evaluate import PER_IMAGE, paired_difference

    scores: dict[str, list[tuple[str, list[float]]]] = {}  # row → (label, per-image NLL) for each seed done
    for row in rows:
        path = out / row.get("run_dir", f"runs/{row['row']}") / PER_IMAGE
        if row["status"] == "done" and path.is_file():
            scores.setdefault(row["row"], []).append((label(row), json.loads(path.read_text())["test"]))
    found = []
    for seeds in scores.values():
        found += [(name, values, *seeds[0]) for name, values in seeds[1:]]
    averaged = {
        name: [statistics.mean(v) for v in zip(*(s[1] for s in seeds), strict=True)] for name, seeds in scores.items()
    }
    names = list(averaged)
    found += [(name, averaged[name], names[0], averaged[names[0]]) for name in names[1:]]
    return [
        dict(zip(("a", "b", "mean", "low", "high", "images"), (a, b, *paired_difference(x, y), len(x)), strict=True))
        for a, x, b, y in found
    ]


def label(row: dict[str, Any]) -> str:
    """A row's name in the tables: with its training seed, where it has one (older rows do not)."""
    return f"{row['row']}, seed {row['seed']}" if "seed" in row else row["row"]


def seeds_table(rows: list[dict[str, Any]], k: int) -> list[str]:
    """Each row's seeds side by side: every seed's test NLL, their mean and their spread (max − min), the
    run-to-run variation that the ± of one run (over images) leaves out. Empty when no row has two seeds done."""
    done: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "done" and "seed" in row:
            done.setdefault(row["row"], []).append(row)
    if not any(len(seeds) > 1 for seeds in done.values()):
        return []
    lines = ["", f"Seeds: the test NLL (k={k}) of each training seed, their mean and spread (max − min), nats.", ""]
    lines += ["| row | seeds | each seed | mean | spread |", "|---|---|---|---|---|"]
    for name, seeds in done.items():
        values = [r["test_nll"] for r in seeds]
        each = ", ".join(f"{v:.2f} (seed {r['seed']})" for v, r in zip(values, seeds, strict=True))
        lines.append(
            f"| {name} | {len(values)} | {each} | {statistics.mean(values):.2f} | {max(values) - min(values):.2f} |"
        )
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    """Probe NLL against training wall time, one line per row; published numbers as dashed horizontal lines."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = results["protocol"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    probed = [row for row in results["rows"] if row["probes"]]  # rows not run draw nothing, not even their references
    values = [probe["nll"] for row in probed for probe in row["probes"]]
    for i, row in enumerate(probed):
        color = f"C{i}"
        minutes = [probe["train_seconds"] / 60 for probe in row["probes"]]
        ax.plot(minutes, [probe["nll"] for probe in row["probes"]], "o-", color=color, label=label(row))
        if any(other["row"] == row["row"] for other in probed[:i]):  # a row's second seed: its references are drawn
            continue
        for source, value in row["published"].items():
            style = "--" if source == PAPER else ":"
            ax.axhline(value, color=color, linestyle=style, linewidth=1, label=f"{row['row']}, {source.split(' (')[0]}")
            values.append(value)
    if len(values) > 2:  # the first probes (after an epoch or so) would squash the curve: keep them off scale
        top = min(max(values), float(np.median(values)) + 6)
        ax.set_ylim(min(values) - 1, top)
        off = [v for v in values if v > top]
        if off:
            ax.text(0.01, 0.02, f"{len(off)} early probe(s) above {top:.0f}, off scale", transform=ax.transAxes,
                    ha="left", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xlabel("training wall time (min; probes and evaluation not counted)")
    ax.set_ylabel(f"validation NLL, nats (k={p['probe_k']}, first {p['probe_images']} validation images)")
    ax.set_title(f"{p['dataset']}: cheap NLL probe at each chunk boundary")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def protocol(args: argparse.Namespace) -> Protocol:
    p = Protocol(**(SMOKE if args.smoke else {}), smoke=args.smoke)  # type: ignore[arg-type]
    given = {"dataset": args.dataset, "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
             "decades": args.decades, "hold_at": args.hold_at, "warmup": args.warmup, "budget_s": args.budget,
             "budget_epochs": args.budget_epochs,
             "average_decay": args.average_decay, "estimator": args.estimator,
             "max_epochs": args.max_epochs, "eval_k": args.eval_k, "device": args.device, "val_size": args.val_size,
             "seeds": args.seeds,
             "data_dir": args.data_dir}  # fmt: skip
    p = dataclasses.replace(p, **{k: v for k, v in given.items() if v is not None})
    return dataclasses.replace(p, allow_missing=[f.removeprefix("--") for f in args.allow_missing.split(",") if f])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="vae,iwae5,iwae50", help=f"comma-separated, of: {', '.join(ROWS)}")
    parser.add_argument("--budget", type=parse_budget, help="training wall time per row: 90s, 60m, 2h [60m]")
    parser.add_argument("--budget-epochs", type=int, help="a budget of this many epochs per row instead of wall "
                        "time: the schedule and chunks count epochs, so a busy or slow host changes the row's wall "
                        "time only, never its numbers [0: use --budget]")  # fmt: skip
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist", "digits"], help="[mnist; smoke: digits]")
    parser.add_argument("--out", type=Path, default=Path("mnist-likelihood"))
    parser.add_argument("--batch-size", type=int, help="[20, the paper's]")
    parser.add_argument("--lr", type=float, help="initial Adam learning rate [1e-3, the paper's]")
    parser.add_argument("--schedule", choices=["paper", "budget", "decade", "hold"], help="see learning_rate() [paper]")
    parser.add_argument("--decades", type=float, help="decade and hold: the fall, in powers of ten [1, the paper's]")
    parser.add_argument("--hold-at", type=float, help="hold: the fraction of the budget before the first step down "
                        "[0.75]")  # fmt: skip
    parser.add_argument("--warmup", type=float, help="epochs of linear KL warm-up for the ELBO rows [0, the paper's]")
    parser.add_argument("--average-decay", type=float, help="evaluate a moving average of the weights with this decay "
                        "per step (vaekit train --average-decay) [0: none, the paper's]")  # fmt: skip
    parser.add_argument("--estimator", choices=["reparam", "dreg"], help="the importance-weighted rows' "
                        "encoder gradient: IWAE's own or doubly reparameterized [reparam]")  # fmt: skip
    parser.add_argument("--max-epochs", type=int, help="[3280, the paper's]")
    parser.add_argument("--eval-k", type=int, help="importance samples of the final evaluation [5000]")
    parser.add_argument("--seeds", type=parse_seeds, help="training seeds, each row once per seed: 0,1 [0,1; smoke: 0]")
    parser.add_argument("--val-size", type=int, help="validation images held out of training; the protocol needs "
                        "some (benchmarks/PROTOCOL.md) [5000]")  # fmt: skip
    parser.add_argument("--device", help="passed to vaekit train and evaluate, and used by the probes")
    parser.add_argument("--data-dir", help="folder with the dataset files, passed to vaekit train")
    parser.add_argument("--allow-missing", default="", help="flags a row may run without, as a stated deviation "
                        "(e.g. activation); any other flag this vaekit lacks leaves the row not run")  # fmt: skip
    parser.add_argument("--jobs", type=int, default=1, help="rows run at once, side by side, each on cores/jobs "
                        "torch threads: on few cores, two 1-thread rows outpace one 2-thread row [1]")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="every row for seconds on digits: tests the path")
    parser.add_argument("--render", type=Path, metavar="DIR", help="only re-write DIR/results.md and "
                        "DIR/nll_vs_time.png from DIR/results.json (after a change to the report's form)")  # fmt: skip
    parser.add_argument("--add-rows", type=Path, nargs="*", default=[], metavar="OTHER", help="with --render: the "
                        "rows OTHER/results.json ran replace DIR's rows of the same names")  # fmt: skip
    args = parser.parse_args()
    if args.render:
        results = joined(json.loads((args.render / "results.json").read_text()), map(read_results, args.add_rows))
        (args.render / "results.json").write_text(json.dumps(results, indent=1))
        write_report(results, args.render)
        return
    names = [name for name in args.rows.split(",") if name]
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}: use {', '.join(ROWS)}")
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give how many rows run at once, 1 or more")
    p = protocol(args)
    taken = [folder for name in names for seed in p.seeds if (args.out / (folder := run_folder(name, seed))).exists()]
    if taken:
        parser.error(f"{args.out} already holds {', '.join(taken)}: choose another --out")
    if p.val_size < 1:
        parser.error(
            f"--val-size {p.val_size}: a row needs a validation split for its probes and choices, and the test split "
            "is scored once, at the end (benchmarks/PROTOCOL.md): give --val-size 5000, say"
        )
    if args.decades is not None and (p.schedule not in ("decade", "hold") or p.decades < 0):
        parser.error(f"--decades {args.decades:g}: give 0 or more, with --schedule decade or hold (the rate's fall)")
    if args.hold_at is not None and (p.schedule != "hold" or not 0 < p.hold_at < 1):
        parser.error(f"--hold-at {args.hold_at:g}: give a fraction between 0 and 1, with --schedule hold")
    if p.budget_epochs < 0 or (p.budget_epochs and args.budget is not None):
        parser.error(f"--budget-epochs {p.budget_epochs}: give a positive number of epochs, instead of --budget")
    if not 0 <= p.average_decay < 1:
        parser.error(f"--average-decay {p.average_decay:g}: give a decay of at least 0 and below 1 (0.999, say)")
    args.out.mkdir(parents=True, exist_ok=True)
    accepted = accepted_flags()
    tasks = [(name, seed) for name in names for seed in p.seeds]
    jobs = min(args.jobs, len(tasks))
    env = side_by_side(jobs)
    machine = hardware(p.device, jobs)  # the commit and tree the rows start from, before any of them runs
    with ThreadPoolExecutor(jobs) as pool:  # each row waits on its subprocesses; the probes release the GIL
        rows = list(pool.map(lambda task: run_row(task[0], p, args.out, accepted, env, task[1]), tasks))
    rows += [not_run(name, p) for name in ROWS if name not in names and not p.smoke]
    results = {"protocol": dataclasses.asdict(p), "hardware": machine, "rows": rows}
    results["paired"] = paired(rows, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(json.loads((args.out / "results.json").read_text()), args.out)  # one form (string keys) for both


def side_by_side(jobs: int) -> dict[str, str] | None:
    """For `jobs` rows at once, split the cores between them: the environment of their subprocesses, and this
    process's torch threads (the probes') set to match. One job keeps torch's own choice."""
    if jobs == 1:
        return None
    import torch

    threads = max(1, (os.cpu_count() or 1) // jobs)
    torch.set_num_threads(threads)
    return {**os.environ, "OMP_NUM_THREADS": str(threads)}


def read_results(out: Path) -> dict[str, Any]:
    """OUT/results.json, with each row's median epoch filled in from its run folder where an older results.json
    lacks it."""
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    for row in results["rows"]:
        run_dir = out / row.get("run_dir", f"runs/{row['row']}")  # an older results.json: one seed, runs/ROW
        if row["probes"] and "median_epoch_s" not in row and (run_dir / "metrics.jsonl").is_file():
            row["median_epoch_s"] = median_epoch(run_dir, row["epochs"])
    return results


def median_epoch(run_dir: Path, epochs: int) -> float:
    """The median seconds of a run's first `epochs` epochs, from its metrics.jsonl."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return statistics.median(json.loads(line)["seconds"] for line in lines[:epochs])


def joined(results: dict[str, Any], others: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """results with the rows each of `others` ran in place of its own, its rows not run listed again; the last
    other's recipe (schedule, warm-up, weight average) becomes the recipe those rows' commands give, since a table's
    protocol keeps the recipe of its first invocation, which later rows may have improved on."""
    for other in others:
        results["rows"] = add_rows(results, other)
        results["recipe"] = {k: other["protocol"].get(k, earlier_default(k)) for k in PER_ROW if k != "budget_s"}
    results["rows"] = relisted(results)
    return results


def relisted(results: dict[str, Any]) -> list[dict[str, Any]]:
    """results' rows, each one not run listed again with the command this script now gives it under the table's
    protocol and recipe (so a re-rendered table never shows a budget or flag the script has since changed, nor a
    recipe the table's later rows replaced); the rows run, or left out for a reason, stay as they are."""
    known = {f.name for f in dataclasses.fields(Protocol)}
    p = Protocol(**{k: v for k, v in (results["protocol"] | results.get("recipe", {})).items() if k in known})
    return [
        not_run(row["row"], p) if row["status"] == "not run" and not row["reason"] and row["row"] in ROWS else row
        for row in results["rows"]
    ]


def add_rows(results: dict[str, Any], other: dict[str, Any]) -> list[dict[str, Any]]:
    """results' rows, each replaced by other's row of that name where other ran it (same dataset and protocol but
    for the budget, the KL warm-up, the learning-rate schedule with its fall and first step, the weight average and
    the encoder gradient, which each row keeps, as it keeps the CPU and the torch threads it ran on)."""
    ours, theirs = results["protocol"], other["protocol"]
    keys = (ours.keys() | theirs.keys()) - set(PER_ROW)
    if any(ours.get(k) != theirs.get(k) for k in keys):
        raise SystemExit(
            "--add-rows: the two runs differ in more than budget, warm-up and schedule; keep their tables apart"
        )
    kept = {k: theirs.get(k, earlier_default(k)) for k in PER_ROW}  # an older results.json lacks the newer keys
    kept |= {k: other["hardware"][k] for k in ("threads", "cpu")} if "hardware" in other else {}
    ran: dict[str, list[dict[str, Any]]] = {}  # every seed other ran of a row replaces every seed of ours
    for row in other["rows"]:
        if row["probes"]:
            ran.setdefault(row["row"], []).append({**kept, **row})
    rows: list[dict[str, Any]] = []
    for row in results["rows"]:
        if row["row"] not in ran:
            rows.append(row)
        elif not any(r["row"] == row["row"] for r in rows):
            rows += ran[row["row"]]
    return rows


def write_report(results: dict[str, Any], out: Path) -> None:
    (out / "results.md").write_text(markdown(results))
    written = [out / "results.md"]
    if any(row["probes"] for row in results["rows"]):  # a table of rows not run has no curve to draw
        plot(results, out / "nll_vs_time.png")
        written.append(out / "nll_vs_time.png")
    print(markdown(results))
    print("wrote", ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
