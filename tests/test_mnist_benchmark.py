"""benchmarks/mnist_likelihood.py: its schedule and chunking, and the whole path (`--smoke`) on tiny data."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # every test here runs whole trainings or benchmarks

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mnist_likelihood.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mnist_likelihood", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mnist_likelihood"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_paper_schedule_steps_at_the_ends_of_3_power_i_epoch_stages(bench: ModuleType) -> None:
    rate = lambda epoch: bench.learning_rate("paper", 1e-3, epoch, 0.0)  # noqa: E731
    step = 10 ** (-1 / 7)
    assert rate(0) == pytest.approx(1e-3)
    assert rate(1) == rate(3) == pytest.approx(1e-3 * step)  # stage 1: epochs 1..3 (0-based)
    assert rate(4) == rate(12) == pytest.approx(1e-3 * step**2)
    assert rate(1092) == pytest.approx(1e-3 * step**6)
    assert rate(1093) == rate(3279) == pytest.approx(1e-4)  # the last 2,187 epochs at 1e-4


def test_budget_schedule_steps_at_the_papers_fractions_of_the_budget(bench: ModuleType) -> None:
    rate = lambda fraction: bench.learning_rate("budget", 1e-3, 0, fraction)  # noqa: E731
    assert rate(0.0) == pytest.approx(1e-3)
    assert rate(0.2) == pytest.approx(1e-3 * 10 ** (-6 / 7))  # past 364/3280 = 0.11, before 1093/3280 = 0.33
    assert rate(0.34) == rate(0.99) == pytest.approx(1e-4)
    decade = lambda fraction: bench.learning_rate("decade", 1e-3, 0, fraction)  # noqa: E731
    assert decade(0.0) == pytest.approx(1e-3) and decade(0.5) == pytest.approx(1e-3 / 10**0.5)
    assert decade(1.0) == pytest.approx(1e-4)
    half = lambda fraction: bench.learning_rate("decade", 1e-3, 0, fraction, decades=0.5)  # noqa: E731
    assert half(0.0) == pytest.approx(1e-3) and half(1.0) == pytest.approx(1e-3 / 10**0.5)
    with pytest.raises(ValueError, match="schedule"):
        bench.learning_rate("cosine", 1e-3, 0, 0.0)


def test_hold_schedule_keeps_the_rate_for_three_quarters_then_falls_in_two_steps(bench: ModuleType) -> None:
    rate = lambda fraction, decades=1.0: bench.learning_rate("hold", 1e-3, 0, fraction, decades)  # noqa: E731
    assert rate(0.0) == rate(0.7499) == pytest.approx(1e-3)
    assert rate(0.75) == rate(0.8749) == pytest.approx(1e-3 / 10**0.5)
    assert rate(0.875) == rate(1.0) == pytest.approx(1e-4)
    assert rate(0.8, decades=2.0) == pytest.approx(1e-4) and rate(0.9, decades=2.0) == pytest.approx(1e-5)
    p = bench.Protocol(budget_s=3600.0, chunks=12, schedule="hold")  # the rate changes at 2,700 s and 3,150 s
    assert bench.chunk_end(p, 400, 2600.0, 6.0, 10.0) == 400 + 15  # (100 s − 10 s overhead) / 6 s, not the chunk's 48
    assert bench.chunk_end(p, 415, 2700.0, 6.0, 10.0) == 415 + 48  # a whole chunk fits before 3,150 s
    assert bench.chunk_end(p, 463, 2990.0, 6.0, 10.0) == 463 + 25  # ceil((160 s − 10 s) / 6 s)


def test_hold_at_moves_the_first_step_and_splits_the_rest_in_two(bench: ModuleType) -> None:
    rate = lambda fraction: bench.learning_rate("hold", 1e-3, 0, fraction, hold_at=0.85)  # noqa: E731
    assert rate(0.8499) == pytest.approx(1e-3) and rate(0.85) == rate(0.9249) == pytest.approx(1e-3 / 10**0.5)
    assert rate(0.925) == pytest.approx(1e-4)
    p = bench.Protocol(budget_s=3600.0, chunks=12, schedule="hold", hold_at=0.85)
    assert bench.stage_ends_s(p) == pytest.approx([3060.0, 3330.0, 3600.0])
    assert bench.chunk_end(p, 400, 2990.0, 6.0, 10.0) == 400 + 10  # ceil((70 s − 10 s) / 6 s): stops at 3,060 s


def test_a_stage_with_less_than_an_epoch_left_is_over(bench: ModuleType) -> None:
    """A run of the hold schedule chunked 441, 445, 446 epochs: two chunks of start-up for 5 epochs at the old rate."""
    p = bench.Protocol(budget_s=3600.0, chunks=12, schedule="hold")
    assert bench.schedule_time(p, 2685.0, 6.0, 10.0) == 2700.0 and bench.schedule_time(p, 2680.0, 6.0, 10.0) == 2680.0
    assert bench.chunk_end(p, 445, 2695.0, 6.0, 10.0) == 445 + 48  # the next stage, a whole chunk; not 1 epoch
    assert bench.schedule_time(bench.Protocol(schedule="decade"), 2695.0, 6.0, 10.0) == 2695.0  # no stages to snap to


def test_chunks_fit_the_budget_and_never_cross_a_stage(bench: ModuleType) -> None:
    p = bench.Protocol(budget_s=3600.0, chunks=12)
    assert bench.chunk_end(p, 0, 0.0, 0.0, 0.0) == 1  # nothing measured yet
    assert bench.chunk_end(p, 1, 10.0, 1.0, 5.0) == 4  # 295 epochs would fit a 300 s chunk: the stage ends at 4
    assert bench.chunk_end(p, 121, 500.0, 2.0, 10.0) == 121 + 145  # (300 s − 10 s overhead) / 2 s
    assert bench.chunk_end(p, 121, 3580.0, 2.0, 10.0) == 126  # 20 s left
    assert bench.chunk_end(bench.Protocol(max_epochs=3), 1, 1.0, 0.1, 0.0) == 3
    timed = bench.Protocol(budget_s=3280.0, chunks=1, schedule="budget")  # stage ends at 1, 4, 13, ... seconds
    assert bench.chunk_end(timed, 5, 5.0, 1.0, 0.0) == 5 + 8  # the stage ending at 13 s


def chunks_on_a_fake_host(bench: ModuleType, p: Any, epoch_seconds: float, tmp_path: Path) -> list[str]:
    """train_chunks' commands on a host whose epochs take `epoch_seconds` and whose process start-up takes 20 s."""
    run_dir = tmp_path / f"run-{epoch_seconds:g}-{p.budget_epochs or p.budget_s:g}"
    run_dir.mkdir()
    trained = [0]

    def run_logged(command: list[str], log: Path, env: Any = None) -> tuple[Any, float]:
        end = int(command[command.index("--epochs") + 1])
        lines = [json.dumps({"seconds": epoch_seconds}) for _ in range(end)]
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        seconds, trained[0] = 20.0 + epoch_seconds * (end - trained[0]), end
        return SimpleNamespace(returncode=0), seconds

    original = (bench.run_logged, bench.probe)
    bench.run_logged, bench.probe = run_logged, lambda *args: (90.0, 0.5)
    try:
        row: dict[str, Any] = {"commands": [], "errors": [], "probes": [], "probe_seconds": 0.0}
        bench.train_chunks(run_dir, ["--seed", "0"], p, tmp_path / "log", row, None)
    finally:
        bench.run_logged, bench.probe = original
    return [" ".join(c.split("--epochs")[1].split()[:3]) for c in row["commands"]]  # "END --lr RATE"


