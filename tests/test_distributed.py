"""Data parallelism for real: torchrun processes on the gloo backend, on this machine's CPU.

The contract: one command means the same optimisation on 1 or N processes (the global batch is split, its noise
drawn in full and sliced), a DDP run killed with SIGKILL resumes on any number of processes, and two "nodes"
meeting at a rendezvous on 127.0.0.1 train the same model again.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_config
from vaekit import load_run, train
from vaekit.training.distributed import Ranks

pytestmark = pytest.mark.slow  # every test here runs whole trainings or benchmarks

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# 1,293 training images at batch 64: the last batch (13 images) does not split evenly over 2 ranks
ARGS = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "64", "--binarize", "dynamic"]
ARGS += ["--samples", "2", "--average-decay", "0.9", "--quiet"]  # every rank averages its weights alike


def reference_config(epochs: int) -> object:
    config = tiny_config(epochs=epochs, batch_size=64, samples=2, average_decay=0.9)
    config.data.binarize = "dynamic"
    return config


def launch(out: Path, processes: int = 2, nodes: str = "--standalone", *extra: str) -> subprocess.Popen[str]:
    """`torchrun … -m vaekit train` of the test's run (3 epochs) into `out`, in a session of its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [*TORCHRUN, *nodes.split(), "--nproc-per-node", str(processes)]
    command = [*launcher, "-m", "vaekit", "train", *ARGS, *extra, "--epochs", "3", "--out", str(out)]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)


def assert_same_weights(a: Path, b: Path) -> None:
    """The same weights the optimizer stepped (state.pt) and the same average of them (model.safetensors)."""
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    left_state, right_state = (torch.load(run / "state.pt", weights_only=True) for run in (a, b))
    for one, other in ((left, right), (left_state["model"], right_state["model"])):
        assert one.keys() == other.keys()
        for name in one:
            torch.testing.assert_close(one[name], other[name], rtol=1e-5, atol=1e-5)


def test_slices_cover_every_row_once() -> None:
    for batch in (1, 13, 64):
        for world in (1, 2, 3, 5):
            slices = [Ranks(rank, world).slice_of(batch) for rank in range(world)]
            assert [s for s, _ in slices] == [0] + [stop for _, stop in slices[:-1]]
            assert slices[-1][1] == batch and max(b - a for a, b in slices) - min(b - a for a, b in slices) <= 1


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "one"
    train(reference_config(epochs=3), out)  # type: ignore[arg-type]
    return out


