"""Packs: the same numbers as training from the source, one-line refusals of damaged packs, true per-epoch
permutations read batch by batch, and anonymous memory that does not grow with the data."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import invoke, one_line_error, tiny_config
from tests.test_data import write_images
from vaekit import DataConfig, TrainConfig, train
from vaekit.data.pack import IMAGES, LABELS, MANIFEST, IndexedImages, Rows, open_pack, write_pack
from vaekit.data.sources import load_dataset, pack_dataset, split_off
from vaekit.data.userdata import load_arrays
from vaekit.errors import VaekitError
from vaekit.training.callbacks import Callback, EpochEnd
from vaekit.training.epoch import batches


def metrics(config: TrainConfig, dataset: str | Path, out: Path) -> tuple[Any, Any]:
    """Every number a run records, less the wall-clock seconds."""
    config.data.dataset = str(dataset)
    run = train(config, out)
    return [{k: v for k, v in record.items() if "seconds" not in k} for record in run.history], run.final


def id_rows(count: int) -> Rows:
    """Images (1, 1, 2) whose two pixels spell their row number, so a batch says which rows it read."""
    ids = np.arange(count)
    pixels = np.stack([ids // 256, ids % 256], axis=1).astype(np.uint8).reshape(count, 1, 1, 2)
    return Rows(count, (1, 1, 2), lambda a, b: pixels[a:b], ids.astype(np.int64))


def row_ids(x: torch.Tensor) -> list[int]:
    flat = x.reshape(len(x), 2).long()
    return (flat[:, 0] * 256 + flat[:, 1]).tolist()


# --- the same numbers as from the source ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_packed_digits_run_matches_the_digits_run_exactly(tmp_path: Path) -> None:
    manifest = pack_dataset("digits", tmp_path / "pack")
    assert manifest["shape"] == [1797, 1, 8, 8] and manifest["splits"] == {"train": [0, 1500], "test": [1500, 1797]}
    config = tiny_config(epochs=1)
    config.data.val_size = 150
    assert metrics(config, "digits", tmp_path / "a") == metrics(config, tmp_path / "pack", tmp_path / "b")


def test_a_packed_image_folder_matches_the_folder_with_labels_and_the_same_carved_test_split(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs" / "cat", 30, size=(6, 5))
    write_images(tmp_path / "imgs" / "dog", 20, size=(6, 5))
    pack_dataset(str(tmp_path / "imgs"), tmp_path / "pack")
    source = load_dataset(DataConfig(dataset=str(tmp_path / "imgs"), val_size=5))
    packed = load_dataset(DataConfig(dataset=str(tmp_path / "pack"), val_size=5))
    assert isinstance(packed.train.x, IndexedImages) and not isinstance(packed.test.x, IndexedImages)
    for role in ("train", "val", "test"):
        a, b = getattr(source, role), getattr(packed, role)
        assert torch.equal(a.x, b.x[:]) and torch.equal(a.y, b.y), role
    config = tiny_config(epochs=1, batch_size=8)
    config.data.val_size = 5
    assert metrics(config, tmp_path / "imgs", tmp_path / "a") == metrics(config, tmp_path / "pack", tmp_path / "b")


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_a_packed_npz_with_its_own_test_split_matches_the_npz(tmp_path: Path, likelihood: str) -> None:
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "d.npz",
        x=rng.integers(0, 256, (80, 6, 6, 1), dtype=np.uint8),  # (N, H, W, C): transposed on the way in
        y=rng.integers(0, 3, 80),
        x_test=rng.integers(0, 256, (20, 6, 6, 1), dtype=np.uint8),
        y_test=rng.integers(0, 3, 20),
    )
    manifest = pack_dataset(str(tmp_path / "d.npz"), tmp_path / "pack")
    assert manifest["splits"] == {"train": [0, 80], "test": [80, 100]} and LABELS in manifest["files"]
    config = tiny_config(epochs=1, batch_size=16)
    config.model.likelihood = likelihood
    config.data.val_size = 8
    assert metrics(config, tmp_path / "d.npz", tmp_path / "a") == metrics(config, tmp_path / "pack", tmp_path / "b")


def test_a_packed_npy_is_read_in_chunks_and_matches_the_npy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vaekit.data.pack.CHUNK_BYTES", 100)  # 2 images of 7x7 a chunk: many chunks, a short last one
    images = np.random.default_rng(2).random((41, 7, 7)) > 0.5  # booleans become 0/255 pixels
    np.save(tmp_path / "d.npy", images)
    manifest = pack_dataset(str(tmp_path / "d.npy"), tmp_path / "pack")
    assert manifest["shape"] == [41, 1, 7, 7] and LABELS not in manifest["files"]
    np.testing.assert_array_equal(open_pack(tmp_path / "pack").images.numpy(), images[:, None].astype(np.uint8) * 255)
    config = tiny_config(epochs=1, batch_size=8)
    config.data.binarize = "dynamic"
    assert metrics(config, tmp_path / "d.npy", tmp_path / "a") == metrics(config, tmp_path / "pack", tmp_path / "b")


def test_an_npz_over_the_in_memory_cap_is_packed_from_its_zip_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    x, x_test = rng.integers(0, 256, (50, 5, 4, 3), dtype=np.uint8), rng.integers(0, 256, (9, 5, 4, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "d.npz", images=x, labels=np.arange(50), x_test=x_test)
    with pytest.raises(VaekitError, match=r"more than the 1\.0 kB available: .*`vaekit pack "):
        load_arrays(tmp_path / "d.npz", max_bytes=1000)
    monkeypatch.setenv("VAEKIT_MEMORY_LIMIT", "1000")  # under the 3,000 bytes of images: never read whole
    monkeypatch.setattr("vaekit.data.pack.CHUNK_BYTES", 130)  # 2 images a chunk
    manifest = pack_dataset(str(tmp_path / "d.npz"), tmp_path / "pack")
    assert manifest["shape"] == [59, 3, 5, 4] and LABELS not in manifest["files"]  # x_test brings no labels
    pack = open_pack(tmp_path / "pack")
    np.testing.assert_array_equal(pack.images.numpy(), np.concatenate([x, x_test]).transpose(0, 3, 1, 2))


def test_the_pack_command_writes_and_verifies(tmp_path: Path) -> None:
    code, stdout, stderr = invoke("pack", "digits", tmp_path / "pack")
    assert code == 0, stderr
    assert "wrote" in stdout and "[1797, 1, 8, 8]" in stdout and "train rows 0-1500" in stdout
    assert sorted(p.name for p in (tmp_path / "pack").iterdir()) == sorted([IMAGES, LABELS, MANIFEST])
    assert [p.name for p in tmp_path.iterdir()] == ["pack"]  # no partial folder left behind
    code, stdout, stderr = invoke("pack", "--verify", tmp_path / "pack")
    assert code == 0 and "every file matches its manifest" in stdout, stderr
    code, _, stderr = invoke("train", "--dataset", tmp_path / "pack", "--hidden", "16", "--latent-dim", "2", "--epochs",
                             "1", "--quiet", "--out", tmp_path / "run")  # fmt: skip
    assert code == 0, stderr


# --- damaged packs and refusals ---------------------------------------------------------------------------------


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    write_pack(tmp_path / "pack", {"train": id_rows(60), "test": id_rows(10)}, "ids")
    return tmp_path / "pack"


def test_a_truncated_images_file_is_one_line(packed: Path, tmp_path: Path) -> None:
    with (packed / IMAGES).open("r+b") as stream:
        stream.truncate(100)
    code, _, stderr = invoke("train", "--dataset", packed, "--out", tmp_path / "run")
    one_line_error(code, stderr, "images.u8 holds 100 bytes, its manifest says 140", "vaekit pack SOURCE")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda m: m.update(shape=[80, 1, 1, 2]), "does not describe 160 bytes for shape [80, 1, 1, 2]"),
        (lambda m: m.update(splits={"train": [0, 60], "test": [50, 70]}), "is not a row range [60, stop)"),
        (lambda m: m.update(splits={"train": [0, 50]}), "do not cover the 70 rows"),
        (lambda m: m.update(format_version=2), "format_version 2, this vaekit reads 1"),
        (lambda m: m.update(dtype="float32"), "a pack holds 1- or 3-channel uint8 images"),
        (lambda m: m["files"].pop(IMAGES), "are not images.u8"),
    ],
)
def test_a_tampered_manifest_is_one_line(packed: Path, tamper: Any, message: str) -> None:
    manifest = json.loads((packed / MANIFEST).read_text())
    tamper(manifest)
    (packed / MANIFEST).write_text(json.dumps(manifest))
    code, _, stderr = invoke("train", "--dataset", packed, "--out", packed.parent / "run")
    one_line_error(code, stderr, f"pack {packed}:", message, "write it again with `vaekit pack SOURCE")


def test_a_manifest_that_is_not_json_is_one_line(packed: Path) -> None:
    (packed / MANIFEST).write_text('{"format": "vaekit-pack", ')
    with pytest.raises(VaekitError, match=r"cannot read manifest.json \(Expecting"):
        load_dataset(DataConfig(dataset=str(packed)))


def test_changed_bytes_pass_the_size_check_but_not_verify(packed: Path) -> None:
    data = bytearray((packed / IMAGES).read_bytes())
    data[7] ^= 1
    (packed / IMAGES).write_bytes(bytes(data))
    load_dataset(DataConfig(dataset=str(packed)))  # a load checks sizes only: hashing every load would be too slow
    code, _, stderr = invoke("pack", "--verify", packed)
    one_line_error(code, stderr, "images.u8 does not match the SHA-256 in its manifest")


def test_a_pack_never_overwrites_and_a_half_written_one_is_never_taken_for_a_pack(packed: Path) -> None:
    code, _, stderr = invoke("pack", "digits", packed)
    one_line_error(code, stderr, "already exists: choose another folder")
    (packed / MANIFEST).unlink()
    with pytest.raises(VaekitError, match=r"holds images.u8 but no manifest.json, so it is not a whole pack"):
        load_dataset(DataConfig(dataset=str(packed)))


def test_an_interrupted_pack_leaves_nothing(tmp_path: Path) -> None:
    def failing(start: int, stop: int) -> np.ndarray:
        if start > 0:
            raise KeyboardInterrupt
        return np.zeros((stop - start, 1, 64, 64), np.uint8)

    with pytest.raises(KeyboardInterrupt):
        write_pack(tmp_path / "pack", {"train": Rows(10_000, (1, 64, 64), failing, None)}, "test")
    assert list(tmp_path.iterdir()) == []


def test_a_pack_that_would_not_fit_on_disk_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vaekit.data.pack.shutil.disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    code, _, stderr = invoke("pack", "digits", tmp_path / "pack")
    one_line_error(code, stderr, "the pack needs 0.1 MB", "0.0 MB free: free some space or write the pack elsewhere")
    assert list(tmp_path.iterdir()) == []


def test_a_pack_folder_gets_the_permissions_of_any_new_folder(tmp_path: Path, packed: Path) -> None:
    (tmp_path / "plain").mkdir()
    assert packed.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_float_images_and_static_binarization_are_refused_in_one_line(tmp_path: Path, packed: Path) -> None:
    np.save(tmp_path / "f.npy", np.full((8, 4, 4), 0.5, np.float32))
    code, _, stderr = invoke("pack", tmp_path / "f.npy", tmp_path / "out")
    one_line_error(code, stderr, "f.npy holds float32 values and a pack stores 8-bit pixels", "astype(np.uint8)")
    code, _, stderr = invoke("train", "--dataset", packed, "--binarize", "static", "--out", tmp_path / "run")
    one_line_error(code, stderr, "--binarize static", "use --binarize dynamic")


# --- reading a pack ---------------------------------------------------------------------------------------------


def test_every_epoch_is_a_fresh_permutation_of_the_training_rows(packed: Path) -> None:
    pack = open_pack(packed)
    train_x, _ = pack.part("train", lazy=True)
    rest, _ = split_off(load_dataset(DataConfig(dataset=str(packed), val_size=0)).train, 6, seed=3)
    assert isinstance(rest.x, IndexedImages) and len(rest.x) == 54
    generator = torch.Generator().manual_seed(0)
    orders = [torch.randperm(len(rest.x), generator=generator) for _ in range(3)]  # as the trainer draws each epoch's
    epochs = [[i for x in batches(rest.x, 16, order) for i in row_ids(x)] for order in orders]
    for order in epochs:
        assert sorted(order) == rest.x.rows.tolist()  # every training row once, no other row
    assert epochs[0] != epochs[1] != epochs[2]
    in_memory = rest.x.load()  # the same rows in memory: batched with the same generator, the same batches
    assert torch.equal(in_memory, train_x[rest.x.rows])
    replay = torch.Generator().manual_seed(0)
    replayed = batches(in_memory, 16, torch.randperm(len(in_memory), generator=replay))
    assert [row_ids(x) for x in replayed] == [epochs[0][i : i + 16] for i in range(0, 54, 16)]


def test_indexed_images_gather_lazily_and_read_whole_for_anything_else(packed: Path) -> None:
    x, _ = open_pack(packed).part("train", lazy=True)
    assert isinstance(x, IndexedImages) and "60 of 70 mapped rows" in repr(x)
    full = x.load()
    assert (len(x), x.shape, x.dtype, x.device) == (60, torch.Size([60, 1, 1, 2]), torch.uint8, torch.device("cpu"))
    assert isinstance(x.to("cpu"), IndexedImages) and isinstance(x.cpu(), IndexedImages)
    assert type(x.to(torch.float32)) is torch.Tensor and torch.equal(x.to("cpu", torch.float32), full.float())
    keys = (5, slice(3, 9), torch.tensor([4, 0, 59]), [1, 2], (slice(None, 4), 0, 0, 1), (torch.tensor(7), 0, 0))
    for key in keys:
        picked = x[key]
        assert type(picked) is torch.Tensor and torch.equal(picked, full[key]), key
    assert torch.equal(torch.index_select(x, 0, torch.tensor([2, 7])), full[[2, 7]])
    assert torch.equal(x.float(), full.float()) and torch.equal(torch.cat([x, x]), torch.cat([full, full]))
    assert x.contiguous().numpy().tobytes() == full.numpy().tobytes()


def rss_anon_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))


class AnonPeak(Callback):
    """Samples RssAnon every 5 ms from creation to the end of the first epoch (before the run's pictures import
    matplotlib); `growth` is the peak over the starting value, in kB."""

    def __init__(self) -> None:
        self.start, self.peak, self.done = rss_anon_kb(), 0, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_anon_kb())
            self.done.wait(0.005)

    def on_epoch_end(self, end: EpochEnd) -> None:
        self.done.set()
        self.thread.join()

    @property
    def growth(self) -> int:
        return max(self.peak, rss_anon_kb() if not self.done.is_set() else 0) - self.start


def epoch_growth_kb(dataset: Path, out: Path) -> int:
    """One epoch's anonymous-memory growth, measured in a fresh process: a process that has allocated and freed
    before keeps some of those pages resident, and a run there can reuse them and show no growth at all."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(growth_in_this_process, dataset, out).result()