def test_an_epoch_budget_gives_the_same_epochs_and_rates_on_any_host(bench: ModuleType, tmp_path: Path) -> None:
    p = bench.Protocol(budget_epochs=40, chunks=4, schedule="budget")
    fast, slow = (chunks_on_a_fake_host(bench, p, seconds, tmp_path) for seconds in (2.0, 30.0))
    assert fast == slow and fast[-1].startswith("40 ")  # all 40 epochs, the last stage at 1e-4
    assert fast[-1].endswith("0.0001")
    timed = bench.Protocol(budget_s=1200.0, chunks=4, schedule="budget")  # wall time: a slow host trains less
    assert chunks_on_a_fake_host(bench, timed, 2.0, tmp_path) != chunks_on_a_fake_host(bench, timed, 30.0, tmp_path)


def test_budget_parsing(bench: ModuleType) -> None:
    assert [bench.parse_budget(t) for t in ("90s", "60m", "1.5h", "45")] == [90, 3600, 5400, 45]
    for bad in ("0m", "ten minutes", "-5s"):
        with pytest.raises(Exception, match="positive time"):
            bench.parse_budget(bad)


def test_the_mnist_table_shows_published_numbers_and_unrun_rows(bench: ModuleType) -> None:
    protocol = json.loads(json.dumps(bench.dataclasses.asdict(bench.Protocol())))
    hardware = {"cpu": "x", "cores": 2, "threads": 1, "gpu": None, "torch": "2", "python": "3"}
    done = {"row": "vae", "status": "done", "reason": "", "deviations": [], "errors": [], "commands": ["c-vae"],
            "epochs": 40, "train_seconds": 600.0, "published": bench.PUBLISHED["vae"], "test_nll": 90.123,
            "test_nll_se": 0.2, "neg_elbo": 94.5, "neg_elbo_se": 0.2, "train_minus_test_nll": -0.5,
            "active_units": 20, "latent_units": 50}  # fmt: skip
    unrun = {**done, "row": "iwae50", "status": "not run", "reason": "this vaekit's train does not accept --objective",
             "commands": ["c-iwae50"], "epochs": 0, "published": bench.PUBLISHED["iwae50"]}  # fmt: skip
    text = bench.markdown({"protocol": protocol, "hardware": hardware, "rows": [done, unrun]})
    vae_line = next(line for line in text.splitlines() if line.startswith("| vae |"))
    assert "90.12 ± 0.20" in vae_line and "86.76" in vae_line and "89.78" in vae_line and "20 / 50" in vae_line
    iwae_line = next(line for line in text.splitlines() if line.startswith("| iwae50 |"))
    assert "not run: this vaekit's train does not accept --objective" in iwae_line and "84.78" in iwae_line
    assert "c-vae" in text and "c-iwae50" in text and "No published reference" not in text