def test_two_processes_train_the_same_model_as_one(one_process: Path, tmp_path: Path) -> None:
    """...and only rank 0 logs: one TensorBoard event file, one point per epoch."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    process = launch(tmp_path / "two", 2, "--standalone", "--logger", "tensorboard")
    assert process.wait(timeout=300) == 0, process.stderr.read() if process.stderr else ""
    assert_same_weights(one_process, tmp_path / "two")
    (event_file,) = (tmp_path / "two" / "tensorboard").iterdir()
    events = EventAccumulator(str(event_file))
    events.Reload()
    assert [e.step for e in events.Scalars("train/elbo")] == [1, 2, 3]
    two = load_run(tmp_path / "two")
    assert two.config.world_size == 2
    ref = load_run(one_process)
    for got, want in zip(two.history, ref.history, strict=True):  # all-reduced sums over true counts
        assert got["train"]["elbo"] == pytest.approx(want["train"]["elbo"], rel=1e-5)
        assert got["val"] == pytest.approx(want["val"], rel=1e-5)


def test_a_killed_ddp_run_resumes_on_one_process(one_process: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    process = launch(out)
    deadline = time.monotonic() + 300
    while not (out / "state.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victims = [process.pid, *descendants(process.pid)]  # torchrun starts each worker in a session of its own
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    process.wait()
    wait_for_the_lock(out / ".lock", deadline)  # a killed process lets go of it once its last thread has exited
    assert load_run(out).epochs_done < 3, "the kill must land mid-run"
    resumed = train(None, out, resume=True)
    assert resumed.config.world_size == 1
    assert_same_weights(one_process, out)


def parent_of(pid: str) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def descendants(root: int) -> list[int]:
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and parent_of(p.name) == root]
    return [pid for child in children for pid in (child, *descendants(child))]


def wait_for_the_lock(path: Path, deadline: float) -> None:
    while path.exists() and time.monotonic() < deadline:
        with path.open("rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_nodes_meeting_on_localhost_train_the_same_model(one_process: Path, tmp_path: Path) -> None:
    port = free_port()
    rendezvous = f"--rdzv-backend c10d --rdzv-endpoint 127.0.0.1:{port} --rdzv-id vaekit-test"
    nodes = [launch(tmp_path / "nodes", 1, f"--nnodes 2 --node-rank {rank} {rendezvous}") for rank in (0, 1)]
    for node in nodes:
        assert node.wait(timeout=300) == 0, node.stderr.read() if node.stderr else ""
    assert_same_weights(one_process, tmp_path / "nodes")


def test_sharded_evaluation_scores_every_image_once_as_one_process_does(one_process: Path) -> None:
    from vaekit.analysis.evaluate import evaluate

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "vaekit", "evaluate", str(one_process)]
    options = ["--k", "200", "--prior-samples", "20", "--split", "test", "--device", "cpu", "--json"]
    done = subprocess.run([*command, *options], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    sharded = json.loads(done.stdout)["likelihood"][0]
    single = evaluate(load_run(one_process), k=200, prior_samples=20, split="test", write=False).likelihood[0]
    assert sharded["images"] == single.images  # 360 test images in 18 calls of 20, 9 per rank
    for name in ("nll", "nll_se", "neg_elbo", "kl", "mse"):
        assert sharded[name] == pytest.approx(getattr(single, name), rel=1e-12), name


def test_sharded_scores_are_the_rows_one_process_writes(one_process: Path, tmp_path: Path) -> None:
    from vaekit.analysis.scores import score_images

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "vaekit", "score", str(one_process)]
    options = ["--dataset", "digits", "--k", "50", "--device", "cpu", "--out", str(tmp_path / "s.csv")]
    done = subprocess.run([*command, *options], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "s.csv").read_text().splitlines()
    header, rows = lines[0].split(","), [[float(v) for v in line.split(",")] for line in lines[1:]]
    single = score_images(load_run(one_process), "digits", "test", k=50)
    assert header == list(single) and len(rows) == len(single["index"])
    for i, name in enumerate(header):
        assert [row[i] for row in rows] == pytest.approx(single[name].tolist(), rel=1e-12), name


def test_a_conditional_run_gives_each_rank_the_labels_of_its_rows(tmp_path: Path) -> None:
    config = reference_config(epochs=3)
    config.model.condition = "label"  # type: ignore[attr-defined]
    train(config, tmp_path / "one")  # type: ignore[arg-type]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "vaekit", "train", *ARGS]
    options = ["--epochs", "3", "--condition", "label", "--out", str(tmp_path / "two")]
    done = subprocess.run([*command, *options], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_no_flag_of_a_vaekit_command_is_read_by_torchrun_as_its_own() -> None:
    """torchrun's parser takes any abbreviation of its options (--log for --log-dir) wherever it appears, so a vaekit
    flag that is a prefix of one would never reach vaekit under torchrun."""
    from torch.distributed.run import get_args_parser
    from typer.main import get_command

    from vaekit.cli.main import app

    theirs = {flag for action in get_args_parser()._actions for flag in action.option_strings}
    root = get_command(app)
    ours = {
        flag
        for name in ("train", "evaluate")
        for param in root.commands[name].params  # type: ignore[attr-defined]
        for flag in param.opts
    }
    assert ours and not {flag for flag in ours if any(t.startswith(flag) for t in theirs)}