def growth_in_this_process(dataset: Path, out: Path) -> int:
    config = tiny_config(epochs=1, batch_size=500)
    config.data.val_size = 0
    warm_up = out.with_name(f"{out.name}-warm-up.npy")  # the first allocations of this model, batch and image size
    np.save(warm_up, np.random.default_rng(0).integers(0, 256, (1000, 1, 28, 28), dtype=np.uint8))
    config.data.dataset = str(warm_up)
    train(config, warm_up.with_suffix(""))
    config.data.dataset = str(dataset)
    probe = AnonPeak()
    train(config, out, callbacks=[probe])
    return probe.growth


@pytest.mark.slow
def test_the_anonymous_memory_an_epoch_over_a_pack_takes_does_not_grow_with_the_data(tmp_path: Path) -> None:
    """A pack's pixels stay in the mapped file: an epoch over three times the images takes no more anonymous memory
    (only a fixed working set: the model, its batches, the allocator's arenas), where the same images as an
    in-memory .npy take more than their size."""
    shape = (1, 28, 28)

    def noise(start: int, stop: int) -> np.ndarray:
        return np.random.default_rng(start).integers(0, 256, (stop - start, *shape), dtype=np.uint8)

    growth = {}
    for count in (25_000, 75_000):  # 20 and 59 MB of pixels
        pack = tmp_path / f"pack-{count}"
        write_pack(pack, {"train": Rows(count, shape, noise, None), "test": Rows(200, shape, noise, None)}, "noise")
        growth[count] = epoch_growth_kb(pack, tmp_path / f"run-{count}")
    more_kb = 50_000 * 784 // 1024
    # The probe sees data that is read into memory: the larger pack's images as an in-memory .npy grow it by more.
    np.save(tmp_path / "d.npy", open_pack(tmp_path / "pack-75000").images.numpy()[:75_000])
    in_memory = epoch_growth_kb(tmp_path / "d.npy", tmp_path / "in-memory")
    print(f"anon growth in one epoch: packs {growth} kB, in memory {in_memory} kB, pixels {75_000 * 784 // 1024} kB")
    assert in_memory > 75_000 * 784 // 1024, in_memory
    assert growth[75_000] - growth[25_000] < more_kb / 4, (growth, more_kb)
