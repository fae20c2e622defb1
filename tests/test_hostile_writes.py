"""How vaekit writes into folders, tried as an attacker sharing the folder and as a careless user would: nothing is
written through a symbolic link, no user file is overwritten or deleted, a path that cannot be a run folder is one
line at once, and an operating-system error is one line that leaves the run as it was."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit import train
from vaekit.errors import VaekitError
from vaekit.files import atomic_write

runner = CliRunner()
ARGS = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "256", "--quiet"]
SECRET = b"the user's own bytes\n"


class Hung(BaseException):
    """Raised by the alarm of `within`; a BaseException, so that no handler of vaekit's or MLflow's swallows it."""


@contextmanager
def within(seconds: int) -> Iterator[None]:
    """The block finishes within `seconds`, or fails with Hung instead of hanging the test run."""

    def hung(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every entry under `folder`, dot files and links included (a link by its target, never followed)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[name] = "-> " + os.readlink(path)
        elif path.is_file():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[name] = "folder"
    return found


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run, copied by the tests that change it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_config(epochs=1), run_dir)
    return run_dir


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    copy.mkdir()
    for path in finished_run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


# --- nothing is written through a symbolic link (item 2) --------------------------------------------------------


def test_a_lock_planted_as_a_symlink_is_refused_and_its_target_untouched(run_copy: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(SECRET)
    (run_copy / ".lock").symlink_to("../victim.txt")
    before = fingerprint(run_copy)
    code, _, stderr = invoke("train", "--resume", "--epochs", "2", "--out", run_copy, "--quiet")
    one_line_error(code, stderr, ".lock", "symbolic link")
    assert victim.read_bytes() == SECRET
    assert fingerprint(run_copy) == before


def test_run_files_planted_as_symlinks_are_replaced_never_written_through(run_copy: Path, tmp_path: Path) -> None:
    """A link in place of a file vaekit writes is replaced by the new file; what it pointed to is never touched."""
    victims = {}
    for name in ("samples.png", "curves.png", "model.safetensors"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_bytes(SECRET)
        (run_copy / name).unlink()
        (run_copy / name).symlink_to(victims[name])
    code, _, stderr = invoke("train", "--resume", "--epochs", "2", "--out", run_copy, "--quiet")
    assert code == 0, stderr
    for name, victim in victims.items():
        assert victim.read_bytes() == SECRET, name
        assert not (run_copy / name).is_symlink(), name


def test_a_folder_planted_as_a_symlink_inside_the_run_is_never_written_into(run_copy: Path, tmp_path: Path) -> None:
    """RUN/latent, where the latent commands draw, pointing out of the run: one line, nothing written there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_copy / "latent").symlink_to(outside, target_is_directory=True)
    code, _, stderr = invoke("latent", "traverse", run_copy)
    one_line_error(code, stderr, "latent", "symbolic link")
    assert list(outside.iterdir()) == []


def test_an_atomic_write_creates_its_temporary_inside_the_folder_and_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "pictures").symlink_to(outside, target_is_directory=True)
    with pytest.raises(VaekitError, match="symbolic link"):
        atomic_write(tmp_path / "run" / "pictures" / "a.png", b"png")
    assert list(outside.iterdir()) == []


def test_a_tensorboard_folder_planted_as_a_symlink_is_refused(run_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_copy / "tensorboard").symlink_to(outside, target_is_directory=True)
    before = fingerprint(run_copy)
    code, _, stderr = invoke("train", "--resume", "--epochs", "2", "--out", run_copy, "--logger", "tensorboard")
    one_line_error(code, stderr, "tensorboard", "symbolic link")
    assert list(outside.iterdir()) == []
    assert fingerprint(run_copy) == before


def test_mlflow_uploads_only_the_regular_files_inside_the_run(run_copy: Path, tmp_path: Path) -> None:
    """A link to a secret out of the run (a file, or a folder holding one) is not uploaded as an artifact."""
    from vaekit.tracking.mlflow_logger import artifact_files

    (tmp_path / "secret.txt").write_bytes(SECRET)
    (run_copy / "notes.txt").symlink_to(tmp_path / "secret.txt")
    (run_copy / "linked").symlink_to(tmp_path, target_is_directory=True)
    (run_copy / "latent").mkdir()
    (run_copy / "latent" / "traverse.png").write_bytes(SECRET)
    uploaded = {path.relative_to(run_copy).as_posix() for path in artifact_files(run_copy)}
    assert {"config.json", "samples.png", "latent/traverse.png"} <= uploaded
    assert not any(name.startswith(("notes", "linked")) for name in uploaded), uploaded


# --- nothing of the user's is lost (item 3) --------------------------------------------------------------------


def test_an_out_folder_holding_no_vaekit_run_is_refused_and_kept(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "config.json").write_text('{"mine": 1}\n')
    (project / "metrics.jsonl").write_text("mine\n")
    (project / "samples.png").write_bytes(SECRET)
    (project / ".notes.tmp").write_bytes(SECRET)
    before = fingerprint(project)
    code, _, stderr = invoke("train", *ARGS, "--epochs", "1", "--out", project)
    one_line_error(code, stderr, str(project), "new or empty", "--resume")
    assert fingerprint(project) == before


