"""Memory is checked before it is allocated: a small file or a large flag that would ask for more than the machine has
is one line naming the amount and the fix. The memory available is set with $VAEKIT_MEMORY_LIMIT, so nothing here
allocates much."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import invoke, one_line_error, tiny_config
from vaekit.analysis.evaluate import evaluate
from vaekit.config import DataConfig, TrainConfig
from vaekit.data.pack import FORMAT, FORMAT_VERSION, IMAGES, MANIFEST, open_pack
from vaekit.data.sources import class_count, load_dataset
from vaekit.errors import VaekitError
from vaekit.memory import LIMIT_ENV, available
from vaekit.model.vae import VAE
from vaekit.training.loop import train
from vaekit.training.runs import load_run


def test_the_memory_available_comes_from_the_system_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    assert 0 < available() < 1 << 50
    monkeypatch.setenv(LIMIT_ENV, "1.5G")
    assert available() == 1_500_000_000
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(VaekitError, match="is not an amount of memory"):
        available()


def test_a_fresh_model_too_big_for_memory_is_refused_before_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIMIT_ENV, "20M")  # the 2048x2048 layers' weights, gradients and moments need 140 MB
    code, _, stderr = invoke(
        "train", "--dataset", "digits", "--hidden", "2048,2048", "--epochs", "1", "--out", tmp_path / "run"
    )
    one_line_error(
        code, stderr, "8,781,928 parameters needs 140.5 MB of memory, more than the 20.0 MB available", "--hidden"
    )
    assert not (tmp_path / "run" / "config.json").exists()


def test_resume_compares_shapes_on_the_meta_device_before_building_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(tiny_config(epochs=1), tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"]["hidden"], config["epochs"] = [65536, 65536], 2  # in bounds, and 17 GB of weights
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    before = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()}

    def never(*_: object) -> None:
        raise AssertionError("the model was built before its shapes were checked")

    monkeypatch.setattr("vaekit.training.loop.build_model", never)
    code, _, stderr = invoke("train", "--resume", "--out", tmp_path / "run")
    one_line_error(code, stderr, "state.pt does not match", "has shape [32, 64], the config builds [65536, 64]")
    after = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()}
    assert after == before  # so that the next --resume meets the same run


def test_a_zip_bomb_npz_is_refused_from_its_headers_and_names_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros((200, 100, 100), np.uint8))  # 2 MB of pixels in 3 kB
    assert (tmp_path / "bomb.npz").stat().st_size < 10_000
    monkeypatch.setenv(LIMIT_ENV, "1M")
    code, _, stderr = invoke("train", "--dataset", tmp_path / "bomb.npz", "--epochs", "1", "--out", tmp_path / "run")
    one_line_error(code, stderr, "needs 2.0 MB of memory, more than the 1.0 MB available", "`vaekit pack ")
    assert not (tmp_path / "run" / "config.json").exists()


def test_arrays_are_counted_as_they_will_be_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """640 kB of float64 on disk is held with its float32 copy and a finiteness mask: 1.0 MB."""
    np.save(tmp_path / "x.npy", np.zeros((200, 20, 20)))
    monkeypatch.setenv(LIMIT_ENV, "1000k")
    with pytest.raises(VaekitError, match=r"x.npy \(200, 20, 20\) float64 needs 1.0 MB of memory"):
        load_dataset(DataConfig(dataset=str(tmp_path / "x.npy")))


def test_a_parquet_of_png_bombs_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    buffer = io.BytesIO()
    Image.new("L", (1024, 1024)).save(buffer, format="PNG")  # 1 MB of pixels in about 1 kB
    pq.write_table(pa.table({"image": [buffer.getvalue()] * 6}), tmp_path / "bombs.parquet")
    monkeypatch.setenv(LIMIT_ENV, "3M")
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self))
    with pytest.raises(VaekitError, match=r"6 images of 1024x1024x1, uint8\) needs 6.3 MB of memory.*`vaekit pack "):
        load_dataset(DataConfig(dataset=str(tmp_path / "bombs.parquet")))
    assert not decoded


def test_rows_read_from_a_sparse_pack_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack whose images file is sparse holds gigabytes in no disk space; its test split is read into memory."""
    pack, shape = tmp_path / "pack", [50, 1, 4096, 4096]  # 839 MB, none of it on disk
    pack.mkdir()
    with (pack / IMAGES).open("wb") as stream:
        stream.truncate(int(np.prod(shape)))
    files = {IMAGES: {"bytes": int(np.prod(shape)), "sha256": "0" * 64}}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "shape": shape, "dtype": "uint8"}
    (pack / MANIFEST).write_text(json.dumps({**manifest, "splits": {"train": [0, 50]}, "files": files}))
    monkeypatch.setenv(LIMIT_ENV, "50M")
    with pytest.raises(VaekitError, match=r"reading 5 images of 4096x4096x1 from a pack needs 83.9 MB of memory"):
        load_dataset(DataConfig(dataset=str(pack)))


