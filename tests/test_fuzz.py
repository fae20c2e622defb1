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
- time: 10 s per case (`worker.CASE_SECONDS`; the readers take milliseconds on these files and training one epoch
  under a second), past which the case is a hang, reported with the stack of every thread;
- memory: 1 GiB of address space (`worker.MEMORY_BOUND`, RLIMIT_AS) above the worker's own after it has run every
  reader once; a larger allocation raises MemoryError, a fault like any other. Everything vaekit allocates from a
  file must be checked against the memory there is, and an address-space limit is part of that.

Two Hypothesis settings profiles, chosen by $VAEKIT_FUZZ: "vaekit-fuzz-ci" (the default, in `make test`) runs a
fixed, seeded set of `CI_EXAMPLES` cases per property, about 200 in all in well under a minute; "vaekit-fuzz-soak"
(`VAEKIT_FUZZ=soak`, `make fuzz`) runs $VAEKIT_FUZZ_EXAMPLES (default 500) random cases per property. Both run every
case and then fail with the distinct faults (by exception and the innermost vaekit frame) and the smallest case of
each; the soak also writes those cases to $VAEKIT_FUZZ_OUT (default runs/fuzz-failures) as files plus case.json. The
number of cases run is printed at the end of the session. Hypothesis's own shrinking is off: a fault that hangs costs
a worker's restart on every shrinking step, and the smallest case of each fault is kept instead.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.fuzz import strategies
from tests.fuzz.worker import Worker, materialize

pytestmark = pytest.mark.slow  # a worker process and 192 cases: `make test` runs them, the unit tier does not

PROFILE = "vaekit-fuzz-" + os.environ.get("VAEKIT_FUZZ", "ci")
SOAK = PROFILE == "vaekit-fuzz-soak"
CI_EXAMPLES = 16
COMMON: dict[str, Any] = {
    "deadline": None,  # the worker enforces the time bound, on the case alone
    "database": None,
    "phases": [Phase.explicit, Phase.generate],
    "suppress_health_check": list(HealthCheck),
}
settings.register_profile("vaekit-fuzz-ci", max_examples=CI_EXAMPLES, **COMMON)  # seeded per property: see fuzz()
settings.register_profile("vaekit-fuzz-soak", max_examples=int(os.environ.get("VAEKIT_FUZZ_EXAMPLES", 500)), **COMMON)
FAILURES_OUT = Path(os.environ.get("VAEKIT_FUZZ_OUT", "runs/fuzz-failures"))


@pytest.fixture(scope="module")
def worker(request: pytest.FixtureRequest) -> Iterator[Worker]:
    process = Worker(strategies.warmup_cases)
    start = time.perf_counter()
    process.start()
    yield process
    process.close()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # on the terminal, not in a captured section
            reporter.write_line(
                f"\nfuzz ({PROFILE}): {process.cases} cases in {time.perf_counter() - start:.0f} s "
                f"({process.case_seconds:.0f} s in the cases themselves), {process.restarts} worker restarts"
            )


def fault_of(reply: dict[str, Any]) -> tuple[str, str] | None:
    """(signature, description) of what went wrong in a case, or None when every step ended well."""
    if reply["outcome"] != "ok":
        return f"{reply['error']} at {reply['where']}", reply["trace"]
    for message, raised in reply["messages"]:
        lines = message.splitlines()
        if len(lines) != 1 or not message.strip() or "Traceback" in message:
            return f"VaekitError of {len(lines)} lines at {raised}", repr(message)
    return None


def case_size(case: dict[str, Any]) -> int:
    return sum(len(entry) if isinstance(entry, bytes) else 1 for entry in case["files"].values()) + len(case["files"])


def shown(case: dict[str, Any]) -> str:
    """A case in a few lines: its target and arguments, and each file it changed as its size and first bytes."""

    def entry(value: Any) -> str:
        if isinstance(value, bytes):
            return f"{len(value)} bytes {value[:60]!r}{'…' if len(value) > 60 else ''}"
        return "a folder" if value is None else repr(value)

    paths = case.get("changed", sorted(case["files"]))
    files = "".join(f"\n    {path}: {entry(case['files'][path])}" for path in paths)
    return f"target {case['target']} {case['args']}{files}"


def save(folder: Path, signature: str, fault: dict[str, Any]) -> None:
    """Soak: a fault's smallest case as files in `folder`, with case.json saying how it was run."""
    folder.mkdir(parents=True, exist_ok=True)
    case = fault["case"]
    materialize(folder, {path: entry for path, entry in case["files"].items() if not isinstance(entry, dict)})
    summary = {
        "signature": signature,
        "target": case["target"],
        "args": case["args"],
        "special_files": {path: entry for path, entry in case["files"].items() if isinstance(entry, dict)},
        "description": fault["description"],
    }
    (folder / "case.json").write_text(json.dumps(summary, indent=2, default=str))


def fuzz(name: str, cases: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A test that runs every case of `cases` through the worker, then fails listing each distinct fault once."""

    def test(worker: Worker) -> None:
        faults: dict[str, dict[str, Any]] = {}

        @settings.get_profile(PROFILE)
        @given(case=cases)
        def run(case: dict[str, Any]) -> None:
            fault = fault_of(worker.run(case))
            if fault is None:
                return
            signature, description = fault
            known = faults.get(signature)
            if known is None or case_size(case) < case_size(known["case"]):
                faults[signature] = {"case": case, "description": description}

        # make test: the same cases every time, different for each property (derandomize would seed every property
        # alike, from the one function `run` they share); the soak: new cases each time.
        (run if SOAK else seed(zlib.crc32(name.encode()))(run))()
        if SOAK:
            for number, signature in enumerate(sorted(faults), 1):
                save(FAILURES_OUT / name / str(number), signature, faults[signature])
        if faults:
            pytest.fail(
                f"{len(faults)} distinct faults:\n"
                + "\n\n".join(
                    f"{signature}\n  smallest case: {shown(fault['case'])}\n{fault['description'][-3000:]}"
                    for signature, fault in sorted(faults.items())
                ),
                pytrace=False,
            )

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