def test_a_folder_of_a_writer_killed_before_its_first_file_takes_a_new_run(tmp_path: Path) -> None:
    """What a kill -9 leaves before config.json exists (the lock, a temporary) is not a user's: a new run goes in."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text("process 1 on a-host-long-gone\n")
    (run_dir / ".config.json.vaekit-0123abcd.tmp").write_text("{")  # the name vaekit's atomic write goes through
    code, _, stderr = invoke("train", *ARGS, "--epochs", "1", "--out", run_dir)
    assert code == 0, stderr
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []


def test_cleanup_deletes_only_the_temporaries_vaekit_creates(run_copy: Path) -> None:
    (run_copy / ".notes.tmp").write_bytes(SECRET)
    (run_copy / ".state.pt.tmp").write_bytes(SECRET)
    (run_copy / ".state.pt.vaekit-0123abcd.tmp").write_bytes(b"half a checkpoint")
    code, _, stderr = invoke("train", "--resume", "--epochs", "2", "--out", run_copy, "--quiet")
    assert code == 0, stderr
    assert sorted(p.name for p in run_copy.iterdir() if p.name.startswith(".")) == [".notes.tmp", ".state.pt.tmp"]
    assert (run_copy / ".notes.tmp").read_bytes() == SECRET


def test_export_over_a_users_own_export_files_is_refused(finished_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "export.json").write_text('{"format": "my own"}\n')
    (mine / "config.json").write_text('{"mine": 1}\n')
    before = fingerprint(mine)
    code, _, stderr = invoke("export", finished_run, "--out", mine)
    one_line_error(code, stderr, str(mine), "not an earlier vaekit export")
    assert fingerprint(mine) == before


def test_export_into_an_empty_folder_is_allowed(finished_run: Path, tmp_path: Path) -> None:
    """The rule is train's: a new or empty folder takes the files."""
    pytest.importorskip("onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, stderr = invoke("export", finished_run, "--out", empty)
    assert code == 0, stderr
    assert sorted(p.name for p in empty.iterdir()) == ["config.json", "decoder.onnx", "encoder.onnx", "export.json"]


# --- a path that cannot be a run folder: one line at once (item 5) ----------------------------------------------


@pytest.mark.parametrize("kind", ["file", "dangling symlink"])
def test_an_out_that_is_not_a_folder_is_one_line_at_once(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_bytes(SECRET)
    else:
        out.symlink_to(tmp_path / "nowhere")
    started = time.monotonic()
    with within(30):
        code, _, stderr = invoke("train", *ARGS, "--epochs", "1", "--out", out)
    one_line_error(code, stderr, str(out))
    assert time.monotonic() - started < 10
    assert not (tmp_path / "nowhere").exists()


# --- operating-system errors: one line naming the path and the errno; the run as it was (item 7) ----------------


def test_a_parent_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_bytes(SECRET)
    code, _, stderr = invoke("train", *ARGS, "--epochs", "1", "--out", tmp_path / "afile" / "run")
    one_line_error(code, stderr, "afile", "ENOTDIR")


@pytest.mark.parametrize(("call", "code_name"), [("write", "ENOSPC"), ("replace", "EACCES"), ("replace", "EROFS")])
def test_an_operating_system_error_while_writing_is_one_line_and_the_run_is_kept(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch, call: str, code_name: str
) -> None:
    before = fingerprint(run_copy)
    number = getattr(errno, code_name)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(os, call, fail)
    code, _, stderr = invoke("train", "--resume", "--epochs", "2", "--out", run_copy, "--quiet")
    monkeypatch.undo()
    one_line_error(code, stderr, str(run_copy), code_name)
    assert fingerprint(run_copy) == before


def test_a_tensorboard_file_in_the_run_is_one_line_before_anything_is_written(run_copy: Path) -> None:
    (run_copy / "tensorboard").write_bytes(SECRET)
    before = fingerprint(run_copy)
    code, _, stderr = invoke("train", "--resume", "--epochs", "2", "--out", run_copy, "--logger", "tensorboard")
    one_line_error(code, stderr, "tensorboard", "not a folder")
    assert fingerprint(run_copy) == before


# --- loggers are checked before anything is written (items 7 and 8) ---------------------------------------------


def test_an_unknown_mlflow_uri_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    code, _, stderr = invoke(
        "train", *ARGS, "--out", tmp_path / "run", "--logger", "mlflow", "--mlflow-uri", "weird://x"
    )
    one_line_error(code, stderr, "weird://x")
    assert not (tmp_path / "run").exists()


def test_an_unreachable_mlflow_server_is_one_line_within_seconds(tmp_path: Path) -> None:
    out = tmp_path / "run"
    started = time.monotonic()
    with within(30):
        code, _, stderr = invoke(
            "train", *ARGS, "--out", out, "--logger", "mlflow", "--mlflow-uri", "http://127.0.0.1:9"
        )
    one_line_error(code, stderr, "http://127.0.0.1:9", "not reachable")
    assert time.monotonic() - started < 15
    assert not out.exists()