def finite(row: dict[str, Any], *keys: str) -> bool:
    return all(isinstance(row[key], float) and math.isfinite(row[key]) for key in keys)


def test_smoke_runs_the_whole_path(bench: ModuleType, tmp_path: Path) -> None:
    """One row that uses every moving part (two stochastic layers, the importance-weighted objective, chunks with a
    learning-rate step between them, probes, the final evaluation and the table), beside a second row (--jobs 2)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parents[1] / "src")}
    command = [
        sys.executable,
        str(SCRIPT),
        "--smoke",
        "--rows",
        "iwae5-2l,vae",
        "--jobs",
        "2",
        "--average-decay",
        "0.9",
    ]
    done = subprocess.run([*command, "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    text = (tmp_path / "results.md").read_text()
    assert (tmp_path / "nll_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["protocol"]["dataset"] == "digits" and "No published reference for digits" in text
    assert results["hardware"]["cores"] and results["hardware"]["torch"] and results["hardware"]["commit"]
    assert {"--objective", "--k", "--activation", "--second-layer"} <= bench.accepted_flags()
    row, beside = results["rows"]
    assert row["row"] == "iwae5-2l" and beside["row"] == "vae" and beside["status"] == "done"
    when = lambda r, key: datetime.fromisoformat(r[key])  # noqa: E731
    assert when(row, "started") < when(beside, "finished") and when(beside, "started") < when(row, "finished")
    hardware = results["hardware"]
    assert hardware["jobs"] == 2 and hardware["threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert "2 rows at a time side by side" in text
    assert row["status"] == "done" and row["epochs"] == 3 and not row["deviations"]
    assert finite(row, "test_nll", "test_nll_se", "neg_elbo", "train_nll", "train_minus_test_nll", "train_seconds")
    assert 0 < row["test_nll"] <= row["neg_elbo"]  # the k = 20 bound is tighter than the ELBO
    assert row["train_minus_test_nll"] == pytest.approx(row["train_nll"] - row["test_nll"])
    assert 0 <= row["active_units"] <= row["latent_units"]
    train_1, train_2, evaluate = row["commands"]
    assert "-m vaekit train" in train_1 and "--binarize dynamic --val-size 5000" in train_1 and "--epochs 1" in train_1
    assert "--objective iwae --k 5" in train_1 and "--second-layer 8,4" in train_1 and "--average-decay 0.9" in train_1
    assert "weights averaged with decay 0.9 (evaluated in their place)" in text
    assert "--resume --epochs 3 --lr 0.000719686" in train_2  # the paper's second stage: 1e-3 · 10^(-1/7)
    assert "-m vaekit evaluate" in evaluate and "--k 20 --split both" in evaluate
    assert all(line in text for line in row["commands"])
    assert [probe["epoch"] for probe in row["probes"]] == [1, 3] and all(finite(p, "nll") for p in row["probes"])
    seconds = [json.loads(line)["seconds"] for line in (tmp_path / "runs/iwae5-2l-seed0/metrics.jsonl").open()]
    assert row["median_epoch_s"] == sorted(seconds)[1] and f"median epoch {sorted(seconds)[1]:.1f} s" in text
    (tmp_path / "results.md").unlink()  # --render writes the same report again from results.json alone
    rendered = subprocess.run([*command[:2], "--render", str(tmp_path)], capture_output=True, text=True, env=env)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert (tmp_path / "results.md").read_text() == text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--jobs", "0"], "--jobs 0: give how many rows run at once, 1 or more"),
        (["--decades", "0.5"], "--decades 0.5: give 0 or more, with --schedule decade"),  # the smoke run's is paper
        (["--schedule", "decade", "--decades", "-1"], "--decades -1: give 0 or more"),
        (["--hold-at", "0.85"], "--hold-at 0.85: give a fraction between 0 and 1, with --schedule hold"),
        (["--schedule", "hold", "--hold-at", "1"], "--hold-at 1: give a fraction between 0 and 1"),
        (["--average-decay", "1"], "--average-decay 1: give a decay of at least 0 and below 1"),
        (["--val-size", "0"], "--val-size 0: a row needs a validation split for its probes and choices"),
        (["--seeds", "0,0"], "seeds '0,0': give distinct non-negative integers such as 0,1"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, flags: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", *flags, "--out", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr and not (tmp_path / "t").exists()


def test_rows_not_run_are_listed_with_the_command_that_runs_them(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="decade", data_dir="../shared/data")
    row = bench.not_run("iwae50", p)
    (command,) = row["commands"]
    assert row["status"] == "not run" and row["published"] == bench.PUBLISHED["iwae50"]
    assert "--rows iwae50 --budget 2h --dataset mnist --batch-size 100" in command and "--schedule decade" in command
    budgets = {name: bench.not_run(name, p)["commands"][0].split("--budget ")[1].split()[0] for name in bench.ROWS}
    hour, two = ("vae", "vae-2l"), ("iwae5", "iwae50", "iwae5-2l", "iwae50-2l")  # ELBO rows; importance-weighted
    assert budgets == {**dict.fromkeys(hour, "60m"), **dict.fromkeys(two, "2h")}
    results = {"protocol": dataclasses.asdict(p), "hardware": bench.hardware(None), "rows": [row]}
    text = bench.markdown(json.loads(json.dumps(results)))
    assert "| iwae50 | not run |" in text and command in text


def test_a_rendered_table_lists_its_rows_not_run_with_the_commands_the_script_now_gives(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="decade", data_dir="../shared/data")
    stale = bench.not_run("iwae5-2l", p)
    stale["commands"] = [stale["commands"][0].replace("--budget 2h", "--budget 60m")]  # written by an older script
    left_out = {**bench.not_run("iwae50-2l", p), "reason": "this vaekit lacks --second-layer", "commands": ["x"]}
    ran = {**bench.not_run("vae", p), "status": "done", "commands": ["y"]}
    table = json.loads(json.dumps({"protocol": dataclasses.asdict(p), "rows": [ran, stale, left_out]}))
    rows = bench.relisted(table)
    assert rows[1]["commands"] == bench.not_run("iwae5-2l", p)["commands"] and "--budget 2h" in rows[1]["commands"][0]
    assert rows[0] == table["rows"][0] and rows[2] == table["rows"][2]


def test_rows_from_another_run_with_its_own_budget_threads_and_cpu_join_the_table(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="decade")
    hardware = {"cpu": "x", "cores": 2, "threads": 2, "gpu": None, "torch": "2", "python": "3"}
    table = {"protocol": dataclasses.asdict(p), "hardware": hardware, "rows": [bench.not_run(n, p) for n in bench.ROWS]}
    probe = {"epoch": 9, "train_seconds": 2400.0, "lr": 1e-3, "nll": 90.0, "nll_se": 0.5}
    ran = {**bench.not_run("iwae5", p), "status": "done", "probes": [probe], "train_seconds": 2400.0, "epochs": 9,
           "test_nll": 87.5, "test_nll_se": 0.2, "neg_elbo": 90.1, "neg_elbo_se": 0.2, "train_minus_test_nll": 0.1,
           "active_units": 21, "latent_units": 50}  # fmt: skip
    other = {
        "protocol": dataclasses.asdict(dataclasses.replace(p, budget_s=2400.0)),
        "rows": [ran],
        "hardware": {**hardware, "threads": 1, "cpu": "y"},
    }  # run beside another invocation, one thread each, on another host
    rows = bench.add_rows(json.loads(json.dumps(table)), json.loads(json.dumps(other)))
    assert [row["row"] for row in rows] == list(bench.ROWS) and rows[1]["test_nll"] == 87.5
    text = bench.markdown({**json.loads(json.dumps(table)), "rows": rows})
    iwae_line = next(line for line in text.splitlines() if line.startswith("| iwae5 |"))
    assert "87.50 ± 0.20" in iwae_line and "40.0 min (budget 40 min, 1 thread, on y)" in iwae_line
    assert "85.54" in iwae_line and "Hardware: x, 2 cores" in text
    assert "| vae | not run |" in text
    elsewhere = {**other, "protocol": dataclasses.asdict(dataclasses.replace(p, batch_size=20))}
    with pytest.raises(SystemExit, match="differ in more than budget, warm-up and schedule"):
        bench.add_rows(json.loads(json.dumps(table)), json.loads(json.dumps(elsewhere)))


HARDWARE = {"cpu": "x", "cores": 2, "threads": 2, "gpu": None, "torch": "2", "python": "3"}


def test_rows_not_run_give_the_recipe_of_the_last_row_joined(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="decade")
    table = {"protocol": dataclasses.asdict(p), "hardware": HARDWARE, "rows": [bench.not_run(n, p) for n in bench.ROWS]}
    table = json.loads(json.dumps(table))
    assert bench.joined(json.loads(json.dumps(table)), []) == table  # nothing joined: the protocol's recipe stays
    recipe = bench.Protocol(batch_size=100, schedule="hold", hold_at=0.85, warmup=100.0, average_decay=0.999)
    probe = {"epoch": 9, "train_seconds": 3600.0, "lr": 1e-3, "nll": 90.0, "nll_se": 0.5}
    ran = {**bench.not_run("iwae5", recipe), "status": "done", "probes": [probe], "train_seconds": 3590.0,
           "epochs": 9, "test_nll": 87.5, "test_nll_se": 0.2, "neg_elbo": 90.1, "neg_elbo_se": 0.2,
           "train_minus_test_nll": 0.1, "active_units": 21, "latent_units": 50}  # fmt: skip
    other = {"protocol": dataclasses.asdict(dataclasses.replace(recipe, budget_s=3600.0)), "hardware": HARDWARE,
             "rows": [ran]}  # fmt: skip
    results = json.loads(json.dumps(bench.joined(table, [json.loads(json.dumps(other))])))
    commands = {row["row"]: row["commands"][0] for row in results["rows"]}
    given = "--schedule hold --hold-at 0.85 --warmup 100 --average-decay 0.999"
    assert commands["iwae5"] == ran["commands"][0] and results["rows"][1]["test_nll"] == 87.5
    assert all(given in commands[n] for n in bench.ROWS if n != "iwae5") and "decade" not in str(commands)
    assert "--budget 2h" in commands["iwae50"] and "--budget 60m" in commands["vae-2l"]  # budgets stay per row
    assert results["protocol"]["schedule"] == "decade"  # the header still describes the table's first invocation
    assert "recipe of the last row joined" in bench.markdown(results)


def merged_row(bench: ModuleType, p: Any, newer_key: str, name: str = "vae") -> tuple[list[dict[str, Any]], str]:
    """The row `name` run with protocol p, merged into a decade-schedule table written before `newer_key` existed:
    the merged rows and the table's text."""
    old = {"protocol": dataclasses.asdict(bench.Protocol(batch_size=100, schedule="decade")), "hardware": HARDWARE}
    del old["protocol"][newer_key]
    old["rows"] = [bench.not_run(n, p) for n in bench.ROWS]
    probe = {"epoch": 9, "train_seconds": 3600.0, "lr": 1e-3, "nll": 90.0, "nll_se": 0.5}
    ran = {**bench.not_run(name, p), "status": "done", "probes": [probe], "train_seconds": 3590.0, "epochs": 9,
           "test_nll": 87.9, "test_nll_se": 0.2, "neg_elbo": 92.3, "neg_elbo_se": 0.2, "train_minus_test_nll": 0.4,
           "active_units": 29, "latent_units": 50}  # fmt: skip
    other = {"protocol": dataclasses.asdict(p), "hardware": HARDWARE, "rows": [ran]}
    rows = bench.add_rows(json.loads(json.dumps(old)), json.loads(json.dumps(other)))
    return rows, bench.markdown({**json.loads(json.dumps(old)), "rows": rows})


