"""Hostile and careless inputs: a refused or failed resume leaves the run as it was; malformed run files, seeds and
TOML files are one line; a NaN message tells the truth; the explorer warns of a wildcard Host and drops slow clients.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from typer.testing import CliRunner

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit import train
from vaekit.cli.main import app
from vaekit.web.app import create_app

runner = CliRunner()
DEEP = "[" * 100_000 + "]" * 100_000  # nested far past Python's recursion limit
HUGE = "9" * 5000  # an integer past the digits Python converts from text by default
TOO_BIG_SEED = str(10**23)


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run that finished its 2 epochs."""
    run_dir = tmp_path_factory.mktemp("hostile") / "run"
    train(tiny_config(epochs=2), run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    return copy


# --- a refused or failed --resume changes nothing ----------------------------------------------------------------


def test_a_refused_resume_leaves_the_run_as_it_was(run_copy: Path) -> None:
    before = fingerprint(run_copy)
    code, _, stderr = invoke("train", "--resume", "--epochs", "1", "--out", run_copy, "--quiet")
    one_line_error(code, stderr, "finished its 2 epochs", "--epochs")
    assert fingerprint(run_copy) == before
    assert "2/2 epochs" in runner.invoke(app, ["info", str(run_copy)]).stdout


def _fail_at(monkeypatch: pytest.MonkeyPatch, target: str, error: BaseException) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(target, fail)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("vaekit.training.loop.load_dataset", MemoryError()),
        ("vaekit.training.loop.load_dataset", OSError(errno.ENOSPC, "No space left on device")),
        ("vaekit.training.loop.build_model", MemoryError()),
        ("vaekit.training.loop._to_device", MemoryError("CUDA out of memory")),
    ],
)
def test_a_resume_that_fails_before_training_leaves_the_run_as_it_was(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch, target: str, error: BaseException
) -> None:
    before = fingerprint(run_copy)
    _fail_at(monkeypatch, target, error)
    with pytest.raises(type(error)):
        train(tiny_config(epochs=3), run_copy, resume=True)
    assert fingerprint(run_copy) == before


def test_a_resume_whose_checkpoint_does_not_match_leaves_the_run_as_it_was(run_copy: Path) -> None:
    state = torch.load(run_copy / "state.pt", weights_only=True)
    state["optimizer"]["param_groups"].append(dict(state["optimizer"]["param_groups"][0]))
    torch.save(state, run_copy / "state.pt")
    before = fingerprint(run_copy)
    code, _, stderr = invoke("train", "--resume", "--epochs", "3", "--out", run_copy, "--quiet")
    one_line_error(code, stderr, "state.pt")
    assert fingerprint(run_copy) == before


# --- malformed files in the run folder ---------------------------------------------------------------------------


def _final_with(**changes: Any) -> Callable[[Path], None]:
    def edit(run_dir: Path) -> None:
        final = json.loads((run_dir / "metrics.json").read_text())
        final.update(changes)
        (run_dir / "metrics.json").write_text(json.dumps(final))

    return edit


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).write_text(text)


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (_write("config.json", DEEP), ("config.json", "nested too deeply")),
        (_write("config.json", '{"seed": ' + HUGE + "}"), ("config.json", "integer too long")),
        (_write("metrics.jsonl", DEEP + "\n"), ("metrics.jsonl", "nested too deeply")),
        (_write("metrics.json", DEEP), ("metrics.json", "nested too deeply")),
        (_write("metrics.jsonl", "{}\n{}\n"), ("metrics.jsonl", "epoch 1")),
        (_write("metrics.jsonl", '{"epoch": 1, "train": {"elbo": "x"}, "val": null}\n' * 2), ("metrics.jsonl",)),
        (_final_with(test="x"), ("metrics.json", "test")),
        (_final_with(test={"elbo": -1.0}), ("metrics.json", "test")),
        (_final_with(epochs="2"), ("metrics.json", "epochs")),
    ],
)
def test_a_malformed_run_file_read_by_info_is_one_line(
    run_copy: Path, edit: Callable[[Path], None], fragments: tuple[str, ...]
) -> None:
    edit(run_copy)
    for args in (["info", run_copy], ["info", "--json", run_copy]):
        code, _, stderr = invoke(*args)
        one_line_error(code, stderr, *fragments)


