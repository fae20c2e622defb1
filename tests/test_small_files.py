"""The small files vaekit is handed (a --config, a run's JSON, a pack's manifest) are read as regular files up to a
bound, and every error a user sees is one printable line, whatever text it quotes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit.data.pack import read_manifest
from vaekit.errors import VaekitError
from vaekit.small_files import read_json, read_small
from vaekit.training.runs import read_config


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_config_that_is_not_a_regular_file_is_one_line_at_once(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "settings.toml"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would wait for a writer that never comes
    elif kind == "device":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.mkdir()
    code, _, stderr = invoke("train", "--dataset", "digits", "--config", path, "--out", tmp_path / "run")
    one_line_error(code, stderr, "config file", "settings.toml", "give --config a TOML file")
    assert not (tmp_path / "run").exists()


def test_a_pack_manifest_nested_past_the_recursion_limit_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[" * 200_000)
    with pytest.raises(VaekitError, match=r"manifest\.json"):
        read_manifest(tmp_path)


def test_a_manifest_that_is_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "manifest.json")
    with pytest.raises(VaekitError, match="a FIFO, not a regular file"):
        read_manifest(tmp_path)


def test_reads_stop_at_their_bound(tmp_path: Path) -> None:
    (tmp_path / "big.json").write_bytes(b" " * 101)
    with pytest.raises(ValueError, match="over 100 bytes"):
        read_small(tmp_path / "big.json", 100)
    assert read_small(tmp_path / "big.json", 101) == b" " * 101
    with pytest.raises(VaekitError, match=r"big.json is over 100 bytes: fix it"):
        read_json(tmp_path / "big.json", "fix it", limit=100)


def test_an_error_quoting_line_breaks_and_control_characters_is_one_printable_line() -> None:
    quoted = "Couldn't deserialize thrift: Invalid data\n"  # pyarrow's own message ends in a newline
    error = VaekitError(f"cannot read d.parquet ({quoted}): write the file again")
    assert str(error) == "cannot read d.parquet (Couldn't deserialize thrift: Invalid data ): write the file again"
    key = "@{\x8b\r\x1c\x85"  # a key from a hand-edited config.json, echoed in the message
    line = str(VaekitError(f"unknown setting(s) {key}: remove them"))
    assert line == "unknown setting(s) @{\\x8b : remove them", repr(line)


def test_a_run_config_with_a_control_character_key_is_one_line(tmp_path: Path) -> None:
    config = tiny_config().to_dict()
    config["bad\rkey\x1c"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VaekitError) as refused:
        read_config(tmp_path)
    assert "unknown" in str(refused.value) and len(str(refused.value).splitlines()) == 1, repr(str(refused.value))