def test_warmup_reaches_the_elbo_rows_only_and_travels_with_a_merged_row(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="decade", warmup=100.0)
    assert (
        bench.row_flags("vae", p)[-2:] == ["--warmup", "100"]
        and "--warmup 100" in bench.not_run("vae", p)["commands"][0]
    )
    assert "--warmup" not in bench.row_flags("iwae5", p)  # the importance-weighted bound has no KL weight to ramp
    rows, text = merged_row(bench, p, "warmup")
    assert rows[0]["warmup"] == 100.0
    vae_line = next(line for line in text.splitlines() if line.startswith("| vae |"))
    assert "59.8 min (KL warm-up 100 epochs) |" in vae_line and "KL warm-up" not in text.split("| row |")[0]
    table = dataclasses.asdict(bench.Protocol(batch_size=100, schedule="decade"))  # no warm-up
    iwae = {**rows[0], "row": "iwae5"}  # an importance-weighted row from the same run trained without it
    assert "KL warm-up 100" in bench.train_time(rows[0], table, HARDWARE)
    assert "warm-up" not in bench.train_time(iwae, table, HARDWARE)


def test_a_gentler_decay_reaches_the_commands_and_travels_with_a_merged_row(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="decade", decades=0.5)
    assert "--schedule decade --decades 0.5" in bench.not_run("vae", p)["commands"][0]
    assert "--decades" not in bench.not_run("vae", bench.Protocol(schedule="decade"))["commands"][0]
    rows, text = merged_row(bench, p, "decades")
    assert rows[0]["decades"] == 0.5 and "decades" not in rows[1]
    vae_line = next(line for line in text.splitlines() if line.startswith("| vae |"))
    assert "59.8 min (lr falling 0.5 decades) |" in vae_line and "falling" not in text.split("| row |")[0]
    header = bench.markdown({"protocol": json.loads(json.dumps(dataclasses.asdict(p))), "hardware": HARDWARE,
                             "rows": []}).split("| row |")[0]  # fmt: skip
    assert "schedule `decade` falling 0.5 decades" in header