def test_a_history_whose_records_leave_out_val_is_read_as_having_none(run_copy: Path) -> None:
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    (run_copy / "metrics.jsonl").write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "val"}) + "\n" for r in records)
    )
    for args in (["info", run_copy], ["info", "--json", run_copy]):
        result = invoke(*args)
        assert result.code == 0 and "epochs" in result.stdout, result.output


def _optimizer_edited(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """An edit of the saved optimizer state that `load_state_dict` accepts but a step would fail on."""

    def edit(run_dir: Path) -> None:
        state = torch.load(run_dir / "state.pt", weights_only=True)
        change(state["optimizer"])
        torch.save(state, run_dir / "state.pt")

    return edit


def _state_with(**changes: Any) -> Callable[[Path], None]:
    def edit(run_dir: Path) -> None:
        state = torch.load(run_dir / "state.pt", weights_only=True)
        state.update(changes)
        torch.save(state, run_dir / "state.pt")

    return edit


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_state_with(history=5), "history"),
        (_state_with(history=DEEP), "nested too deeply"),
        (_state_with(history="[{}, {}]"), "epoch 1"),
        (_state_with(generator="abc"), "generator"),
        (_state_with(generator=torch.zeros(3, dtype=torch.uint8)), "generator"),
        (_state_with(optimizer=[1, 2]), "optimizer"),
        (_state_with(optimizer={"state": {}, "param_groups": "x"}), "optimizer"),
        (_state_with(model=[1, 2]), "model"),
        (_state_with(epoch=True), "not a vaekit checkpoint"),
        (_state_with(selected=None), "selected is not an epoch's weights"),
        (_state_with(selected={"epoch": 99, "weights": {}}), "selected is not an epoch's weights"),
        (_optimizer_edited(lambda o: o["state"][0].update(odd=[None, False])), "a parameter's state holds"),
        (_optimizer_edited(lambda o: o["state"][0].pop("exp_avg")), "a parameter's state holds"),
        (_optimizer_edited(lambda o: o["state"][0].update(exp_avg="x")), "exp_avg is not a tensor"),
        (_optimizer_edited(lambda o: o["param_groups"][0].update(betas="ab")), "'betas'"),
    ],
)
def test_a_state_file_holding_the_wrong_types_is_one_line(
    run_copy: Path, edit: Callable[[Path], None], fragment: str
) -> None:
    edit(run_copy)
    before = fingerprint(run_copy)
    code, _, stderr = invoke("train", "--resume", "--epochs", "3", "--out", run_copy, "--quiet")
    one_line_error(code, stderr, "state.pt", fragment)
    assert fingerprint(run_copy) == before


# --- seeds and TOML files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--seed", "--split-seed"])
def test_a_training_seed_out_of_range_is_one_line(tmp_path: Path, flag: str) -> None:
    code, _, stderr = invoke("train", "--dataset", "digits", flag, TOO_BIG_SEED, "--out", tmp_path / "run")
    one_line_error(code, stderr, flag, TOO_BIG_SEED, str(2**63 - 1))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["sample"], ["evaluate"], ["gradients"], ["latent", "smoothness"], ["why"]])
def test_every_seed_option_is_bounded(finished: Path, command: list[str]) -> None:
    run = [] if command == ["why"] else [finished]
    for seed in (TOO_BIG_SEED, "-1"):
        code, _, stderr = invoke(*command, *run, "--seed", seed)
        one_line_error(code, stderr, "--seed", seed, str(2**63 - 1))


def test_a_seed_out_of_range_in_a_file_is_one_line(run_copy: Path, tmp_path: Path) -> None:
    config = json.loads((run_copy / "config.json").read_text())
    config["data"]["split_seed"] = 10**23
    (run_copy / "config.json").write_text(json.dumps(config))
    code, _, stderr = invoke("info", run_copy)
    one_line_error(code, stderr, "config.json", "split_seed")
    (tmp_path / "c.toml").write_text(f"seed = {2**63 - 1}\nsplit-seed = -1\n")
    code, _, stderr = invoke("train", "--dataset", "digits", "--config", tmp_path / "c.toml", "--out", tmp_path / "run")
    one_line_error(code, stderr, "split_seed")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "is a folder"),
        (bytes(range(256)) * 4, "not UTF-8 text"),
        (f"a = {DEEP}\n".encode(), "nested too deeply"),
        (f"seed = {HUGE}\n".encode(), "not valid TOML"),
    ],
)
def test_a_config_file_that_is_not_toml_text_is_one_line(tmp_path: Path, content: bytes | None, fragment: str) -> None:
    path = tmp_path / "settings.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    code, _, stderr = invoke("train", "--dataset", "digits", "--config", path, "--out", tmp_path / "run")
    one_line_error(code, stderr, "settings.toml", fragment, "--config")
    assert not (tmp_path / "run").exists()