def test_labels_beyond_the_class_limit_are_refused_at_load(tmp_path: Path) -> None:
    """One label of 65535 would make every picture of a conditional run draw 65,536 classes of one-hot codes."""
    y = np.array([0, 1, 2, 65535, 1, 0, 2, 1, 0, 1, 2, 0])
    np.savez(tmp_path / "d.npz", x=np.zeros((12, 4, 4), np.uint8), y=y)
    data = load_dataset(DataConfig(dataset=str(tmp_path / "d.npz")))
    with pytest.raises(VaekitError, match=r"labels up to 65535, and --condition label takes at most 1000 classes"):
        class_count(data)
    config = TrainConfig.from_dict({"model": {"condition": "label", "classes": 5000}})
    with pytest.raises(VaekitError, match="classes must be between 0 and 1000"):
        config.validate()


def test_many_samples_per_image_are_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    np.save(tmp_path / "x.npy", np.zeros((16, 8, 8), np.uint8))
    monkeypatch.setenv(LIMIT_ENV, "50M")
    args = "--batch-size", "8", "--samples", "4096", "--hidden", "32", "--epochs", "1", "--out", tmp_path / "run"
    code, _, stderr = invoke("train", "--dataset", tmp_path / "x.npy", *args)
    one_line_error(
        code, stderr, "with --batch-size 8 and 4096 samples per image needs", "lower --batch-size, --samples"
    )
    assert not (tmp_path / "run" / "config.json").exists()


def test_prior_samples_are_checked_before_evaluating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train(tiny_config(epochs=1), tmp_path / "run")

    def never(*_: object) -> None:
        raise AssertionError("the evaluation started before its samples were checked")

    monkeypatch.setattr("vaekit.analysis.evaluate.load_dataset", never)
    monkeypatch.setenv(LIMIT_ENV, "1M")
    code, _, stderr = invoke("evaluate", tmp_path / "run", "--prior-samples", "1000000000", "--device", "cpu")
    one_line_error(code, stderr, "decoding 1,000,000,000 samples of 1x8x8 images needs", "lower --prior-samples")
    with pytest.raises(VaekitError, match="decoding 100,000 samples"):
        evaluate(load_run(tmp_path / "run"), prior_samples=100_000)


def test_sampling_and_loading_weights_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = VAE(tiny_config().validate().model)
    train(tiny_config(epochs=1), tmp_path / "run")
    monkeypatch.setenv(LIMIT_ENV, "100k")
    with pytest.raises(VaekitError, match=r"decoding 4,096 samples of 1x28x28 images needs .*ask for fewer samples"):
        model.sample(4096)
    monkeypatch.setenv(LIMIT_ENV, "1k")
    with pytest.raises(VaekitError, match=r"the weights of .*model.safetensors needs 1\d.\d kB of memory"):
        load_run(tmp_path / "run")


def test_data_larger_than_memory_still_trains_through_a_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal names `vaekit pack`, and the pack it makes trains within the same memory."""
    rng = np.random.default_rng(0)
    x, x_test = rng.integers(0, 256, (2600, 16, 16), dtype=np.uint8), rng.integers(0, 256, (50, 16, 16), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x, x_test=x_test)  # 678 kB of pixels; training needs 614 kB
    monkeypatch.setenv(LIMIT_ENV, "650k")
    model = "--hidden", "16", "--latent-dim", "2", "--batch-size", "32", "--val-size", "50", "--epochs", "1"
    code, _, stderr = invoke("train", "--dataset", tmp_path / "x.npz", *model, "--out", tmp_path / "run")
    one_line_error(code, stderr, "needs 678.4 kB of memory, more than the 650.0 kB available", "`vaekit pack ")
    assert invoke("pack", tmp_path / "x.npz", tmp_path / "pack")[0] == 0
    code, _, stderr = invoke("train", "--dataset", tmp_path / "pack", *model, "--out", tmp_path / "run")
    assert code == 0 and (tmp_path / "run" / "model.safetensors").exists(), stderr


def test_a_pack_bigger_than_memory_and_swap_opens(tmp_path: Path) -> None:
    """A private mapping reserves memory for a copy of every page unless told not to, and a terabyte pack (sparse
    here, so it takes no disk) would be refused by the kernel: packs exist for data bigger than memory."""
    pack, shape = tmp_path / "pack", [65536, 1, 4096, 4096]  # 1.1 TB
    pack.mkdir()
    with (pack / IMAGES).open("wb") as stream:
        stream.truncate(int(np.prod(shape)))
    files = {IMAGES: {"bytes": int(np.prod(shape)), "sha256": "0" * 64}}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "shape": shape, "dtype": "uint8"}
    (pack / MANIFEST).write_text(json.dumps({**manifest, "splits": {"train": [0, 65536]}, "files": files}))
    opened = open_pack(pack)
    x, _ = opened.part("train", lazy=True)
    assert x.shape == (65536, 1, 4096, 4096) and int(x[[65535]].sum()) == 0