def test_a_row_on_another_schedule_joins_the_table_and_says_which(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="hold", warmup=100.0)
    assert "--schedule hold --warmup 100" in bench.not_run("vae", p)["commands"][0]
    rows, text = merged_row(bench, p, "warmup")
    assert rows[0]["schedule"] == "hold" and "schedule" not in rows[1]
    vae_line = next(line for line in text.splitlines() if line.startswith("| vae |"))
    assert "59.8 min (KL warm-up 100 epochs, schedule `hold`) |" in vae_line
    rows, text = merged_row(bench, dataclasses.replace(p, decades=1.5), "warmup")
    assert "schedule `hold` falling 1.5 decades" in next(line for line in text.splitlines() if line.startswith("| vae"))
    later = dataclasses.replace(p, hold_at=0.85)
    assert "--schedule hold --hold-at 0.85 --warmup 100" in bench.not_run("vae", later)["commands"][0]
    assert "--hold-at" not in bench.not_run("vae", p)["commands"][0]
    rows, text = merged_row(bench, later, "hold_at")
    assert rows[0]["hold_at"] == 0.85 and "hold_at" not in rows[1]
    vae_line = next(line for line in text.splitlines() if line.startswith("| vae"))
    assert "(KL warm-up 100 epochs, schedule `hold`, first step down at 0.85 of the budget) |" in vae_line


