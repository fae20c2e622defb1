"""Malformed input of every kind vaekit reads ends in success or one line, never a traceback, a hang or a memory blowup.

Hypothesis draws cases (tests/fuzz/strategies.py): .npy headers and dtypes, .npz archives, images in every format
Pillow writes (PNG, JPEG, GIF, TIFF, EPS, …) in image folders and as single files, Parquet schemas and folders,
`datasets` save_to_disk folders and their state files, pack manifests and files, a run folder's config.json,
metrics.jsonl, metrics.json, state.pt (torch.save of odd dicts) and model.safetensors, and TOML --config files; each
also as a folder, a named pipe or a dangling link. Every case runs the readers of its kind (tests/fuzz/targets.py:
load_dataset, training one epoch, pack_dataset, open_pack, load_run, load_state, read_history, read_final,
`vaekit info`, a resume, the --config reader and `vaekit train --config`), and each step must end in success or a
`VaekitError` whose message is one line, as the CLI prints it with exit 2.

Bounds, enforced by the one worker process the cases run in (tests/fuzz/worker.py), not merely measured:
- time: 20 s per case (`worker.CASE_SECONDS`; the readers take milliseconds on these files), past which the case is
  a hang, reported with the stack of every thread;
- memory: 1 GiB of address space (`worker.MEMORY_BOUND`, RLIMIT_AS) above the worker's own after it has run every
  reader once; a larger allocation raises MemoryError, a fault like any other. Everything vaekit allocates from a
  file must be checked against the memory there is, and an address-space limit is part of that.

Two profiles, chosen by $VAEKIT_FUZZ: "ci" (the default, in `make test`) runs a fixed, derandomized set of examples
per property and fails at the first fault, shrunk to a minimal case; "soak" (`make fuzz`) runs $VAEKIT_FUZZ_EXAMPLES
(default 2000) random examples per property, keeps going past faults, and ends with the list of distinct faults (by
exception and the innermost vaekit frame), the smallest case of each written to $VAEKIT_FUZZ_OUT
(default runs/fuzz-failures) as files plus case.json.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies
from tests.fuzz.worker import Worker, materialize

SOAK = os.environ.get("VAEKIT_FUZZ", "ci") == "soak"
CI_EXAMPLES = 12
FUZZ = settings(
    max_examples=int(os.environ.get("VAEKIT_FUZZ_EXAMPLES", 2000)) if SOAK else CI_EXAMPLES,
    derandomize=not SOAK,
    deadline=None,  # the worker enforces the time bound, on the case alone
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
FAILURES_OUT = Path(os.environ.get("VAEKIT_FUZZ_OUT", "runs/fuzz-failures"))


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    process = Worker(strategies.warmup_cases)
    process.start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def faults() -> Iterator[dict[str, dict[str, Any]]]:
    """Soak only: the distinct faults found, by signature, each with its smallest case so far."""
    found: dict[str, dict[str, Any]] = {}
    yield found


def fault_of(reply: dict[str, Any]) -> tuple[str, str] | None:
    """(signature, description) of what went wrong in a case, or None when every step ended well."""
    if reply["outcome"] != "ok":
        return f"{reply['error']} at {reply['where']}", reply["trace"]
    for message, raised in reply["messages"]:
        lines = message.splitlines()
        if len(lines) != 1 or not message.strip() or "Traceback" in message:
            return f"VaekitError of {len(lines)} lines at {raised}", message
    return None


@functools.cache
def fault_type(signature: str) -> type[AssertionError]:
    """One exception type per signature, so that Hypothesis tells distinct faults apart and shrinks each."""
    return type(f"Fault[{signature}]", (AssertionError,), {})


def case_size(case: dict[str, Any]) -> int:
    return sum(len(entry) if isinstance(entry, bytes) else 1 for entry in case["files"].values()) + len(case["files"])


def check(worker: Worker, faults: dict[str, dict[str, Any]], name: str, case: dict[str, Any]) -> None:
    reply = worker.run(case)
    fault = fault_of(reply)
    if fault is None:
        return
    signature, description = fault
    if not SOAK:
        raise fault_type(signature)(f"{signature}\n{description}")
    known = faults.get(signature)
    if known is None or case_size(case) < case_size(known["case"]):
        faults[signature] = {"property": name, "case": case, "description": description}


def report(faults: dict[str, dict[str, Any]], name: str) -> None:
    """Soak: write the smallest case of each fault of property `name` and fail listing them."""
    mine = {signature: fault for signature, fault in faults.items() if fault["property"] == name}
    for number, (signature, fault) in enumerate(sorted(mine.items()), 1):
        folder = FAILURES_OUT / name / str(number)
        folder.mkdir(parents=True, exist_ok=True)
        case = fault["case"]
        writable = {path: entry for path, entry in case["files"].items() if not isinstance(entry, dict)}
        materialize(folder, writable)
        summary = {
            "signature": signature,
            "target": case["target"],
            "args": case["args"],
            "special_files": {path: entry for path, entry in case["files"].items() if isinstance(entry, dict)},
            "description": fault["description"],
        }
        (folder / "case.json").write_text(json.dumps(summary, indent=2, default=str))
    assert not mine, f"{len(mine)} distinct faults, cases in {FAILURES_OUT / name}:\n" + "\n".join(sorted(mine))


def fuzz(name: str, cases: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A test that runs `cases` through the worker (and, in the soak, reports every fault at its end)."""

    @FUZZ
    @given(case=cases)
    def run(worker: Worker, faults: dict[str, dict[str, Any]], case: dict[str, Any]) -> None:
        check(worker, faults, name, case)

    def test(worker: Worker, faults: dict[str, dict[str, Any]]) -> None:
        run(worker, faults)
        if SOAK:
            report(faults, name)

    test.__name__ = f"test_{name}_is_read_or_refused_in_one_line"
    return test


test_npy_npz = fuzz("arrays", strategies.array_cases())
test_image_folders = fuzz("image_folders", strategies.image_folder_cases())
test_image_files = fuzz("image_files", strategies.image_file_cases())
test_parquet = fuzz("parquet", strategies.parquet_cases())
test_datasets_folders = fuzz("datasets_folders", strategies.datasets_cases())
test_packs = fuzz("packs", strategies.pack_cases())
test_config_json = fuzz("config_json", strategies.run_cases("config.json"))
test_metrics_jsonl = fuzz("metrics_jsonl", strategies.run_cases("metrics.jsonl"))
test_metrics_json = fuzz("metrics_json", strategies.run_cases("metrics.json"))
test_state_pt = fuzz("state_pt", strategies.run_cases("state.pt"))
test_safetensors = fuzz("safetensors", strategies.run_cases("model.safetensors"))
test_toml = fuzz("toml", strategies.toml_cases())