# --- the NaN message ---------------------------------------------------------------------------------------------


def test_a_loss_that_is_not_finite_before_any_step_blames_the_settings_not_the_learning_rate(tmp_path: Path) -> None:
    args = ["--dataset", "digits", "--epochs", "1", "--hidden", "32", "--latent-dim", "4", "--quiet"]
    code, _, stderr = invoke("train", *args, "--likelihood", "gaussian", "--gaussian-scale", "1e-30", "--out", tmp_path)
    line = one_line_error(code, stderr, "first step", "--gaussian-scale 1e-30", "no checkpoint")
    assert "last good checkpoint is kept" not in line and "--resume" not in line


# --- the explorer ------------------------------------------------------------------------------------------------


def test_serving_every_host_name_is_warned_of(finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vaekit.web.server

    monkeypatch.setattr(vaekit.web.server, "serve_app", lambda *args, **kwargs: None)
    result = runner.invoke(app, ["serve", str(finished), "--allow-host", "*", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "--allow-host '*'" in line]
    assert len(warnings) == 1 and "any Host" in warnings[0] and "DNS rebinding" in warnings[0], result.stderr
    result = runner.invoke(app, ["serve", str(finished), "--allow-host", "box.local", "--device", "cpu"])
    assert result.exit_code == 0 and "--allow-host '*'" not in result.stderr


@pytest.fixture
def slow_client_server(finished: Path) -> Iterator[int]:
    from vaekit.training.runs import load_run
    from vaekit.web.server import server_config

    run = load_run(finished)
    from vaekit.data.sources import load_dataset

    explorer = create_app(run.model, load_dataset(run.config.data).test, "run", top_k=2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(explorer, "127.0.0.1", port, request_seconds=0.5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _seconds_until_closed(port: int, sent: bytes) -> tuple[float, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        started = time.monotonic()
        connection.sendall(sent)
        answer = b""
        while data := connection.recv(65536):
            answer += data
        return time.monotonic() - started, answer


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and says nothing
        b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # half a head
        b'POST /api/decode HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{"z": [',  # half a body
    ],
)
def test_a_client_sending_half_a_request_is_disconnected(slow_client_server: int, sent: bytes) -> None:
    seconds, answer = _seconds_until_closed(slow_client_server, sent)
    assert seconds < 3, seconds
    assert answer == b""


def test_a_whole_request_is_still_answered_and_kept_alive_briefly(slow_client_server: int) -> None:
    request = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    seconds, answer = _seconds_until_closed(slow_client_server, request)
    assert answer.startswith(b"HTTP/1.1 200") and b'"latent_dim"' in answer
    assert seconds < 8, seconds  # the keep-alive timeout closes the idle connection after the answer


def test_a_loss_that_turns_non_finite_before_any_checkpoint_does_not_offer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vaekit.model import objectives

    real, calls = objectives.elbo, [0]

    def elbo(model: Any, *args: Any, **kwargs: Any) -> Any:  # the ELBO objective's terms, as training asks for them
        terms = real(model, *args, **kwargs)
        calls[0] += model.training
        if model.training and calls[0] >= 3:
            terms.log_px = terms.log_px * float("nan")
        return terms

    monkeypatch.setattr(objectives, "elbo", elbo)
    args = ["--dataset", "digits", "--epochs", "1", "--hidden", "32", "--latent-dim", "4", "--quiet"]
    code, _, stderr = invoke("train", *args, "--beta", "2", "--out", tmp_path / "run")
    line = one_line_error(code, stderr, "epoch 1, step 3", "no checkpoint was written yet", "--lr", "--beta 2")
    assert "last good checkpoint is kept" not in line and "--resume" not in line
    assert not (tmp_path / "run" / "state.pt").exists()


def test_a_client_sending_half_of_its_next_request_is_disconnected(slow_client_server: int) -> None:
    whole = b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    seconds, answer = _seconds_until_closed(slow_client_server, whole + b"GET /api/info HTTP/1.1\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1
    assert seconds < 3, seconds  # the keep-alive timeout no longer runs once the next request has begun