def test_a_weight_average_reaches_the_commands_and_travels_with_a_merged_row(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="hold", average_decay=0.999)
    assert bench.row_flags("iwae5", p)[-2:] == ["--average-decay", "0.999"]  # every row, the bounds alike
    assert "--schedule hold --average-decay 0.999" in bench.not_run("vae", p)["commands"][0]
    assert "--average-decay" not in bench.not_run("vae", bench.Protocol())["commands"][0]
    rows, text = merged_row(bench, p, "average_decay")
    assert rows[0]["average_decay"] == 0.999 and "average_decay" not in rows[1]
    vae_line = next(line for line in text.splitlines() if line.startswith("| vae"))
    assert "(schedule `hold`, weights averaged with decay 0.999) |" in vae_line
    assert "averaged" not in text.split("| row |")[0]


def test_dreg_reaches_the_importance_weighted_rows_only_and_travels_with_a_merged_row(bench: ModuleType) -> None:
    p = bench.Protocol(batch_size=100, schedule="hold", estimator="dreg")
    assert bench.row_flags("iwae50-2l", p)[-2:] == ["--estimator", "dreg"]
    assert "--estimator" not in bench.row_flags("vae", p)  # the ELBO rows keep their reparameterized gradient
    assert "--estimator" not in bench.row_flags("iwae5", bench.Protocol())  # IWAE's own gradient: the paper's
    assert "--estimator dreg" in bench.not_run("iwae5", p)["commands"][0]
    assert "--estimator" not in bench.not_run("vae", p)["commands"][0]
    rows, text = merged_row(bench, p, "estimator", name="iwae5")
    assert rows[1]["estimator"] == "dreg" and "estimator" not in rows[0]
    iwae_line = next(line for line in text.splitlines() if line.startswith("| iwae5 |"))
    assert "(schedule `hold`, `dreg` gradients) |" in iwae_line and "dreg" not in text.split("| row |")[0]
    header = bench.markdown({"protocol": json.loads(json.dumps(dataclasses.asdict(p))), "hardware": HARDWARE,
                             "rows": []}).split("| row |")[0]  # fmt: skip
    assert "`dreg` encoder gradients (IWAE rows)" in header


