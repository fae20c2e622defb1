"""Memory scaling: anonymous resident memory (RssAnon) and time per sample while training one epoch from packs of
10k, 100k and 1M random 28×28 images, against the same images loaded into memory from an .npz (the baseline).

RssAnon counts the heap and other private memory, not the file-backed pages of a mapped pack (the page cache holds
those and can drop them), so it is what grows when data is read into memory. Each case runs in a fresh process, so no
case inherits another's heap; RssAnon is sampled every 50 ms from before the data is loaded to the end of the epoch.
The model is a tiny MLP (784-64-8), batch 128, no validation split; every pack holds 1,000 test images after the
training images, and the .npz baseline brings the same 1,000 as its x_test. µs/sample is the epoch's time per training
image; "of which batching" times the trainer's batching alone (one pass of `batches`), the only step a pack changes,
since the whole epoch's time on a shared machine varies more than that step costs.

    python benchmarks/memory_scaling.py [--sizes 10000 100000 1000000] [--baseline-max 100000] [--dir TMP]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (1, 28, 28)
TEST_IMAGES = 1000
SAMPLE_SECONDS = 0.05


def rss_anon_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


def noise(start: int, stop: int) -> np.ndarray:
    """Random pixels, seeded by the first row, so every chunk of a pack is reproducible."""
    return np.random.default_rng(start).integers(0, 256, (stop - start, *SHAPE), dtype=np.uint8)


def write_synthetic_pack(folder: Path, count: int) -> None:
    from vaekit.data.pack import Rows, write_pack

    test = Rows(TEST_IMAGES, SHAPE, lambda a, b: noise(10**9 + a, 10**9 + b), None)
    write_pack(folder, {"train": Rows(count, SHAPE, noise, None), "test": test}, f"synthetic {count}")


def write_baseline_npz(pack: Path, path: Path, count: int) -> None:
    from vaekit.data.pack import open_pack

    images = open_pack(pack).images.numpy()
    np.savez(path, x=images[:count], x_test=images[count:])


def run_case(dataset: str, out: str) -> dict[str, Any]:
    """Train one epoch in this process and report RssAnon (start, peak) and the epoch's time per training image."""
    from vaekit import DataConfig, ModelConfig, TrainConfig, train
    from vaekit.training.callbacks import Callback, EpochEnd

    class Probe(Callback):
        def __init__(self) -> None:
            self.start, self.peak, self.done, self.record = rss_anon_kb(), 0, threading.Event(), {}
            self.thread = threading.Thread(target=self.sample, daemon=True)
            self.thread.start()

        def sample(self) -> None:
            while not self.done.is_set():
                self.peak = max(self.peak, rss_anon_kb())
                self.done.wait(SAMPLE_SECONDS)

        def on_epoch_end(self, end: EpochEnd) -> None:  # stop before the run's pictures import matplotlib
            self.peak = max(self.peak, rss_anon_kb())
            self.done.set()
            self.record = end.record

    config = TrainConfig(
        model=ModelConfig(hidden=[64], latent_dim=8),
        data=DataConfig(dataset=dataset, val_size=0),
        epochs=1,
        batch_size=128,
    )
    probe = Probe()
    train(config, out, callbacks=[probe])
    return {"start_kb": probe.start, "peak_kb": probe.peak, "seconds": probe.record["seconds"], **batching(config)}


def batching(config: Any) -> dict[str, float]:
    """Seconds for one pass of the trainer's batching alone (after the measured window): the part a pack changes."""
    import torch

    from vaekit.data.sources import load_dataset
    from vaekit.training.epoch import batches

    x = load_dataset(config.data).train.x
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))  # the epoch's permutation
    started = time.perf_counter()
    for _ in batches(x, config.batch_size, order):
        pass
    return {"batching_seconds": time.perf_counter() - started}


def measure(dataset: Path, out: Path, count: int) -> dict[str, Any]:
    """One case in a fresh interpreter; µs per training image from the epoch's own clock."""
    command = [sys.executable, __file__, "--case", str(dataset), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"case {dataset} failed:\n{done.stderr}")
    found = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    found["us_per_sample"] = found["seconds"] / count * 1e6
    found["batching_us"] = found["batching_seconds"] / count * 1e6
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--baseline-max", type=int, default=100_000, help="largest size also run from memory")
    parser.add_argument("--dir", type=Path, default=None, help="where the packs go (default: a temporary folder)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.out)))
        return
    root = Path(tempfile.mkdtemp(prefix="vaekit-memory-", dir=args.dir))
    try:
        rows = []
        for count in sorted(args.sizes):
            need = (count + TEST_IMAGES) * 784 * (2 if count <= args.baseline_max else 1) * 1.1
            free = shutil.disk_usage(root).free
            if free < need:
                print(f"skipping {count:,}: needs {need / 1e9:.1f} GB of disk, {free / 1e9:.1f} GB free in {root}")
                continue
            pack = root / f"pack-{count}"
            write_synthetic_pack(pack, count)
            rows.append(("pack", count, measure(pack, root / f"run-pack-{count}", count)))
            if count <= args.baseline_max:
                npz = root / f"memory-{count}.npz"
                write_baseline_npz(pack, npz, count)
                rows.append(("memory", count, measure(npz, root / f"run-memory-{count}", count)))
                npz.unlink()
            shutil.rmtree(pack)
        print_table(rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def print_table(rows: list[tuple[str, int, dict[str, Any]]]) -> None:
    header = f"{'source':<8}{'images':>11}{'data MB':>9}{'RssAnon start MB':>18}{'peak MB':>9}{'growth MB':>11}"
    print(f"{header}{'µs/sample':>11}{'of which batching':>19}")
    for source, count, found in rows:
        start, peak = found["start_kb"] / 1024, found["peak_kb"] / 1024
        print(
            f"{source:<8}{count:>11,}{count * 784 / 2**20:>9.0f}{start:>18.1f}{peak:>9.1f}{peak - start:>11.1f}"
            f"{found['us_per_sample']:>11.1f}{found['batching_us']:>19.2f}"
        )
    packs = [(count, found) for source, count, found in rows if source == "pack"]
    if len(packs) >= 2:
        (low, small), (high, big) = packs[0], packs[-1]
        print(
            f"pack {high:,} / {low:,} images ({high / low:.0f}x the data): RssAnon peak "
            f"{big['peak_kb'] / small['peak_kb']:.2f}x, µs/sample {big['us_per_sample'] / small['us_per_sample']:.2f}x"
        )
    for count, found in packs:
        memory = next((f for s, c, f in rows if s == "memory" and c == count), None)
        if memory:
            print(
                f"{count:,} images, pack / memory: RssAnon peak {found['peak_kb'] / memory['peak_kb']:.2f}x, "
                f"µs/sample {found['us_per_sample'] / memory['us_per_sample']:.2f}x, "
                f"batching {found['batching_us'] / memory['batching_us']:.2f}x"
            )


if __name__ == "__main__":
    main()
