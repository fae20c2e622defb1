"""`vaekit export`: the ONNX graphs compute what the model computes, at any batch size, and a failed or refused export
leaves nothing behind.

The oracle is the model itself: ONNX Runtime's outputs on random inputs are compared with the attributes of the
posterior and likelihood objects that `VAE.encode` and `VAE.decode` return, at two batch sizes the export never saw.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.conftest import invoke, tiny_config
from tests.test_cli import assert_clean_error
from vaekit import load_run, train
from vaekit.config import options_of, with_overrides
from vaekit.export import ONNX_MISSING, export_run
from vaekit.model.posteriors import CategoricalSettings
from vaekit.model.vae import VAE
from vaekit.training.runs import Run

BATCHES = (3, 7)  # the export traces a batch of 2: other sizes prove the batch axis dynamic
# What each graph output must equal, read straight from the model's distribution objects.
POSTERIOR: dict[str, Callable[[Any], torch.Tensor]] = {
    "mu": lambda q: q.mu,
    "log_var": lambda q: q.logvar,
    "code": lambda q: q.code,
    "logits": lambda q: q.logits,
}
LIKELIHOOD: dict[str, Callable[[Any], torch.Tensor]] = {
    "logits": lambda p: p.logits,
    "mean": lambda p: p.mean,
    "log_scale": lambda p: p.log_scale,
    "mixture_logits": lambda p: p.mixture_logits,
    "loc": lambda p: p.loc,
}
KINDS: dict[str, dict[str, Any]] = {  # model settings of each exported run -> its graphs' output names
    "bernoulli": {"settings": {}, "encoder": ["mu", "log_var"], "decoder": ["logits"]},
    "gaussian-conv": {
        "settings": {"likelihood": "gaussian-pixel", "network": "conv", "hidden": [4, 8], "prior": "mog"},
        "encoder": ["mu", "log_var"],
        "decoder": ["mean", "log_scale"],
    },
    "discretized-logistic": {
        "settings": {"likelihood": "discretized-logistic", "mixtures": 2},
        "encoder": ["mu", "log_var"],
        "decoder": ["mixture_logits", "loc", "log_scale"],
    },
    "ae": {"settings": {"kind": "ae"}, "encoder": ["code"], "decoder": ["logits"]},
    "categorical": {
        "settings": {"latent": "categorical", "latent_vars": 3, "categories": 4},
        "encoder": ["logits"],
        "decoder": ["logits"],
    },
    "conditional": {"settings": {"condition": "label"}, "encoder": ["mu", "log_var"], "decoder": ["logits"]},
}


def trained_run(folder: Path, **settings: Any) -> Run:
    return train(with_overrides(tiny_config(epochs=1), settings), folder)


@pytest.fixture(scope="module", params=list(KINDS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Run, Path]:
    kind = str(request.param)
    run = trained_run(tmp_path_factory.mktemp("export") / kind, **KINDS[kind]["settings"])
    return kind, load_run(run.path), export_run(run.path)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder`, by path, with its SHA-256."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def random_codes(model: VAE, n: int, generator: torch.Generator) -> torch.Tensor:
    """Codes of the kind the decoder reads: one-hot rows for categorical latents, Gaussian noise otherwise."""
    if model.posterior.continuous:
        return torch.randn(n, model.latent_dim, generator=generator)
    codes = options_of(model.config, CategoricalSettings)
    vars_, classes = codes.latent_vars, codes.categories
    picks = torch.randint(0, classes, (n, vars_), generator=generator)
    return torch.nn.functional.one_hot(picks, classes).float().flatten(1)


@pytest.mark.slow
def test_both_graphs_match_the_model_at_two_batch_sizes(exported: tuple[str, Run, Path]) -> None:
    kind, run, folder = exported
    model, generator = run.model, torch.Generator().manual_seed(1)
    encoder, decoder = session(folder / "encoder.onnx"), session(folder / "decoder.onnx")
    assert [o.name for o in encoder.get_outputs()] == KINDS[kind]["encoder"]
    assert [o.name for o in decoder.get_outputs()] == KINDS[kind]["decoder"]
    assert encoder.get_inputs()[0].shape == ["batch", *model.input_shape]
    for n in BATCHES:
        x = torch.rand(n, *model.input_shape, generator=generator)
        z = random_codes(model, n, generator)
        y = torch.randint(0, model.classes, (n,), generator=generator) if model.conditional else None
        labels = {} if y is None else {"label": y.numpy()}
        with torch.no_grad():
            posterior, likelihood = model.encode(x, y), model.decode(z, y)
        encoded = encoder.run(None, {"x": x.numpy(), **labels})
        decoded = decoder.run(None, {"z": z.numpy(), **labels})
        for name, got in zip(KINDS[kind]["encoder"], encoded, strict=True):
            assert got.shape[0] == n
            np.testing.assert_allclose(got, POSTERIOR[name](posterior).numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        for name, got in zip(KINDS[kind]["decoder"], decoded, strict=True):
            np.testing.assert_allclose(got, LIKELIHOOD[name](likelihood).numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_export_json_describes_every_input_and_output(exported: tuple[str, Run, Path]) -> None:
    kind, run, folder = exported
    described = json.loads((folder / "export.json").read_text())
    assert json.loads((folder / "config.json").read_text()) == run.config.to_dict()
    labelled = ["label"] if run.model.conditional else []
    for graph, first in (("encoder", "x"), ("decoder", "z")):
        onnx_graph = session(folder / described[graph]["file"])
        inputs, outputs = described[graph]["inputs"], described[graph]["outputs"]
        assert [i["name"] for i in inputs] == [first, *labelled] == [i.name for i in onnx_graph.get_inputs()]
        assert [o["name"] for o in outputs] == KINDS[kind][graph]
        for entry, value in zip(inputs + outputs, onnx_graph.get_inputs() + onnx_graph.get_outputs(), strict=True):
            assert entry["shape"] == value.shape and entry["shape"][0] == "batch"
            assert value.type == {"float32": "tensor(float)", "int64": "tensor(int64)"}[entry["dtype"]]
            assert len(entry["meaning"]) > 10
    learned = run.config.model.prior != "standard"  # a learned prior is not in the files, and export.json says so
    assert ("these files do not hold" in described["prior"]) == learned


def test_the_bernoulli_picture_is_the_sigmoid_of_the_logits_as_export_json_says(tmp_path: Path) -> None:
    """Someone with only the files reconstructs images exactly as `VAE.reconstruct` does."""
    run = trained_run(tmp_path / "run")
    folder = export_run(run.path, tmp_path / "shipped")
    x = torch.rand(5, *run.model.input_shape, generator=torch.Generator().manual_seed(2))
    mu, _ = session(folder / "encoder.onnx").run(None, {"x": x.numpy()})
    (logits,) = session(folder / "decoder.onnx").run(None, {"z": mu})
    assert "sigmoid(logits)" in json.loads((folder / "export.json").read_text())["decoder"]["outputs"][0]["meaning"]
    pictures = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(pictures, run.model.reconstruct(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def bernoulli(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return trained_run(tmp_path_factory.mktemp("bernoulli") / "run")


def test_the_cli_writes_the_default_folder_and_replaces_an_earlier_export(bernoulli: Run) -> None:
    assert invoke("export", "--help")[0] == 0
    for _ in range(2):
        code, stdout, stderr = invoke("export", bernoulli.path, "--format", "onnx")
        assert code == 0, stderr
        assert str(bernoulli.path / "onnx") in stdout
    assert sorted(p.name for p in (bernoulli.path / "onnx").iterdir()) == sorted(
        ["encoder.onnx", "decoder.onnx", "config.json", "export.json"]
    )
    assert not [p.name for p in bernoulli.path.iterdir() if p.name.startswith(".")]


def test_an_unknown_format_is_one_line(bernoulli: Run, tmp_path: Path) -> None:
    code, _, stderr = invoke("export", bernoulli.path, "--format", "tflite", "--out", tmp_path / "out")
    assert_clean_error(code, stderr, "'tflite' is not supported", "--format onnx")
    assert not (tmp_path / "out").exists()


def test_a_missing_onnx_package_is_one_line(bernoulli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    code, _, stderr = invoke("export", bernoulli.path, "--out", tmp_path / "out")
    assert_clean_error(code, stderr, ONNX_MISSING)
    assert not (tmp_path / "out").exists()


def test_out_naming_an_existing_folder_that_is_no_export_is_refused(bernoulli: Run) -> None:
    before = fingerprint(bernoulli.path)
    code, _, stderr = invoke("export", bernoulli.path, "--out", bernoulli.path)
    assert_clean_error(code, stderr, "is not an earlier vaekit export", "choose another --out")
    assert fingerprint(bernoulli.path) == before


def test_a_two_layer_run_is_refused_in_one_line(tmp_path: Path) -> None:
    run = trained_run(tmp_path / "two", second_layer=[8, 2])
    code, _, stderr = invoke("export", run.path)
    assert_clean_error(code, stderr, "one stochastic layer", "without --second-layer")
    assert not (run.path / "onnx").exists()
    assert not [p.name for p in run.path.iterdir() if p.name.startswith(".")]


def test_a_failed_export_leaves_no_folder_and_keeps_an_earlier_one(
    bernoulli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vaekit.export

    real = vaekit.export.export_graph

    def encoder_only(module: Any, inputs: Any, label: Any, path: Path) -> Any:
        if path.name == "decoder.onnx":  # the encoder is written by then
            raise RuntimeError("exporter failed")
        return real(module, inputs, label, path)

    earlier = export_run(bernoulli.path, tmp_path / "earlier")
    kept = fingerprint(earlier)
    monkeypatch.setattr(vaekit.export, "export_graph", encoder_only)
    for target in (tmp_path / "fresh", earlier):
        with pytest.raises(RuntimeError, match="exporter failed"):
            export_run(bernoulli.path, target)
    assert not (tmp_path / "fresh").exists()
    assert fingerprint(earlier) == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier"]  # no temporary folder left beside them


def test_the_trainer_clearing_its_temporaries_mid_export_does_no_harm(
    bernoulli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RUN/onnx is written from a hidden folder inside the run, where a trainer resuming at that moment removes its own
    stale `.*.tmp` files: the export's folder is none of them."""
    import vaekit.export
    from vaekit.training.runs import remove_stale_temporaries

    real = vaekit.export.export_graph

    def trainer_starts(module: Any, inputs: Any, label: Any, path: Path) -> Any:
        remove_stale_temporaries(bernoulli.path)
        return real(module, inputs, label, path)

    monkeypatch.setattr(vaekit.export, "export_graph", trainer_starts)
    folder = export_run(bernoulli.path, bernoulli.path / "shipped")
    assert (folder / "decoder.onnx").is_file()
