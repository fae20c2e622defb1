"""Latent paths, grids and the smoothness measure; the autoencoder baseline; the `vaekit latent` commands."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import tiny_config
from vaekit import load_run, train
from vaekit.analysis.latent import chain, class_difference, embed_2d, interpolate, plane_grid, prior_offsets, traversal
from vaekit.analysis.smoothness import path_stats
from vaekit.cli.main import app


def test_linear_path_hits_both_endpoints_and_extrapolates_on_the_line() -> None:
    a, b = torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0])
    path = interpolate(a, b, steps=5, extend=0.5)  # t = −0.5, 0, 0.5, 1, 1.5
    torch.testing.assert_close(path[1], a)
    torch.testing.assert_close(path[3], b)
    torch.testing.assert_close(path[0], a - 0.5 * (b - a))
    torch.testing.assert_close(path[4], b + 0.5 * (b - a))


def test_slerp_hits_endpoints_and_keeps_the_norm_between_equal_norm_codes() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 8, generator=g)
    b = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=-1) * a.norm(dim=-1, keepdim=True)
    path = interpolate(a, b, steps=9, method="slerp")  # (3, 9, 8)
    torch.testing.assert_close(path[:, 0], a, atol=1e-5, rtol=0)
    torch.testing.assert_close(path[:, -1], b, atol=1e-5, rtol=0)
    torch.testing.assert_close(path.norm(dim=-1), a.norm(dim=-1, keepdim=True).expand(3, 9), atol=1e-4, rtol=0)
    linear_mid = interpolate(a, b, steps=9)[:, 4].norm(dim=-1)
    assert (linear_mid < a.norm(dim=-1) - 1e-3).all()  # the straight line cuts inside the shell


def test_slerp_between_nearly_opposite_codes_of_unequal_norm_follows_the_circle() -> None:
    """Known answer in polar coordinates: the angle moves evenly from θ_a to θ_a + Ω, the radius from 1 to 3."""
    theta_a, omega, t = 0.3, math.pi - 1e-3, torch.linspace(-0.25, 1.25, 7, dtype=torch.float64)
    radius, theta = 1 + 2 * t, theta_a + t * omega
    expected = torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], dim=-1)
    path = interpolate(expected[1].float(), expected[-2].float(), steps=7, extend=0.25, method="slerp")
    torch.testing.assert_close(path, expected.float(), atol=1e-5, rtol=0)


def test_slerp_falls_back_to_the_line_where_no_great_circle_is_defined() -> None:
    a = torch.tensor([0.1, 0.7, -0.3])
    t = torch.tensor([0.0, 0.5, 1.0]).unsqueeze(-1)
    for b in (-3.1 * a, 3.1 * a, torch.zeros(3)):  # opposite and parallel within float32 rounding, a zero code
        path = interpolate(a, b, steps=3, method="slerp")
        torch.testing.assert_close(path, (1 - t) * a + t * b, atol=1e-6, rtol=0)


def test_chain_passes_through_every_code_once() -> None:
    zs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    path = chain(zs, steps_per_segment=4)
    assert len(path) == 2 * 4 + 1
    for z in zs:
        assert ((path - z).norm(dim=-1) < 1e-6).sum() == 1


def test_prior_offsets_are_symmetric_quantiles_within_three_sigma() -> None:
    offsets = prior_offsets(7)
    torch.testing.assert_close(offsets, -offsets.flip(0))
    assert offsets[0] == pytest.approx(-3.0, abs=1e-4) and offsets[3] == pytest.approx(0.0, abs=1e-6)
    probabilities = 0.5 * (1 + torch.erf(offsets.double() / math.sqrt(2)))
    gaps = probabilities.diff()
    torch.testing.assert_close(gaps, gaps.mean().expand_as(gaps))  # evenly spaced in probability


def test_traversal_moves_one_dimension_per_row() -> None:
    z = torch.randn(5)
    grid = traversal(z, dims=[3, 1], steps=4)
    assert grid.shape == (2, 4, 5)
    changed = (grid != z).any(1)  # (rows, D)
    assert changed[0].nonzero().flatten().tolist() == [3] and changed[1].nonzero().flatten().tolist() == [1]


def test_plane_grid_in_two_dimensions_is_the_quantile_grid() -> None:
    grid = plane_grid(torch.zeros(2), torch.eye(2), torch.ones(2), n=5)
    q = prior_offsets(5)
    torch.testing.assert_close(grid[0, :, 0], q)  # columns sweep the first axis
    torch.testing.assert_close(grid[:, 0, 1], q.flip(0))  # rows sweep the second, largest on top


def test_class_difference_and_embedding() -> None:
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [4.0, 0.0, 0.0], [4.0, 2.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(class_difference(means, labels, 1, 0), torch.tensor([4.0, 0.0, 0.0]))
    points, _ = embed_2d(means)
    assert points.shape == (4, 2)
    assert points[:, 0].abs().max() == pytest.approx(2.0, abs=1e-5)  # the first component is the 4-wide axis
    two_d = torch.randn(6, 2)
    assert torch.equal(embed_2d(two_d)[0], two_d)


def test_path_stats_tell_an_even_path_from_a_jump() -> None:
    even = torch.linspace(0, 1, 17).view(1, 17, 1).expand(4, 17, 3)
    jump = torch.cat([torch.zeros(4, 8, 3), torch.ones(4, 9, 3)], dim=1)
    assert path_stats(even, "pixels").mean_max_over_mean == pytest.approx(1.0, abs=1e-5)
    assert path_stats(jump, "pixels").mean_max_over_mean == pytest.approx(16.0, rel=1e-5)


@pytest.mark.slow
def test_the_autoencoder_is_a_point_mass_and_evaluate_says_what_it_lacks(tmp_path: Path) -> None:
    config = tiny_config()
    config.model.kind = "ae"
    train(config, tmp_path / "ae")
    model = load_run(tmp_path / "ae").model
    posterior = model.encode(torch.rand(4, 1, 8, 8))
    code = posterior.mean
    for seed in (0, 1):  # σ = 0: whatever the noise, the code itself
        assert torch.equal(posterior.rsample(generator=torch.Generator().manual_seed(seed)), code)
    assert torch.equal(model.prior.kl_per_unit(posterior), torch.zeros_like(code))  # not 14.5 + μ²/2 nats per dim
    result = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "ae"), "--k", "5", "--prior-samples", "50"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("an autoencoder has no ELBO and no likelihood bound")
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith("wrote ")) <= 80
    title = r"^1\. How likely is held-out data\?  \(nats per image\) *$"  # whole, above a table of narrow cells
    assert re.search(title, result.stdout, flags=re.MULTILINE)
    assert "not applicable" in result.stdout and "kl_per_dim.png" not in result.stdout
    saved = json.loads((tmp_path / "ae" / "evaluation.json").read_text())
    test = saved["likelihood"][0]
    assert test["neg_elbo"] is test["nll"] is test["bits_per_dim"] is test["kl"] is saved["kl"] is None
    assert test["reconstruction"] > 0 and 0 < test["mse"] < 1  # what an autoencoder does have
    assert saved["generalization"]["reconstruction_gap"] is not None and saved["sample_quality"]["precision"] >= 0


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("latent") / "run"
    train(tiny_config(epochs=2), out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["interpolate", "--a", "0", "--b", "4", "--method", "slerp"],
        ["interpolate", "--through", "0,3,5", "--steps", "4"],
        ["traverse", "--index", "2", "--dims", "3", "--steps", "5"],
        ["manifold", "--n", "6"],
        ["embed", "--n", "200"],
        ["arithmetic", "--from", "1", "--to", "7", "--n", "4"],
    ],
)
def test_latent_commands_write_pictures(digits_run: Path, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out.png"
    result = CliRunner().invoke(app, ["latent", args[0], str(digits_run), *args[1:], "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    with Image.open(out) as picture:
        assert picture.width > 50 and picture.height > 50


def test_interpolation_gif_is_animated_and_accepts_an_image_file(digits_run: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "mine.png")
    out = tmp_path / "path.gif"
    args = ["latent", "interpolate", str(digits_run), "--a", str(tmp_path / "mine.png"), "--b", "3", "--gif"]
    result = CliRunner().invoke(app, [*args, "--steps", "6", "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    with Image.open(out) as gif:
        assert gif.n_frames == 6 + 4  # there and back


def test_latent_bad_inputs_are_one_line_errors(digits_run: Path, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "big.png")
    cases = [
        (["interpolate", "--a", str(tmp_path / "big.png")], "resize"),
        (["interpolate", "--a", "nope.png"], "does not exist"),
        (["interpolate", "--b", "99999"], "out of range"),
        (["interpolate", "--method", "cubic"], "linear or slerp"),
        (["arithmetic", "--from", "42"], "no test image has that label"),
        (["embed", "--method", "umap"], "pca or tsne"),
    ]
    for args, fragment in cases:
        result = CliRunner().invoke(
            app, ["latent", args[0], str(digits_run), *args[1:], "--out", str(tmp_path / "x.png")]
        )
        assert result.exit_code == 2 and fragment in result.stderr, (args, result.stderr)


@pytest.mark.slow
def test_smoothness_command_reports_and_saves(digits_run: Path) -> None:
    result = CliRunner().invoke(app, ["latent", "smoothness", str(digits_run), "--paths", "20", "--steps", "8"])
    assert result.exit_code == 0, result.stderr
    assert "max/mean" in result.stdout and (digits_run / "smoothness.json").is_file()
