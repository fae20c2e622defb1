"""The `vaekit` command: each subcommand, TOML config with flags winning, and one test per kind of bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image

from tests.conftest import invoke
from tests.test_data import write_images
from vaekit.cli.main import app
from vaekit.config import DataConfig, ModelConfig, TrainConfig

TINY = ["--dataset", "digits", "--hidden", "32", "--latent-dim", "4", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    code, stdout, stderr = invoke("train", *TINY, "--epochs", "2", "--out", out)
    assert code == 0, stderr
    assert "test ELBO" in stdout and str(out) in stdout
    return out


def fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def assert_clean_error(code: int, stderr: str, *fragments: str) -> None:
    """Exit 2, one line, no traceback, and the line says what to do."""
    assert code == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:") and "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", ["train", "sample", "reconstruct", "latent interpolate", "info"])
def test_every_command_has_help(command: str) -> None:
    code, stdout, _ = invoke(*command.split(), "--help")
    assert code == 0 and "Usage" in stdout


@pytest.mark.slow
def test_help_shows_no_value_type_beside_a_flag() -> None:
    """A flag takes no value, so its help line has no `<bool>` (--straight-through, --compile, --resume, --help)."""
    for command in ["", "latent", *commands()]:
        code, stdout, _ = invoke(*command.split(), "--help")
        assert code == 0 and "--help" in stdout and "<bool>" not in stdout, f"vaekit {command} --help:\n{stdout}"
    stdout = invoke("train", "--help", env={"COLUMNS": "200"}).stdout
    assert "--straight-through" in stdout and "--compile" in stdout and "<int>" in stdout  # values keep their type


@pytest.mark.slow
def test_help_shows_the_defaults_written_in_it() -> None:
    """Defaults written into a help text ("[default: 20]") are shown, not taken for rich markup and dropped."""
    for command, flag, default in [
        ("train", "--latent-dim", "[default: 20]"),
        ("train", "--gaussian-scale", "[default: 0.1]"),
        ("train", "--out", "[default: runs/latest]"),
        ("sample", "--components", "[default: 10]"),
    ]:
        stdout = invoke(command, "--help", env={"COLUMNS": "200"}).stdout
        lines = [line for line in stdout.splitlines() if line.lstrip("│ ").startswith(flag + " ")]
        assert len(lines) == 1 and default in lines[0], (command, flag, stdout)


def test_one_interpolate_command_with_every_capability() -> None:
    """`vaekit latent interpolate` is the one path command; the top level has none beside it."""
    assert "interpolate" not in commands() and "latent interpolate" in commands()
    assert {"a", "b", "steps", "extend", "method", "through", "gif", "out", "device"} <= flag_names(
        commands()["latent interpolate"]
    )


def commands() -> dict[str, Any]:
    """Every command of `vaekit` (typer's click objects), by its full name ("train", "latent interpolate")."""
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[prefix + name] = command

    walk(typer.main.get_command(app), "")
    return found


def flag_names(command: Any) -> set[str]:
    """The command's options by flag name, underscores for dashes (`--latent-dim` → latent_dim)."""
    return {p.opts[0].removeprefix("--").replace("-", "_") for p in command.params if p.param_type_name == "option"}


def option(command: Any, flag: str) -> Any:
    return next((p for p in command.params if p.param_type_name == "option" and flag in p.opts), None)


def test_samples_means_z_samples_per_image_in_every_command() -> None:
    """One name, one meaning: --samples counts z draws per image; draws from the prior are --prior-samples."""
    having = {name: option(command, "--samples") for name, command in commands().items()}
    having = {name: found for name, found in having.items() if found is not None}
    assert {"train", "gradients"} <= set(having)
    for name, found in having.items():
        assert "z samples per image" in (found.help or ""), name
    for name in ("evaluate", "why"):
        prior = option(commands()[name], "--prior-samples")
        assert prior is not None and "prior" in (prior.help or ""), name


@pytest.mark.slow
def test_sample_reconstruct_interpolate_write_pngs(trained: Path, tmp_path: Path) -> None:
    for args, name in [
        (("sample", trained, "--n", "9", "--seed", "3"), "s.png"),
        (("reconstruct", trained, "--n", "4"), "r.png"),
        (("latent", "interpolate", trained, "--a", "0", "--b", "5", "--steps", "7", "--extend", "0.25"), "i.png"),
    ]:
        code, _, stderr = invoke(*args, "--out", tmp_path / name)
        assert code == 0, stderr
        assert Image.open(tmp_path / name).size[0] > 0
    with Image.open(tmp_path / "i.png") as picture:  # 7 path points + the two inputs, 56 px tiles
        assert picture.width == (7 + 2) * (8 + 2) * 7 + 2 * 7


@pytest.mark.slow
def test_every_command_writes_into_the_run_folder(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    training_pictures = {name: (run / name).read_bytes() for name in ("samples.png", "reconstructions.png")}
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for args, written in [
        (["sample", run, "--n", "4"], "sample.png"),
        (["reconstruct", run, "--n", "2"], "reconstruct.png"),
        (["latent", "interpolate", run, "--steps", "3"], "latent/interpolate.png"),
        (["latent", "interpolate", run, "--steps", "3", "--gif"], "latent/interpolate.gif"),
        (["latent", "traverse", run, "--dims", "2", "--steps", "3"], "latent/traverse.png"),
        (["latent", "manifold", run, "--n", "3"], "latent/manifold.png"),
        (["latent", "embed", run, "--n", "20"], "latent/embed.png"),
        (["latent", "arithmetic", run, "--n", "2"], "latent/arithmetic.png"),
    ]:
        code, _, stderr = invoke(*args)
        assert code == 0, stderr
        assert (run / written).stat().st_size > 0, args
    assert list((tmp_path / "cwd").iterdir()) == []
    assert {name: (run / name).read_bytes() for name in training_pictures} == training_pictures


@pytest.mark.slow
def test_sample_is_reproducible_by_seed(trained: Path, tmp_path: Path) -> None:
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        invoke("sample", trained, "--seed", seed, "--out", tmp_path / f"{name}.png")
    read = {n: (tmp_path / f"{n}.png").read_bytes() for n in "abc"}
    assert read["a"] == read["b"] != read["c"]


def test_info_reports_config_and_metrics(trained: Path) -> None:
    code, stdout, _ = invoke("info", trained, "--json")
    summary = json.loads(stdout)
    assert code == 0 and summary["epochs_done"] == 2 and summary["finished"]
    assert summary["config"]["model"]["latent_dim"] == 4
    code, stdout, _ = invoke("info", trained)
    assert code == 0 and "digits" in stdout and "−ELBO" in stdout


@pytest.mark.slow
def test_toml_config_with_flags_winning(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('dataset = "digits"\nepochs = 1\nlatent-dim = 3\nhidden = [16]\nbeta = 0.5\n')
    code, _, stderr = invoke(
        "train", "--config", tmp_path / "c.toml", "--latent-dim", "5", "--quiet", "--out", tmp_path / "r"
    )
    assert code == 0, stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["model"]["latent_dim"] == 5  # the flag won
    assert saved["beta"] == 0.5 and saved["epochs"] == 1 and saved["model"]["hidden"] == [16]  # the file's values


# A value for every setting flag of `vaekit train`, valid together, mostly not the default.
TRAIN_VALUES: dict[str, object] = {
    "dataset": "digits", "data_dir": "data", "binarize": "static", "val_size": 100, "split_seed": 2, "epochs": 3,
    "batch_size": 32, "lr": 0.002, "beta": 0.5, "warmup": 2.0, "seed": 3, "device": "cpu", "estimator": "reparam",
    "samples": 2, "checkpoint_every": 5.0, "objective": "elbo", "k": 3, "free_bits": 0.0, "precision": "bf16",
    "average_decay": 0.5, "compile": True, "model": "vae", "network": "mlp", "hidden": [16, 8], "latent_dim": 6,
    "likelihood": "gaussian-learned", "gaussian_scale": 0.2, "mixtures": 4, "latent": "gaussian", "categories": 5,
    "latent_vars": 4, "temperature": 0.9, "temperature_min": 0.4, "anneal_rate": 0.001, "straight_through": True,
    "activation": "tanh", "prior": "standard", "prior_components": 7, "second_layer": [12, 4], "condition": "none",
    "image_column": "photo", "label_column": "class", "select": "best", "patience": 4,
}  # fmt: skip
NOT_SETTINGS = {"out", "config", "resume", "quiet", "help", "logger", "mlflow_uri"}  # steer the command, not the model


def captured(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> tuple[TrainConfig, Path]:
    """The TrainConfig and run folder that `vaekit train ARGS` hands to training, without training."""
    seen: dict[str, Any] = {}

    def fake_train(config: TrainConfig, out: Path, **_: object) -> SimpleNamespace:
        seen.update(config=config, out=Path(out))
        return SimpleNamespace(final=None)  # what a rank other than 0 returns: the command prints nothing

    monkeypatch.setattr("vaekit.api.train", fake_train)
    code, _, stderr = invoke("train", *args)
    assert code == 0, stderr
    return seen["config"], seen["out"]


def part_setting_values() -> dict[str, object]:
    """A value away from its default for each setting a part declares in its own module (`Part.settings`)."""
    from vaekit.config import OPTIONS, settings

    moved = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v + 0.5}
    declared = [spec for spec in settings().values() if spec.section == OPTIONS and spec.name not in TRAIN_VALUES]
    return {spec.flag: moved[type(spec.default)](spec.default) for spec in declared}


def toml_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


@pytest.mark.slow
def test_a_toml_file_of_every_flag_gives_what_the_flags_give(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    flags = flag_names(commands()["train"]) - NOT_SETTINGS
    chosen = {**TRAIN_VALUES, **part_setting_values()}
    assert flags <= set(chosen), f"give TRAIN_VALUES a value for {flags - set(chosen)}"
    values = {name: value for name, value in chosen.items() if name in flags}
    args: list[str] = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        args += [flag] if value is True else [flag, text]
    keys = [name.replace("_", "-") if i % 2 else name for i, name in enumerate(values)]  # dashes or underscores
    lines = [f"{key} = {toml_value(value)}\n" for key, value in zip(keys, values.values(), strict=True)]
    (tmp_path / "all.toml").write_text("".join(lines))
    from_flags, _ = captured(monkeypatch, *args, "--out", tmp_path / "r")
    from_file, _ = captured(monkeypatch, "--config", tmp_path / "all.toml", "--out", tmp_path / "r")
    assert from_file == from_flags
    assert from_file.warmup_epochs == 2.0 and from_file.model.hidden == [16, 8] and from_file.data.val_size == 100
    (tmp_path / "ae.toml").write_text('model = "ae"\nwarmup = 2\n')
    config, _ = captured(monkeypatch, "--config", tmp_path / "ae.toml", "--out", tmp_path / "r")
    assert (config.model.kind, config.warmup_epochs) == ("ae", 2.0)


def test_every_setting_a_user_may_choose_has_a_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    internal = {"input_shape", "classes", "world_size"}  # filled in from the data and the launch, not chosen
    internal.add("options")  # the parts' own settings, whose flags test_a_toml_file_of_every_flag_… covers
    renamed = {"kind": "model", "warmup_epochs": "warmup"}
    fields = [
        f.name
        for kind in (TrainConfig, ModelConfig, DataConfig)
        for f in dataclasses.fields(kind)
        if f.name not in ("model", "data") and f.name not in internal
    ]
    missing = {renamed.get(name, name) for name in fields} - flag_names(commands()["train"])
    assert not missing, f"settings without a flag: {sorted(missing)}"
    new = ["--gaussian-scale", "0.3", "--temperature-min", "0.25", "--anneal-rate", "0.002", "--split-seed", "7"]
    config, _ = captured(monkeypatch, "--dataset", "digits", *new, "--out", tmp_path / "r")
    options = config.model.options
    assert (options["gaussian_scale"], options["temperature_min"], options["anneal_rate"]) == (0.3, 0.25, 0.002)
    assert config.data.split_seed == 7


def test_out_on_the_command_line_wins_over_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(f'dataset = "digits"\nout = "{tmp_path / "from-file"}"\n')
    assert captured(monkeypatch, "--config", tmp_path / "c.toml")[1] == tmp_path / "from-file"
    assert captured(monkeypatch, "--config", tmp_path / "c.toml", "--out", tmp_path / "flag")[1] == tmp_path / "flag"


def test_toml_with_an_unknown_key_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("epochz = 3\n")
    code, _, stderr = invoke("train", "--config", tmp_path / "c.toml", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "'epochz'", "use the flags' names", "latent-dim", "warmup")
    (tmp_path / "c.toml").write_text("kind = 'ae'\n")  # the setting's name in config.json, not a flag's
    code, _, stderr = invoke("train", "--config", tmp_path / "c.toml", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "'kind'", "model")


def ctrl_c(*_: object, **__: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.slow
def test_ctrl_c_tells_how_to_continue_only_where_something_trains(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vaekit.api.train", ctrl_c)
    code, _, stderr = invoke("train", "--dataset", "digits", "--out", trained)  # a run with a checkpoint
    assert (
        code == 130
        and stderr.strip()
        == f"interrupted: the last checkpoint is saved; continue with `vaekit train --resume --out {trained}`"
    )
    code, _, stderr = invoke("train", "--dataset", "digits", "--out", tmp_path / "new")
    assert (
        code == 130
        and stderr.strip() == f"interrupted before {tmp_path / 'new'} had a checkpoint: start the same command again"
    )
    monkeypatch.setattr("vaekit.analysis.why.runs.train_in_budget", ctrl_c)
    code, _, stderr = invoke("why", "--dataset", "digits", "--out", tmp_path / "why")
    assert code == 130 and f"saved in {tmp_path / 'why' / 'runs'}; the same `vaekit why` command" in stderr
    monkeypatch.setattr("vaekit.training.runs.load_run", ctrl_c)
    code, _, stderr = invoke("info", trained)  # trains nothing: nothing to continue
    assert code == 130 and stderr.strip() == "interrupted"


# ---- bad input: one line, exit 2, nothing lost ---------------------------------------------------------------


def test_missing_data_path(tmp_path: Path) -> None:
    code, _, stderr = invoke("train", "--dataset", tmp_path / "nowhere.npy", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "does not exist")
    assert not (tmp_path / "r").exists()


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, stderr = invoke("train", "--dataset", tmp_path / "empty", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "0 PNG/JPEG images")
    assert not (tmp_path / "r").exists()


def test_corrupt_image(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 6)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    code, _, stderr = invoke("train", "--dataset", tmp_path / "imgs", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "broken.png", "remove or replace")


def test_images_of_different_sizes(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 6, size=(10, 10))
    write_images(tmp_path / "imgs" / "more", 1, size=(12, 10))
    code, _, stderr = invoke("train", "--dataset", tmp_path / "imgs", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "differ in size", "resize")


def test_non_finite_values_in_arrays(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((20, 4, 4))
    x[3, 1, 1], x[5, 0, 0] = np.nan, np.inf
    np.save(tmp_path / "x.npy", x)
    code, _, stderr = invoke("train", "--dataset", tmp_path / "x.npy", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "2 NaN or infinite values")


def test_unknown_dataset_name(tmp_path: Path) -> None:
    code, _, stderr = invoke("train", "--dataset", "cifar-1000", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "unknown dataset", "fashion-mnist")


def test_run_folder_without_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text(json.dumps({"format_version": 1}))
    for command in (("sample", tmp_path / "r"), ("info", tmp_path / "r")):
        code, _, stderr = invoke(*command)
        assert_clean_error(code, stderr, "no weights yet")


def test_checkpoint_whose_config_does_not_match(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    for f in trained.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    config = json.loads((run / "config.json").read_text())
    config["model"]["latent_dim"] = 6
    (run / "config.json").write_text(json.dumps(config))
    before = fingerprint(run)
    code, _, stderr = invoke("sample", run, "--out", tmp_path / "s.png")
    assert_clean_error(code, stderr, "does not match", "shape")
    assert fingerprint(run) == before and not (tmp_path / "s.png").exists()


def test_truncated_weights(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    for f in trained.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = fingerprint(run)
    code, _, stderr = invoke("info", run)
    assert_clean_error(code, stderr, "truncated or corrupt")
    assert fingerprint(run) == before


def test_resume_on_a_finished_run(trained: Path) -> None:
    before = fingerprint(trained)
    code, _, stderr = invoke("train", "--resume", "--out", trained)
    assert_clean_error(code, stderr, "already finished its 2 epochs", "--epochs")
    assert fingerprint(trained) == before


def test_resume_with_a_changed_setting(trained: Path) -> None:
    code, _, stderr = invoke("train", "--resume", "--out", trained, "--latent-dim", "9", "--epochs", "3")
    assert_clean_error(code, stderr, "model differs")


def test_out_of_range_index(trained: Path, tmp_path: Path) -> None:
    code, _, stderr = invoke("latent", "interpolate", trained, "--b", "100000", "--out", tmp_path / "i.png")
    assert_clean_error(code, stderr, "--b 100000 is out of range")


def test_bad_setting_value(tmp_path: Path) -> None:
    code, _, stderr = invoke("train", *TINY, "--network", "transformer", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "unknown network")


@pytest.mark.parametrize(("device", "fragment"), [("gpu0", "unknown device"), ("cuda:7", "no CUDA GPU")])
def test_bad_device(tmp_path: Path, device: str, fragment: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    code, _, stderr = invoke("train", *TINY, "--device", device, "--out", tmp_path / "r")
    assert_clean_error(code, stderr, fragment)
    assert not (tmp_path / "r").exists()
