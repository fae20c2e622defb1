"""Every benchmark's code path runs, on sizes that take seconds: a benchmark that breaks silently measures nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # every test here runs whole trainings or benchmarks

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *arguments: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BENCHMARKS.parent / "src")}
    command = [sys.executable, str(BENCHMARKS / script), *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=BENCHMARKS)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_suite_writes_memory_scaling_into_its_results_file(tmp_path: Path) -> None:
    """The suite's plumbing, and memory scaling's whole path (packs, the in-memory baseline, fresh processes)."""
    out = tmp_path / "results.md"
    earlier = "## train_speed\n\nan earlier sitting's section. Measured 2026-11-30 on a machine; 9 s.\n"
    out.write_text(f"# vaekit benchmarks\n\n{earlier}\n## memory_scaling --sizes 300 600 --baseline-max 300\n\nold\n")
    run_benchmark("suite.py", "--out", str(out), "--only", "memory_scaling", "--quick")
    text = out.read_text()
    assert text.startswith("# vaekit benchmarks") and "## memory_scaling" in text and "FAILED" not in text
    assert earlier in text and "\nold\n" not in text  # the section rerun is replaced, the others kept
    assert text.index("## train_speed") < text.index("## memory_scaling")  # in the suite's order
    assert text.count("Measured ") == 2 and "commit " in text.split("## memory_scaling")[1]
    assert "pack 600 / 300 images (2x the data)" in text and "300 images, pack / memory: RssAnon peak" in text


def test_the_binarization_benchmark_times_both_draws_and_prints_their_ratio() -> None:
    out = run_benchmark("binarize_speed.py", "--images", "2000", "--repeats", "2")
    assert "2,000 images of 784 pixels, batch 100; 2 repeats" in out
    assert "bernoulli / uniform compare:" in out and out.count(" s an epoch (") == 2


def test_the_iwae_benchmark_alternates_both_cases_and_prints_their_ratio() -> None:
    out = run_benchmark("iwae_speed.py", "--dataset", "digits", "--k", "5", "--warmup-steps", "2", "--blocks", "2")
    assert "digits, IWAE k = 5, batch 100" in out and "GFLOP/s" in out
    assert "every weight carried" in out and "weights < 1e-12 dropped (vaekit)" in out
    assert "speed-up: " in out and "over 2 block pairs" in out


def test_the_training_speed_benchmark_pairs_every_case_with_the_minimal_loop() -> None:
    out = run_benchmark(
        "train_speed.py", "--dataset", "digits", "--batches", "3", "--repeats", "2", "--batch-size", "32"
    )
    assert "digits, MLP 64-400-20, batch 32, Adam; 2 repeats" in out
    for case in ("command line", "with validation", "loop", "minimal", "tutorial"):
        assert f"  {case} " in out
    for ratio in ("command line / minimal:", "with validation / minimal:", "loop / minimal:", "loop / tutorial:"):
        assert ratio in out


def test_the_loop_cost_benchmark_times_every_feature_against_its_baseline() -> None:
    out = run_benchmark(
        "loop_costs.py", "--dataset", "digits", "--batches", "30", "--rounds", "2", "--batch-size", "32"
    )
    rows = {line.split("  ")[1].strip(): line for line in out.splitlines() if line.startswith("  ")}
    baselines = {"plain loop", "half batch, 1 process"}
    assert set(rows) == baselines | {
        "progress bar", "weight averaging", "no NaN flag or sums", "mid-epoch checkpoints", "rank 0 of 2",
        "precision wrapper",
    }  # fmt: skip
    for name, line in rows.items():
        assert line.count("%") == (0 if name in baselines else 3), line  # a cost, and its range, for each feature


def test_the_demo_record_holds_the_run_and_where_it_ran(tmp_path: Path) -> None:
    out = run_benchmark("demo.py", "--dataset", "digits", "--epochs", "2", "--out", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"] == "vaekit train --dataset digits --epochs 2 --out runs/demo" and results["epochs"] == 2
    assert (
        results["test_elbo"] < 0 and 0 < results["train_seconds"] <= results["epoch_seconds"] <= results["wall_seconds"]
    )
    assert results["commit"] and results["processor"] and results["torch"]
    assert f"test ELBO {results['test_elbo']:.2f} nats/image" in out


def test_the_outputs_record_holds_what_each_command_printed(tmp_path: Path) -> None:
    """benchmarks/outputs.py: a step runs after the steps it needs, and each output is recorded with its command."""
    run_benchmark(
        "outputs.py", "--dataset", "digits", "--epochs", "1", "--only", "smoothness-demo", "--out", str(tmp_path)
    )
    assert "epoch   1  train −ELBO" in (tmp_path / "train-demo.txt").read_text()  # the epoch lines (error stream) too
    assert "latent smoothness: 200 linear paths" in (tmp_path / "smoothness-demo.txt").read_text()
    entries = json.loads((tmp_path / "results.json").read_text())["outputs"]
    assert [entry["name"] for entry in entries] == ["train-demo", "smoothness-demo"]
    assert entries[1]["command"] == "vaekit latent smoothness runs/demo" and entries[1]["seconds"] > 0
    assert entries[1]["commit"] and entries[1]["processor"] and entries[1]["torch"]


def test_the_ood_benchmark_writes_a_record_per_score_with_pyods_rows_beside(tmp_path: Path) -> None:
    """digits against uniform-noise images: the likelihood must tell them apart, and every record has its fields;
    an earlier run's records of another model stay."""
    earlier = {"in": "digits", "out": "elsewhere", "score": "iw-nll", "model": "an earlier model", "auroc": 0.5,
               "auroc_interval": [0.4, 0.6], "auroc_by_seed": [0.5], "auprc": 0.5, "fpr95": 0.9, "seeds": [0],
               "commit": "abc", "in_images": 297, "out_images": 10}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps([earlier]))
    run_benchmark("ood/run.py", "--smoke", "--seeds", "0", "--out", str(tmp_path))
    records = json.loads((tmp_path / "results.json").read_text())
    assert records[0] == earlier and "hierarchy (ladder)" in records[1]["model"]
    assert len({(r["in"], r["out"], r["score"], r["model"]) for r in records}) == len(records)
    scores = {r["score"] for r in records}
    assert {"iw-nll", "elbo", "llr>1", "llr>2", "typicality", "recon", "pyod-vae", "pyod-vae-kl"} <= scores
    for r in records:
        assert {"in", "out", "model", "auroc", "auroc_interval", "auprc", "fpr95", "seeds", "commit"} <= set(r)
        low, high = r["auroc_interval"]
        assert 0 <= low <= r["auroc"] <= high <= 1 and r["seeds"] == [0] and r["in_images"] == 297
    by_score = {r["score"]: r for r in records}
    assert by_score["iw-nll"]["auroc"] > 0.9 and "pyod" in by_score["pyod-vae"]["model"]
    assert "| digits → " in (tmp_path / "results.md").read_text()


def test_the_ood_benchmark_holds_out_one_class_at_a_time(tmp_path: Path) -> None:
    """--one-class: the model trains without the class, whose test images are the out-of-distribution set."""
    run_benchmark("ood/run.py", "--smoke", "--one-class", "digits", "--classes", "3", "--seeds", "0", "--no-pyod",
                  "--out", str(tmp_path))  # fmt: skip
    records = json.loads((tmp_path / "results.json").read_text())
    assert {(r["in"], r["out"]) for r in records} == {("digits-without-3", "digits-3")}
    inside, outside = (np.load(tmp_path / "data" / name) for name in ("digits-without-3.npz", "digits-3.npz"))
    assert 3 not in inside["y_train"] and 3 not in inside["y_test"]
    assert (len(inside["x_test"]), len(outside["x_test"])) == (records[0]["in_images"], records[0]["out_images"])
    assert len(inside["x_test"]) + len(outside["x_test"]) == 297
    assert "One class held out, averaged over the classes" in (tmp_path / "results.md").read_text()
