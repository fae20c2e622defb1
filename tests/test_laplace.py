"""The Laplace likelihood, a part added as one file (`vaekit/model/laplace.py`): its density against
torch.distributions, and its appearance everywhere a part shows, from that file alone: `vaekit train --help`, config
validation, a TOML file, the docs table and the ONNX export."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.distributions import Independent
from torch.distributions import Laplace as OracleLaplace

from tests.test_cli import TINY, invoke
from vaekit import ModelConfig, TrainConfig, VaekitError
from vaekit.model.heads import DEQUANTIZED, build_head, scores
from vaekit.model.laplace import Laplace
from vaekit.parts import LIKELIHOODS

ROOT = Path(__file__).parents[1]
SOURCE = ROOT / "src" / "vaekit"


def test_log_prob_matches_torch_distributions() -> None:
    generator = torch.Generator().manual_seed(0)
    loc = torch.rand(3, 2, 4, 4, generator=generator)
    log_scale = torch.randn(3, 2, 4, 4, generator=generator) * 0.5 - 2
    x = torch.rand(3, 2, 4, 4, generator=generator)
    oracle = Independent(OracleLaplace(loc, log_scale.exp()), 3)
    torch.testing.assert_close(Laplace(loc, log_scale).log_prob(x), oracle.log_prob(x))


def test_samples_have_the_laplace_median_and_mean_absolute_deviation() -> None:
    loc = torch.full((1, 1, 100, 100), 0.3)
    likelihood = Laplace(loc, torch.tensor(0.2).log())
    draws = likelihood.sample(torch.Generator().manual_seed(0))
    assert abs(draws.median().item() - 0.3) < 0.01
    assert abs((draws - 0.3).abs().mean().item() - 0.2) < 0.01  # E|x − μ| = b


def test_the_head_learns_one_scale_and_is_scored_on_dequantized_pixels() -> None:
    head = build_head(ModelConfig(likelihood="laplace", input_shape=[1, 4, 4]))
    assert [p.numel() for p in head.parameters()] == [1]  # type: ignore[attr-defined]
    assert scores("laplace") == DEQUANTIZED


def docs_page(name: str) -> str:
    """A docs page as the site shows it: through the docs build's own hook (docs/hooks.py)."""
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page: str = hooks.on_page_markdown((ROOT / "docs" / name).read_text(encoding="utf-8"))
    return page


def test_it_is_a_choice_of_the_help_the_config_and_the_docs_table() -> None:
    code, stdout, _ = invoke("train", "--help")
    assert code == 0 and "laplace" in stdout
    TrainConfig(model=ModelConfig(likelihood="laplace")).validate()
    with pytest.raises(VaekitError, match=r"unknown likelihood 'laplce': use one of \(.*'laplace'"):
        TrainConfig(model=ModelConfig(likelihood="laplce")).validate()
    assert "laplace" in LIKELIHOODS and "laplace" not in (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    assert "| `laplace` | one learned scale, L1-like |" in docs_page("model.md")


def test_a_toml_run_trains_and_exports_it(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    toml = tmp_path / "laplace.toml"
    toml.write_text('likelihood = "laplace"\nepochs = 1\n')
    out = tmp_path / "run"
    code, _, stderr = invoke("train", *TINY, "--config", toml, "--out", out)
    assert code == 0, stderr
    assert json.loads((out / "config.json").read_text())["model"]["likelihood"] == "laplace"
    code, _, stderr = invoke("export", out, "--format", "onnx")
    assert code == 0, stderr
    described = json.loads((out / "onnx" / "export.json").read_text())
    assert [o["name"] for o in described["decoder"]["outputs"]] == ["mean", "log_scale"]


def test_the_part_lives_in_its_own_file_alone() -> None:
    naming = sorted(str(p.relative_to(SOURCE)) for p in SOURCE.rglob("*.py") if "laplace" in p.read_text().lower())
    assert naming == ["model/laplace.py"]
