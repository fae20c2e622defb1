"""Devices: names and their checks, sums where float64 is missing, every analysis on the model's device, precision
and compile.

There is no GPU here. The model on the meta device stands in for one: a meta tensor meeting a CPU tensor raises, just
as a CUDA tensor would, and a meta tensor holds no values, so an analysis that keeps to the model's device runs all
the way to the point where it reads its results, and fails only there.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from tests.conftest import invoke, tiny_config
from tests.test_cli import assert_clean_error
from vaekit import train
from vaekit.analysis.classifier import FEATURE_DIM, Classifier, FeatureSpace
from vaekit.analysis.copying import copying_audit
from vaekit.analysis.estimators import gradient_report
from vaekit.analysis.evaluate import kl_report, likelihood_report, sample_quality
from vaekit.analysis.sample_quality import frechet_distance
from vaekit.analysis.smoothness import smoothness
from vaekit.config import TrainConfig
from vaekit.data.sources import Split, load_dataset, to_float
from vaekit.devices import RunningSum, accumulate_dtype, generator_on, resolve_device
from vaekit.errors import VaekitError
from vaekit.model.vae import VAE
from vaekit.training.precision import prepare_networks
from vaekit.training.runs import CONFIG, build_model, load_run

READ_FROM_META = r"meta tensors|no data"  # what reading a result off the meta device raises, and nothing else


def assert_reaches_its_results(analysis: Callable[[], Any]) -> None:
    """The analysis ran on the meta device up to reading its results; a device mismatch would raise before that."""
    with pytest.raises((RuntimeError, NotImplementedError), match=READ_FROM_META):
        analysis()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("devices") / "run"
    train(tiny_config(epochs=1), out)
    return out


@pytest.fixture(scope="module")
def meta_model(run_dir: Path) -> VAE:
    with warnings.catch_warnings():  # torch notes that copying values into meta tensors keeps none
        warnings.simplefilter("ignore", UserWarning)
        return load_run(run_dir, "meta").model


@pytest.fixture(scope="module")
def digits_test() -> Split:
    return load_dataset(tiny_config().data).test


# ---- names ------------------------------------------------------------------------------------------------------


def _machine(monkeypatch: pytest.MonkeyPatch, cuda: int = 0, mps: bool = False) -> None:
    """Pretend this machine has `cuda` CUDA GPUs and, or not, an Apple GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(("cuda", "mps", "expected"), [(0, False, "cpu"), (0, True, "mps"), (2, True, "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: int, mps: bool, expected: str
) -> None:
    _machine(monkeypatch, cuda, mps)
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize(
    ("name", "cuda", "fragment"),
    [
        ("mps", 0, "--device mps, but torch sees no Apple GPU (MPS) on this machine: use --device cpu"),
        ("cuda", 0, "--device cuda, but torch sees no CUDA GPU on this machine: use --device cpu or auto"),
        ("cuda:2", 2, "--device cuda:2, but this machine has 2 CUDA GPU(s): use cuda:0 to cuda:1"),
        ("gpu0", 0, "unknown device 'gpu0': use auto | cpu | cuda | cuda:N | mps"),
        ("meta", 0, "unknown device 'meta'"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, name: str, cuda: int, fragment: str
) -> None:
    _machine(monkeypatch, cuda)
    with pytest.raises(VaekitError, match="^" + re.escape(fragment)):
        resolve_device(name)


COMPUTING = [
    ["sample"],
    ["reconstruct"],
    ["evaluate"],
    ["gradients"],
    ["serve"],
    *[["latent", command] for command in ("interpolate", "traverse", "manifold", "embed", "arithmetic", "smoothness")],
]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMPUTING, ids=" ".join)
def test_every_computing_command_takes_device(
    command: list[str], run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch)
    code, _, stderr = invoke(*command, run_dir, "--device", "mps")
    assert_clean_error(code, stderr, "no Apple GPU (MPS)", "use --device cpu")


def test_training_on_a_missing_apple_gpu_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _machine(monkeypatch)
    code, _, stderr = invoke("train", "--dataset", "digits", "--device", "mps", "--quiet", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "no Apple GPU (MPS)", "use --device cpu")


def test_commands_run_on_the_device_asked_for(run_dir: Path, tmp_path: Path) -> None:
    for device in ("cpu", "auto"):
        code, _, stderr = invoke("sample", run_dir, "--n", "4", "--device", device, "--out", tmp_path / "s.png")
        assert code == 0, stderr
    code, _, stderr = invoke("latent", "embed", run_dir, "--n", "50", "--device", "cpu", "--out", tmp_path / "e.png")
    assert code == 0, stderr


# ---- sums without float64 ----------------------------------------------------------------------------------------


def test_float64_except_on_mps() -> None:
    assert accumulate_dtype(torch.device("cpu")) == accumulate_dtype(torch.device("cuda:1")) == torch.float64
    assert accumulate_dtype(torch.device("mps")) == torch.float32
    assert RunningSum(3, torch.device("cpu")).total.dtype == torch.float64


def test_compensated_float32_sum_beats_the_naive_one() -> None:
    """Against a float64 reference: Kahan's float32 sums stay within a few ulps, the naive ones drift by thousands."""
    terms = (1 + torch.rand(20_000, 16, generator=torch.Generator().manual_seed(0))).float()  # about 30,000 per column
    reference = terms.double().sum(0)
    kahan = RunningSum(16, torch.device("cpu"), dtype=torch.float32)
    naive = torch.zeros(16, dtype=torch.float32)
    for row in terms:
        kahan.add(row)
        naive += row
    kahan_error = (kahan.total.double() - reference).abs().max()
    naive_error = (naive.double() - reference).abs().max()
    assert kahan.total.dtype == torch.float32
    assert kahan_error <= 2e-3  # ≈ one float32 ulp at 30,000
    assert naive_error > 50 * kahan_error


# ---- every analysis where the model is --------------------------------------------------------------------------


def test_a_run_trained_on_the_cpu_loads_on_any_device(run_dir: Path, meta_model: VAE) -> None:
    on_meta, on_cpu = meta_model, load_run(run_dir, "cpu").model
    assert {p.device.type for p in on_meta.parameters()} == {"meta"}
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}
    assert [n for n, _ in on_meta.named_parameters()] == [n for n, _ in on_cpu.named_parameters()]


def test_likelihood_report_runs_on_the_models_device(meta_model: VAE, digits_test: Split) -> None:
    assert_reaches_its_results(lambda: likelihood_report(meta_model, digits_test.x[:20], "test", k=3))


def test_kl_report_runs_on_the_models_device(meta_model: VAE, digits_test: Split) -> None:
    assert_reaches_its_results(lambda: kl_report(meta_model, digits_test.x[:20]))


def test_smoothness_runs_on_the_models_device(meta_model: VAE, digits_test: Split) -> None:
    assert_reaches_its_results(lambda: smoothness(meta_model, digits_test, None, paths=4, steps=3))


def test_gradient_lab_accumulates_on_the_models_device(meta_model: VAE, digits_test: Split) -> None:
    assert_reaches_its_results(lambda: gradient_report(meta_model, to_float(digits_test.x[:8]), repeats=2, samples=2))


def test_the_explorer_runs_on_the_models_device(meta_model: VAE, digits_test: Split) -> None:
    from vaekit.web.app import create_app

    assert_reaches_its_results(lambda: create_app(meta_model, digits_test, "meta"))


def test_sample_quality_runs_on_the_samples_device(meta_model: VAE, digits_test: Split) -> None:
    decoded = meta_model.sample(12, torch.Generator().manual_seed(0))
    assert_reaches_its_results(lambda: sample_quality(decoded, digits_test.x, None))
    assert_reaches_its_results(lambda: copying_audit(decoded, digits_test.x[:12], digits_test.x[12:24], "pixels"))


def test_the_classifier_embeds_images_from_any_device_on_its_own(digits_test: Split) -> None:
    space = FeatureSpace(Classifier(1, 10).to("meta"), 0.0, "meta")
    features = space.embed(digits_test.x[:6])
    assert features.device.type == "meta" and features.shape == (6, FEATURE_DIM)


class OnAnAccelerator(Tensor):
    """Features as a GPU holds them: numpy() refuses, as it does for a CUDA tensor, until they are moved to the CPU."""

    def numpy(self, *, force: bool = False) -> Any:
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first")

    def cpu(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.as_subclass(Tensor)


def test_frechet_distance_reads_features_from_any_device() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 5, generator=g), torch.randn(200, 5, generator=g) + 0.5
    expected = frechet_distance(a, b)
    assert frechet_distance(a.as_subclass(OnAnAccelerator), b.as_subclass(OnAnAccelerator)) == pytest.approx(expected)


def test_generators_draw_on_the_device_they_serve() -> None:
    assert generator_on(torch.device("cpu"), 3).device.type == "cpu"
    assert generator_on(torch.device("meta"), 3).device.type == "cpu"  # meta draws no values; any generator serves


# ---- precision and compile ----------------------------------------------------------------------------------------


def _tiny_model() -> VAE:
    config = tiny_config()
    config.model.input_shape = list(load_dataset(config.data).shape)
    return build_model(config.validate())


def test_bf16_runs_the_networks_in_bf16_and_scores_in_fp32() -> None:
    model = _tiny_model()
    names = [name for name, _ in model.state_dict().items()]
    prepare_networks(model, "bf16")
    inner: list[torch.dtype] = []
    model.decoder[0].register_forward_hook(lambda _m, _i, out: inner.append(out.dtype))
    x = to_float(load_dataset(tiny_config().data).test.x[:5])
    terms = model.elbo(x, torch.Generator().manual_seed(0))
    assert inner == [torch.bfloat16]  # the decoder's first layer ran under autocast …
    assert terms.log_px.dtype == terms.kl.dtype == torch.float32  # … and its output was scored in float32
    assert [name for name, _ in model.state_dict().items()] == names  # checkpoints do not depend on the precision
    installed = model.decoder.forward
    prepare_networks(model, "bf16")
    assert model.decoder.forward is installed  # a second call with the same settings changes nothing
    prepare_networks(model, "fp32")
    model.elbo(x)
    assert inner[-1] == torch.float32


@pytest.mark.slow
def test_a_bf16_run_trains_close_to_fp32(tmp_path: Path) -> None:
    runs = {p: train(tiny_config(epochs=2, precision=p), tmp_path / p) for p in ("fp32", "bf16")}
    fp32, bf16 = (runs[p].final["test"] for p in ("fp32", "bf16"))  # type: ignore[index]
    for name in ("elbo", "log_px", "kl"):
        assert torch.isfinite(torch.tensor(bf16[name]))
        assert bf16[name] == pytest.approx(fp32[name], rel=0.05, abs=0.5)
    saved = json.loads((tmp_path / "bf16" / CONFIG).read_text())
    assert (saved["precision"], saved["compile"]) == ("bf16", False)


def test_a_config_json_from_before_precision_and_compile_loads_with_defaults() -> None:
    raw = tiny_config().to_dict()
    del raw["precision"], raw["compile"]
    config = TrainConfig.from_dict(raw).validate()
    assert (config.precision, config.compile) == ("fp32", False)


def test_an_unknown_precision_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = invoke("train", "--dataset", "digits", "--precision", "fp16", "--out", tmp_path / "r")
    assert_clean_error(code, stderr, "unknown precision 'fp16'", "fp32", "bf16")
    assert not (tmp_path / "r").exists()


def _compile_fails(monkeypatch: pytest.MonkeyPatch, at_once: bool) -> None:
    """torch.compile as on a machine without a C compiler (fails at the first call) or platform (fails at once)."""

    def compile(fn: Callable[..., Any], **_: Any) -> Callable[..., Any]:
        if at_once:
            raise RuntimeError("torch.compile is not supported on this platform")

        def compiled(*args: Any) -> Any:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

        return compiled

    monkeypatch.setattr(torch, "compile", compile)


@pytest.mark.slow
@pytest.mark.parametrize("at_once", [False, True])
def test_compile_falls_back_to_eager_with_one_notice(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path, at_once: bool
) -> None:
    eager = train(tiny_config(epochs=1), tmp_path / "eager").final
    _compile_fails(monkeypatch, at_once)
    with caplog.at_level(logging.WARNING, logger="vaekit"):
        compiled = train(tiny_config(epochs=1, compile=True), tmp_path / "compiled")
    notices = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert notices[0].startswith("--compile: torch.compile is unavailable here (RuntimeError: ")
    assert notices[0].endswith("; running eager")
    assert compiled.final == eager  # the same numbers, eager
    assert json.loads((tmp_path / "compiled" / CONFIG).read_text())["compile"] is True


def test_a_fault_in_the_input_is_not_blamed_on_compile(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _compile_fails(monkeypatch, at_once=False)
    model = _tiny_model()
    prepare_networks(model, compile=True)
    with caplog.at_level(logging.WARNING, logger="vaekit"), pytest.raises(RuntimeError, match="shapes cannot"):
        model.decoder(torch.zeros(2, model.latent_dim + 1))
    assert not caplog.records
