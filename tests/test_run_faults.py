"""The run folder under faults: kills at any moment, NaN, two writers, and tampered or damaged files.

Every case ends the same way: one line naming the problem and the fix, and a run folder whose files agree with each
other (one authority, state.pt; the other files are views cut to the epoch they hold).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit import load_run, train
from vaekit.cli.main import app
from vaekit.data.sources import load_dataset
from vaekit.errors import VaekitError
from vaekit.model import objectives
from vaekit.model.vae import VAE
from vaekit.training.callbacks import Callback, StepEnd
from vaekit.training.runlock import RunLock

ARGS = ["--dataset", "digits", "--epochs", "3", "--batch-size", "64", "--hidden", "32", "--latent-dim", "4"]


def losses(history: list[dict[str, Any]]) -> list[tuple[float, ...]]:
    return [(r["train"]["elbo"], r["train"]["kl"], r["val"]["elbo"], r["val"]["kl"]) for r in history]


# --- kill -9 at any moment -------------------------------------------------------------------------------------


def _child(run_dir: str, kill: tuple[str, float, bool]) -> None:
    """One `vaekit train` process (fresh or resumed), which kills itself at the moment `kill` names: just before
    or just after the n-th atomic rename, so that every file write is hit; time-based kills come from the parent."""
    torch.set_num_threads(1)
    mode, n, after = kill
    if mode == "rename":
        real_replace, count = os.replace, [0]

        def replace(src: Any, dst: Any, **folders: Any) -> None:
            count[0] += 1
            if count[0] == n and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst, **folders)
            if count[0] == n and after:
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace  # type: ignore[assignment]
    resume = ["--resume"] if (Path(run_dir) / "config.json").exists() else []
    app([*(["train", *ARGS, "--quiet", "--out", run_dir]), *resume], prog_name="vaekit")


def run_child(run_dir: Path, kill: tuple[str, float, bool]) -> int | None:
    process = multiprocessing.get_context("fork").Process(target=_child, args=(str(run_dir), kill))
    process.start()
    process.join(timeout=kill[1] if kill[0] == "time" else 120)
    if process.is_alive():
        process.kill()
        process.join()
    return process.exitcode


@pytest.mark.slow
def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_metrics(tmp_path: Path) -> None:
    """Kills just before and just after each of a run's file writes, and at random times (steps, evaluation,
    pictures), three to a chain, each chain resumed to the end: every chain ends exactly as an uninterrupted run."""
    code, _, stderr = invoke("train", *ARGS, "--quiet", "--out", tmp_path / "warm-up")  # imports, once, in the parent
    assert code == 0, stderr
    started = time.perf_counter()
    assert run_child(tmp_path / "reference", ("none", 0, False)) == 0
    duration = time.perf_counter() - started
    reference = load_run(tmp_path / "reference")
    rng = random.Random(0)
    writes = 1 + 3 * 3 + 5  # config, (state, history, weights) per epoch, four pictures and metrics.json
    kills: list[tuple[str, float, bool]] = [("rename", n, False) for n in range(1, writes + 1)]
    kills += [("rename", n, True) for n in rng.sample(range(1, writes + 1), 5)]
    kills += [("time", rng.uniform(0.05, 1.0) * duration, False) for _ in range(6)]
    rng.shuffle(kills)
    chains = [kills[i : i + 3] for i in range(0, len(kills), 3)]
    killed = 0
    while chains:
        chain = chains.pop(0)
        run_dir = tmp_path / f"chain{len(chains)}-{killed}"
        for kill in chain:
            killed += run_child(run_dir, kill) == -signal.SIGKILL
        finished_before = (run_dir / "metrics.json").exists() and load_run(run_dir).final is not None
        assert run_child(run_dir, ("none", 0, False)) == (2 if finished_before else 0)  # 2: "already finished"
        resumed = load_run(run_dir)
        assert losses(resumed.history) == losses(reference.history)
        assert resumed.final is not None and reference.final is not None
        assert resumed.final["test"] == reference.final["test"]
        assert not list(run_dir.glob(".*")), "a temporary or lock file was left behind"
        if not chains and killed < 20 and len(kills) < 60:  # a kill that came after its process finished missed
            extra = [("time", rng.uniform(0.05, 0.6) * duration, False) for _ in range(3)]
            kills += extra
            chains.append(extra)
    assert killed >= 20


@pytest.mark.slow
def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path: Path) -> None:
    """Killed after metrics.jsonl was written but before any checkpoint: --resume trains from the beginning."""
    reference = train(tiny_config(epochs=2), tmp_path / "reference")
    run_dir = tmp_path / "cut"
    run_dir.mkdir()
    (run_dir / "config.json").write_text((tmp_path / "reference" / "config.json").read_text())
    (run_dir / "metrics.jsonl").write_text(json.dumps(reference.history[0]) + "\n")
    code, _, stderr = invoke("train", "--resume", "--out", run_dir, "--quiet")
    assert code == 0, stderr
    assert losses(load_run(run_dir).history) == losses(reference.history)


@pytest.mark.slow
def test_readers_never_pair_metrics_with_weights_of_another_epoch(tmp_path: Path) -> None:
    """metrics.jsonl one epoch ahead of model.safetensors (a crash between the two renames)."""
    one = train(tiny_config(epochs=1), tmp_path / "one")
    two = train(tiny_config(epochs=2), tmp_path / "two")
    (tmp_path / "two" / "model.safetensors").write_bytes((tmp_path / "one" / "model.safetensors").read_bytes())
    loaded = load_run(tmp_path / "two")
    assert loaded.epochs_done == 1 and losses(loaded.history) == losses(two.history[:1]) == losses(one.history)
    assert loaded.final is None  # metrics.json describes epoch 2's weights, not these
    result = invoke("info", tmp_path / "two", "--json")
    assert result.code == 0 and json.loads(result.stdout)["epochs_done"] == 1


# --- NaN and infinity ------------------------------------------------------------------------------------------


def poison(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    """Make the ELBO NaN from the `at_call`-th training step on, as a diverging model would."""
    real, calls = objectives.elbo, [0]

    def elbo(model: VAE, *args: Any, **kwargs: Any) -> Any:  # the ELBO objective's terms, as training asks for them
        terms = real(model, *args, **kwargs)
        if model.training:
            calls[0] += 1
            if calls[0] >= at_call:
                terms.log_px = terms.log_px * float("nan")
        return terms

    monkeypatch.setattr(objectives, "elbo", elbo)


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    reference = train(tiny_config(epochs=3), tmp_path / "reference")
    steps_per_epoch = math.ceil(len(load_dataset(reference.config.data).train) / reference.config.batch_size)
    poison(monkeypatch, at_call=steps_per_epoch + 5)  # step 5 of epoch 2
    code, _, stderr = invoke("train", *ARGS, "--quiet", "--out", run_dir)
    line = one_line_error(code, stderr, "training diverged", "epoch 2, step 5", "--lr", "--resume")
    assert "NaN" in line
    saved = fingerprint(run_dir)
    assert load_run(run_dir).epochs_done == 1
    assert json.loads((run_dir / "metrics.jsonl").read_text())["epoch"] == 1  # valid JSON, one good epoch
    monkeypatch.undo()
    code, _, stderr = invoke("train", "--resume", "--out", run_dir, "--quiet")
    assert code == 0, stderr
    assert saved["state.pt"] != fingerprint(run_dir)["state.pt"]
    assert losses(load_run(run_dir).history) == losses(reference.history)


def test_non_finite_weights_are_never_written_over_a_good_checkpoint(tmp_path: Path) -> None:
    from vaekit.training.runs import save_checkpoint

    run = train(tiny_config(epochs=1), tmp_path / "run")
    before = fingerprint(tmp_path / "run")
    with torch.no_grad():
        next(run.model.parameters())[0, 0] = float("inf")
    optimizer = torch.optim.Adam(run.model.parameters())
    with pytest.raises(VaekitError, match="not finite"):
        save_checkpoint(tmp_path / "run", run.model, optimizer, torch.Generator(), run.history * 2)
    assert fingerprint(tmp_path / "run") == before


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        (["--beta", "inf"], "beta = inf is not a finite number"),
        (["--lr", "nan"], "lr = nan is not a finite number"),
        (["--warmup", "inf"], "warmup_epochs = inf"),
        (["--temperature", "1e999"], "temperature = inf"),
    ],
)
def test_non_finite_settings_are_refused(tmp_path: Path, setting: list[str], fragment: str) -> None:
    code, _, stderr = invoke("train", *ARGS, *setting, "--out", tmp_path / "run")
    one_line_error(code, stderr, fragment)
    assert not (tmp_path / "run").exists()


def test_out_of_range_settings_in_toml_are_refused(tmp_path: Path) -> None:
    for text, fragment in [
        ('latent = "categorical"\nanneal_rate = -0.5', "anneal_rate must be zero or positive"),
        ("warmup = inf", "warmup_epochs = inf is not a finite number"),
        ("samples = 100000000", "samples must be between 1 and"),
    ]:
        (tmp_path / "c.toml").write_text(text + "\n")
        code, _, stderr = invoke("train", *ARGS, "--config", tmp_path / "c.toml", "--out", tmp_path / "run")
        one_line_error(code, stderr, fragment)


# --- two writers -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_writer_is_refused_and_told_who_holds_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(epochs=1), run_dir)
    before = fingerprint(run_dir)
    with RunLock(run_dir):  # this process is "the first trainer"
        for args in (["train", "--resume", "--epochs", "2"], ["train", *ARGS]):
            code, _, stderr = invoke(*args, "--out", run_dir, "--quiet")
            one_line_error(code, stderr, f"is being trained by process {os.getpid()}", "another --out")
        with pytest.raises(VaekitError, match="being trained"):
            train(tiny_config(epochs=2), run_dir, resume=True)
        code, _, _ = invoke("info", run_dir)  # readers need no lock
        assert code == 0
    assert {k: v for k, v in fingerprint(run_dir).items() if k != ".lock"} == before
    assert not (run_dir / ".lock").exists()
    train(tiny_config(epochs=2), run_dir, resume=True)  # released: the next writer gets it


def test_a_refused_writer_always_learns_who_holds_the_lock(tmp_path: Path) -> None:
    """Writers racing in a tight loop: never two holders, and no refusal that cannot name its holder.

    A lock file that became visible before its holder's name was in it made a racing loser say "another process".
    """
    holders, most, refusals = 0, 0, 0
    nameless: list[str] = []
    unexpected: list[str] = []
    guard = threading.Lock()

    def contend() -> None:
        nonlocal holders, most, refusals
        for _ in range(300):
            try:
                with RunLock(tmp_path / "run"):
                    with guard:
                        holders += 1
                        most = max(most, holders)
                    with guard:
                        holders -= 1
            except VaekitError as error:
                with guard:
                    refusals += 1
                if f"being trained by process {os.getpid()} on" not in str(error):
                    nameless.append(str(error))
            except Exception as error:  # a race the lock does not handle: the folder vanishing, a file appearing
                unexpected.append(repr(error))

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1
    assert refusals > 0  # the writers did race
    assert nameless == []
    assert unexpected == []
    assert list((tmp_path / "run").glob(".lock*")) == []  # every writer released and left no file of its own


def test_a_lock_left_by_a_killed_writer_is_taken_over_and_renamed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("process 1 on a-host-long-gone\n")  # its holder died: the kernel freed its flock
    with RunLock(run_dir):
        assert (run_dir / ".lock").read_text() == f"process {os.getpid()} on {socket.gethostname()}\n"
        assert sorted(path.name for path in run_dir.iterdir()) == [".lock"]
    assert list(run_dir.iterdir()) == []


@pytest.mark.slow
def test_a_holder_that_never_names_itself_is_still_refused_within_a_second(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT)  # a writer of some other kind: it locks, writes nothing
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = time.monotonic()
        with pytest.raises(VaekitError, match="is being trained by another process: wait"):
            RunLock(run_dir).__enter__()
        assert time.monotonic() - start < 3
        assert sorted(path.name for path in run_dir.iterdir()) == [".lock"]  # the refused writer left nothing
    finally:
        os.close(fd)


@pytest.mark.slow
def test_two_concurrent_cli_trainers_leave_one_consistent_run(tmp_path: Path) -> None:
    """Two real processes racing for one --out: exactly one trains, the other gets one line and exit 2."""
    command = [sys.executable, "-m", "vaekit", "train", *ARGS, "--quiet", "--out", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read() if p.stderr else "") for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(stderr for code, stderr in results if code == 2)
    assert "being trained by process" in loser or "already holds a run" in loser, loser
    reference = train(tiny_config(epochs=3, batch_size=64), tmp_path / "reference")  # other threads: close, not equal
    flat = [value for record in losses(load_run(tmp_path / "run").history) for value in record]
    assert flat == pytest.approx([value for record in losses(reference.history) for value in record], rel=1e-6)


# --- tampered or damaged run folders ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    train(tiny_config(epochs=1), run_dir)
    return run_dir


def tampered(finished: Path, tmp_path: Path, edit: dict[str, Any]) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in finished.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    config = json.loads((copy / "config.json").read_text())
    for dotted, value in edit.items():
        section, _, name = dotted.rpartition(".")
        (config[section] if section else config)[name] = value
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"model.latent_dim": 10**12}, "latent_dim must be between 1 and"),
        ({"model.latent_dim": 1000}, "does not match"),  # in bounds, but not the weights' shape: checked first
        ({"model.hidden": [60000]}, "does not match"),
        ({"model.network": "x"}, "unknown network 'x'"),
        ({"model.hidden": None}, "setting hidden = None"),
        ({"model.latent_dim": None}, "setting latent_dim = None"),
        ({"model.likelihood": "poisson"}, "unknown likelihood 'poisson'"),
        ({"lr": float("inf")}, "lr = inf is not a finite number"),
        ({"model.input_shape": [1, 8]}, "input_shape must be"),
        ({"model": [1, 2]}, "must be a JSON object"),
    ],
)
def test_a_tampered_config_is_one_line(finished: Path, tmp_path: Path, edit: dict[str, Any], fragment: str) -> None:
    copy = tampered(finished, tmp_path, edit)
    for command in ("info", "evaluate"):
        code, _, stderr = invoke(command, copy)
        one_line_error(code, stderr, "config.json", fragment)


@pytest.mark.parametrize(
    ("name", "content", "command", "fragment"),
    [
        ("config.json", b"\xff\xfe{not utf-8", "info", "not UTF-8"),
        ("metrics.jsonl", b'{"epoch": 1, "train"\n', "info", "metrics.jsonl is corrupt"),
        ("metrics.jsonl", b"[1, 2]\n", "info", "one JSON object per epoch"),
        ("metrics.json", b"{truncated", "info", "metrics.json is corrupt"),
        ("model.safetensors", b"\x00" * 40, "info", "truncated or corrupt"),
        ("state.pt", b"not a zip", "train", "state.pt is truncated, corrupt or not a vaekit checkpoint"),
    ],
)
def test_a_damaged_file_is_one_line(
    finished: Path, tmp_path: Path, name: str, content: bytes, command: str, fragment: str
) -> None:
    copy = tampered(finished, tmp_path, {})
    (copy / name).write_bytes(content)
    args = ["train", "--resume", "--epochs", "2", "--out", copy, "--quiet"] if command == "train" else [command, copy]
    code, _, stderr = invoke(*args)
    one_line_error(code, stderr, fragment)


class Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("unpickled!",))


def test_a_state_file_holding_a_pickled_object_is_refused_unopened(finished: Path, tmp_path: Path) -> None:
    copy = tampered(finished, tmp_path, {})
    torch.save({"epoch": 1, "payload": Exploit()}, copy / "state.pt")
    result = invoke("train", "--resume", "--epochs", "2", "--out", copy, "--quiet")
    one_line_error(result.code, result.stderr, "not a vaekit checkpoint")
    assert "unpickled!" not in result.stdout


# --- the Python API --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_leaves_the_callers_config_alone_and_resumes_a_categorical_run(tmp_path: Path) -> None:
    config = tiny_config(epochs=1)
    config.model.latent = "categorical"
    config.model.options.update(categories=3, latent_vars=2)
    snapshot = config.to_dict()
    train(config, tmp_path / "run")
    assert config.to_dict() == snapshot
    config.epochs = 2
    resumed = train(config, tmp_path / "run", resume=True)
    assert resumed.epochs_done == 2 and resumed.config.model.latent_dim == 6


# --- checkpoints inside an epoch ------------------------------------------------------------------------------


class StopAtSync(Callback):
    """Interrupts the run at the `n`-th progress update of epoch `epoch` (a crash in the middle of an epoch)."""

    def __init__(self, epoch: int, n: int) -> None:
        self.epoch, self.n, self.seen = epoch, n, 0

    def on_step_end(self, step: StepEnd) -> None:
        if step.epoch == self.epoch:
            self.seen += 1
            if self.seen == self.n:
                raise KeyboardInterrupt


@pytest.mark.slow
@pytest.mark.parametrize("average_decay", [0.0, 0.9])  # with a weight average, state.pt keeps it too
def test_a_run_interrupted_inside_an_epoch_resumes_from_there_exactly(tmp_path: Path, average_decay: float) -> None:
    # a checkpoint at every sync point
    config = tiny_config(epochs=2, batch_size=16, checkpoint_every=1e-9, average_decay=average_decay)
    reference = train(config, tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", callbacks=[StopAtSync(epoch=2, n=4)])
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["partial"]["step"] == 41  # after steps 1, 21 and 41 of epoch 2's 81
    assert load_run(tmp_path / "cut").epochs_done == 1  # readers still see the last whole epoch
    resumed = train(None, tmp_path / "cut", resume=True)
    assert losses(resumed.history) == losses(reference.history)
    for name, tensor in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)
    states = [torch.load(run / "state.pt", weights_only=True) for run in (tmp_path / "reference", tmp_path / "cut")]
    assert ("average" in states[0]) == bool(average_decay)
    for part in ("model", "average"):
        for name, tensor in states[0].get(part, {}).items():
            torch.testing.assert_close(states[1][part][name], tensor, rtol=0, atol=0)
