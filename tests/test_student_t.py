"""The Student-t likelihood, a part with a setting of its own (`--dof`) added as one file
(`vaekit/model/student_t.py`): its density against torch.distributions, and its appearance, setting included,
everywhere a part shows, from that file alone: `vaekit train --help`, config validation, a TOML file, config.json,
the docs table and the ONNX export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch.distributions import Independent
from torch.distributions import StudentT as OracleStudentT

from tests.test_cli import TINY, invoke
from tests.test_laplace import docs_page
from vaekit import ModelConfig, TrainConfig, VaekitError
from vaekit.config import with_overrides
from vaekit.model.heads import DEQUANTIZED, build_head, scores
from vaekit.model.student_t import StudentT, StudentTHead

ROOT = Path(__file__).parents[1]
SOURCE = ROOT / "src" / "vaekit"


@pytest.mark.parametrize("dof", [1.0, 2.5, 30.0])
def test_log_prob_matches_torch_distributions(dof: float) -> None:
    generator = torch.Generator().manual_seed(0)
    loc = torch.rand(3, 2, 4, 4, generator=generator)
    log_scale = torch.randn(3, 2, 4, 4, generator=generator) * 0.5 - 2
    x = torch.rand(3, 2, 4, 4, generator=generator)
    oracle = Independent(OracleStudentT(dof, loc, log_scale.exp()), 3)
    torch.testing.assert_close(StudentT(loc, log_scale, dof).log_prob(x), oracle.log_prob(x))


def test_samples_have_the_t_median_and_variance() -> None:
    likelihood = StudentT(torch.full((1, 1, 300, 300), 0.3), torch.tensor(0.2).log(), dof=5.0)
    draws = likelihood.sample(torch.Generator().manual_seed(0))
    assert abs(draws.median().item() - 0.3) < 0.01
    assert draws.var().item() == pytest.approx(0.2**2 * 5 / 3, rel=0.05)  # σ²·ν/(ν − 2)
    again = likelihood.sample(torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)  # every draw from the generator, rejected ones redrawn from it too


def test_the_head_takes_dof_from_the_config_and_is_scored_on_dequantized_pixels() -> None:
    head = build_head(ModelConfig(likelihood="student-t", input_shape=[1, 4, 4], options={"dof": 2.5}))
    assert isinstance(head, StudentTHead) and head.dof == 2.5
    assert isinstance(build_head(ModelConfig(likelihood="student-t")), StudentTHead)  # ν left out: its default
    assert [p.numel() for p in head.parameters()] == [1]
    assert scores("student-t") == DEQUANTIZED


def test_its_setting_is_a_flag_a_checked_config_value_and_a_docs_entry() -> None:
    code, stdout, _ = invoke("train", "--help")
    assert code == 0 and "student-t" in stdout and "--dof" in stdout
    with_overrides(TrainConfig(), {"likelihood": "student-t", "dof": 2.5}).validate()
    with pytest.raises(VaekitError, match=r"^--dof must be above 0 and at most 1e\+06: change that setting$"):
        with_overrides(TrainConfig(), {"likelihood": "student-t", "dof": 0.0}).validate()
    with pytest.raises(VaekitError, match=r"^setting dof = 'many' should be a float"):
        with_overrides(TrainConfig(), {"dof": "many"})
    with pytest.raises(VaekitError, match=r"unknown part setting\(s\) dfo: valid ones are .*dof"):
        TrainConfig.from_dict({"model": {"options": {"dfo": 3.0}}, "data": {}})
    row = next(line for line in docs_page("model.md").splitlines() if line.startswith("| `student-t` |"))
    assert "`--dof` (default 4.0): Degrees of freedom" in row


def test_a_toml_run_keeps_dof_in_config_json_and_exports(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    toml = tmp_path / "student.toml"
    toml.write_text('likelihood = "student-t"\ndof = 2.5\nepochs = 1\n')
    out = tmp_path / "run"
    code, _, stderr = invoke("train", *TINY, "--config", toml, "--out", out)
    assert code == 0, stderr
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["likelihood"] == "student-t" and model["options"]["dof"] == 2.5
    code, _, stderr = invoke("train", "--resume", "--epochs", "2", "--quiet", "--out", out)
    assert code == 0, stderr  # the run folder's ν is read back, not replaced by the default
    assert json.loads((out / "config.json").read_text())["model"]["options"]["dof"] == 2.5
    code, _, stderr = invoke("export", out, "--format", "onnx")
    assert code == 0, stderr
    described = json.loads((out / "onnx" / "export.json").read_text())
    assert [o["name"] for o in described["decoder"]["outputs"]] == ["mean", "log_scale"]


def test_the_part_and_its_setting_live_in_its_own_file_alone() -> None:
    naming = sorted(str(p.relative_to(SOURCE)) for p in SOURCE.rglob("*.py") if "student" in p.read_text().lower())
    assert naming == ["model/student_t.py"]
    assert not [p for p in SOURCE.rglob("*.py") if p.name != "student_t.py" and re.search(r"\bdof\b", p.read_text())]