def test_a_row_from_an_older_results_json_gets_its_median_epoch_from_its_run_folder(
    bench: ModuleType, tmp_path: Path
) -> None:
    p = bench.Protocol(batch_size=100, schedule="hold")
    probe = {"epoch": 4, "train_seconds": 60.0, "lr": 1e-3, "nll": 90.0, "nll_se": 0.5}
    ran = {**bench.not_run("vae", p), "status": "done", "probes": [probe], "train_seconds": 600.0, "epochs": 4}
    unrun = bench.not_run("iwae5", p)
    results = {"protocol": dataclasses.asdict(p), "hardware": HARDWARE, "rows": [ran, unrun]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "runs/vae").mkdir(parents=True)
    seconds = [9.0, 3.0, 4.0, 5.0, 30.0]  # a fifth epoch, past the row's 4, is not the row's
    (tmp_path / "runs/vae/metrics.jsonl").write_text("".join(json.dumps({"seconds": s}) + "\n" for s in seconds))
    vae, iwae = bench.read_results(tmp_path)["rows"]
    assert vae["median_epoch_s"] == 4.5 and "median_epoch_s" not in iwae
    assert "10.0 min, median epoch 4.5 s" in bench.train_time(vae, results["protocol"], HARDWARE)


def test_probes_score_validation_images_and_never_the_test_split(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit import train
    from vaekit.data.sources import load_dataset

    config = tiny_config(epochs=1)
    train(config, tmp_path / "run")
    seen: dict[str, Any] = {}

    def scored(model: Any, x: Any, split: str, *args: Any) -> Any:
        seen.update(split=split, x=x)
        return SimpleNamespace(nll=90.0, nll_se=0.5)

    monkeypatch.setattr("vaekit.analysis.evaluate.likelihood_report", scored)
    assert bench.probe(tmp_path / "run", bench.Protocol(probe_images=50, probe_k=2, device="cpu"), {}) == (90.0, 0.5)
    data = load_dataset(config.data)
    assert seen["split"] == "validation" and torch.equal(seen["x"], data.val.x[:50])


def test_each_row_runs_once_per_seed_and_the_report_gives_each_seed_their_mean_and_spread(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parents[1] / "src")}
    command = [sys.executable, str(SCRIPT), "--smoke", "--rows", "vae", "--seeds", "0,1", "--max-epochs", "1"]
    command += ["--jobs", "2", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["row"], r["seed"], r["status"]) for r in rows] == [("vae", 0, "done"), ("vae", 1, "done")]
    assert all((tmp_path / f"runs/vae-seed{r['seed']}/model.safetensors").is_file() for r in rows)
    trains = [r["commands"][0] for r in rows]
    assert "--seed 0 " in trains[0] + " " and "--seed 1 " in trains[1] + " "  # the seeds differ in training alone,
    assert all(r["commands"][-1].endswith("--seed 0 --prior-samples 64") for r in rows)  # not in the test draw
    assert rows[0]["test_nll"] != rows[1]["test_nll"]
    text = (tmp_path / "results.md").read_text()
    values = [r["test_nll"] for r in rows]
    line = next(line for line in text.splitlines() if line.startswith("| vae | 2 |"))
    assert f"{sum(values) / 2:.2f} | {max(values) - min(values):.2f} |" in line and "| vae, seed 1 |" in text
    per_image = [json.loads((tmp_path / f"runs/vae-seed{s}/per_image_nll.json").read_text())["test"] for s in (0, 1)]
    (pair,) = json.loads((tmp_path / "results.json").read_text())["paired"]
    assert (pair["a"], pair["b"], pair["images"]) == ("vae, seed 1", "vae, seed 0", len(per_image[0]))
    assert pair["mean"] == pytest.approx(values[1] - values[0], abs=1e-3)  # the means' difference, now with
    assert pair["low"] < pair["mean"] < pair["high"]  # an interval from the same images' paired differences
    assert f"| vae, seed 1 | vae, seed 0 | {pair['mean']:+.2f} |" in text


def test_a_report_with_one_seed_a_row_has_no_seeds_table(bench: ModuleType) -> None:
    row = {"row": "vae", "status": "done", "seed": 0, "test_nll": 90.0}
    assert bench.seeds_table([row], 5000) == []
    table = bench.seeds_table([row, {**row, "seed": 3, "test_nll": 91.5}], 5000)
    assert table[-1] == "| vae | 2 | 90.00 (seed 0), 91.50 (seed 3) | 90.75 | 1.50 |"
