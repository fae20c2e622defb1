"""`vaekit why`: runs trained in one budget and reused, the report's numbers against the existing tools, missing
controls, sentences that flip with their numbers, the MMD, the CLI, and the report in a real, offline browser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import make_home, tiny_config
from tests.test_web import chromium_or_fail
from vaekit import VaekitError, load_run
from vaekit.analysis.estimators import gradient_lab
from vaekit.analysis.evaluate import kl_report, likelihood_report
from vaekit.analysis.intervals import bootstrap, weighted_mean
from vaekit.analysis.why import Settings, WhyReport, build_report, write_report
from vaekit.analysis.why.evidence import Evidence
from vaekit.analysis.why.measures import mmd, trimmed_mean, whitened
from vaekit.analysis.why.runs import (
    MEMORIZE_IMAGES,
    ROLES,
    load_roles,
    next_epochs,
    parse_budget,
    parse_runs,
    train_in_budget,
)
from vaekit.analysis.why.verdicts import continuity_verdict, generalization_verdict, gradient_verdict, kl_verdict
from vaekit.api import train
from vaekit.cli.main import app
from vaekit.data.sources import load_dataset

CHEAP = Settings(repeats=5, batch_size=32, k=4, images=100, samples=100, paths=12, steps=4)


@pytest.fixture(scope="module")
def made(
    tmp_path_factory: pytest.TempPathFactory, classifier_cache: Path
) -> Iterator[tuple[Path, dict[str, Path], WhyReport]]:
    """Every role trained once on digits in a budget too small for a second epoch, and the report built on them."""
    out = tmp_path_factory.mktemp("why")
    with pytest.MonkeyPatch.context() as patch:  # set up before any test's own home
        patch.setenv("HOME", str(make_home(out / "home", classifier_cache)))
        torch.manual_seed(0)
        folders = train_in_budget(tiny_config(), out, 1e-3, lambda c, f, r: train(c, f, resume=r))
        report = build_report(load_roles(folders), CHEAP)
        write_report(report, out)
        yield out, folders, report


def section(report: WhyReport, key: str) -> Any:
    return next(s for s in report.sections if s.key == key)


@pytest.mark.slow
def test_the_budget_trains_every_role_and_a_second_call_reuses_them(
    made: tuple[Path, dict[str, Path], WhyReport],
) -> None:
    out, folders, _ = made
    assert set(folders) == set(ROLES)
    assert all(load_run(folder).epochs_done == 1 for folder in folders.values())
    memorizer = load_run(folders["memorize"])
    assert len(load_dataset(memorizer.config.data).train) == MEMORIZE_IMAGES
    assert load_run(folders["score-function"]).config.estimator == "score-function-baseline"

    def refuse(*_: object) -> Any:
        raise AssertionError("a finished run was trained again")

    assert train_in_budget(tiny_config(), out, 1e-3, refuse) == folders


def test_next_epochs_fills_the_share_and_stops() -> None:
    assert next_epochs([], 10.0, 100) == 1
    assert next_epochs([1.0], 10.0, 100) == 10  # 9 more seconds at 1 s per epoch
    assert next_epochs([1.0], 10.0, 4) == 4
    assert next_epochs([5.0, 5.0], 10.0, 100) is None
    assert next_epochs([1.0] * 4, 10.0, 4) is None


@pytest.mark.slow
def test_the_report_s_numbers_are_the_existing_tools_numbers(made: tuple[Path, dict[str, Path], WhyReport]) -> None:
    out, folders, report = made
    vae = load_run(folders["vae"])
    trained, initial = gradient_lab(vae, CHEAP.repeats, CHEAP.batch_size, 4, CHEAP.seed, at_init=True)
    ratios = section(report, "gradients").numbers["variance_ratio"]
    assert ratios["trained"][0] == pytest.approx(trained.variance_ratio("score-function"))
    assert ratios["initialisation"][1] == pytest.approx(initial.variance_ratio("score-function-baseline"))
    test_x = load_dataset(vae.config.data).test.x[: CHEAP.images]
    expected = kl_report(vae.model, test_x)
    kl = section(report, "kl").numbers["vae"]
    assert kl["active_units"] == expected.active_units and kl["aggregate_kl"] == pytest.approx(expected.aggregate_kl)
    assert section(report, "kl").headline.startswith(f"{expected.active_units} of 4")
    nll = likelihood_report(vae.model, test_x, "test", CHEAP.k, CHEAP.seed, vae.config.data).nll
    assert section(report, "generalization").numbers["vae"]["test_nll"] == pytest.approx(nll)
    assert {row[0] for row in section(report, "kl").tables[1].rows} == {"0.25", "1", "4"}
    written = json.loads((out / "report.json").read_text())
    assert [s["headline"] for s in written["sections"]] == [s.headline for s in report.sections]


@pytest.mark.slow
def test_a_missing_control_is_said_not_failed_on(made: tuple[Path, dict[str, Path], WhyReport]) -> None:
    _, folders, _ = made
    alone = build_report(load_roles({"vae": folders["vae"]}), CHEAP)
    for key, role in (("gradients", "score-function"), ("continuity", "ae"), ("generalization", "memorize"),
                      ("kl", "mc-kl")):  # fmt: skip
        assert any(f"no {role} run" in line for line in section(alone, key).missing), key
    assert "no score-function run" in section(alone, "gradients").verdict
    assert section(alone, "continuity").verdict.startswith("not shown")
    assert section(alone, "kl").verdict.startswith("not shown")
    assert all(section(alone, key).evidence is None for key in ("continuity", "generalization", "kl"))
    assert all(not s.missing for s in made[2].sections)
    assert "with the KL sampled instead" in section(made[2], "kl").verdict


def evidence(interval: tuple[float, float], null: float = 0.0, side: str = "above") -> Evidence:
    return Evidence("a difference", sum(interval) / 2, interval, null, side, n=200, unit="paths")


@pytest.mark.parametrize(
    ("interval", "null", "side", "confirmed"),
    [
        ((0.1, 0.3), 0.0, "above", True),
        ((-0.1, 0.3), 0.0, "above", False),  # the same estimate, its interval reaching the null
        ((-0.3, -0.1), 0.0, "above", False),
        ((1.5, 9.0), 1.0, "above", True),
        ((0.9, 9.0), 1.0, "above", False),
        ((-0.3, -0.1), 0.0, "below", True),
        ((-0.3, 0.1), 0.0, "below", False),
    ],
)
def test_one_rule_confirms_only_an_interval_clear_of_the_null_on_the_claimed_side(
    interval: tuple[float, float], null: float, side: str, confirmed: bool
) -> None:
    found = Evidence("x", sum(interval) / 2, interval, null, side, n=10, unit="images")
    assert found.confirmed is confirmed
    assert found.to_dict()["verdict"] == ("confirmed" if confirmed else "not confirmed")


def test_each_claims_sentence_flips_when_its_interval_moves_across_the_null() -> None:
    clear, reaching = evidence((0.05, 0.2)), evidence((-0.05, 0.2))
    sentences = {
        "gradients": lambda e: gradient_verdict(e, 400.0, 8.0, None),
        "continuity": lambda e: continuity_verdict(e, 0.3, {"AE": 0.4}, 0.05),
        "generalization": lambda e: generalization_verdict(e, 1.5, (0.55, 0.5, 0.6)),
        "kl": lambda e: kl_verdict(e, 20.0, (20.1, 19.8, 20.4)),
    }
    for claim, sentence in sentences.items():
        assert sentence(clear).startswith("confirmed:"), claim
        assert sentence(reaching).startswith("not confirmed:"), claim
        assert "95% interval -0.05 to 0.2 over 200 paths, 1 training seed" in sentence(reaching), claim
    assert continuity_verdict(None, 0.3, {}, 0.05).startswith("not shown")
    assert "lies outside its Monte Carlo" in kl_verdict(clear, 25.0, (20.1, 19.8, 20.4))


def test_the_bootstrap_interval_covers_a_known_mean_and_shrinks_with_more_units() -> None:
    generator = torch.Generator().manual_seed(0)
    small, large = torch.randn(100, generator=generator) + 3, torch.randn(10000, generator=generator) + 3
    widths = []
    for values in (small, large):
        low, high = bootstrap(lambda w, v=values: weighted_mean(w, v), [values])
        assert low < 3 < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 5  # √100 = 10 times narrower, within bootstrap noise
    assert widths[0] == pytest.approx(2 * 1.96 / 10, rel=0.2)


def test_mmd_is_near_zero_for_one_law_and_large_for_a_shifted_one() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    same, shifted = mmd(x, y), mmd(x, y + 1.5)
    assert abs(same) < 0.01
    assert shifted > 0.2 > 20 * abs(same)


def test_trimmed_mean_drops_the_outer_percentiles() -> None:
    values = torch.cat([torch.ones(198), torch.tensor([-1e6, 1e6])])
    assert trimmed_mean(values) == pytest.approx(1.0)


def test_budget_and_runs_arguments_fail_in_one_line() -> None:
    assert parse_budget("15m") == 900 and parse_budget("90s") == 90 and parse_budget("2") == 2
    for bad in ("", "soon", "-5m", "0s", "nanm"):
        with pytest.raises(VaekitError, match="--budget"):
            parse_budget(bad)
    assert parse_runs("vae=a,beta-2=b") == {"vae": Path("a"), "beta-2": Path("b")}
    with pytest.raises(VaekitError, match="vae=PATH"):
        parse_runs("ae=a")
    with pytest.raises(VaekitError, match="ROLE=PATH"):
        parse_runs("vae=a,nonsense=b")


@pytest.mark.slow
def test_the_cli_builds_the_report_from_runs_and_refuses_bad_input(
    made: tuple[Path, dict[str, Path], WhyReport], tmp_path: Path
) -> None:
    _, folders, _ = made
    runs = f"vae={folders['vae']},ae={folders['ae']}"
    flags = ["--repeats", "3", "--k", "2", "--images", "50", "--prior-samples", "50", "--device", "cpu"]
    result = CliRunner().invoke(app, ["why", "--runs", runs, "--out", str(tmp_path), *flags])
    assert result.exit_code == 0, result.output
    assert "2. A continuous latent space" in result.output and (tmp_path / "report.html").is_file()
    bad = CliRunner().invoke(app, ["why", "--runs", "ae=x", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "vae=PATH" in bad.output
    both = CliRunner().invoke(app, ["why", "--runs", runs, "--dataset", "digits"])
    assert both.exit_code == 2 and "either --dataset" in both.output


@pytest.mark.slow
def test_the_report_opens_offline_in_a_real_browser(made: tuple[Path, dict[str, Path], WhyReport]) -> None:
    from playwright.sync_api import Route, sync_playwright

    out, _, report = made
    executable = chromium_or_fail()
    fetched: list[str] = []

    def block_network(route: Route) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            fetched.append(route.request.url)
            route.abort()

    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=flags)
        context = browser.new_context()
        context.set_offline(True)
        context.route("**/*", block_network)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((out / "report.html").as_uri())
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        shown = {s.key: page.locator(f"#{s.key} .headline").inner_text() for s in report.sections}
        verdicts = page.locator(".verdict").all_inner_texts()
        browser.close()
    assert len(widths) == sum(len(s.figures) for s in report.sections) and all(w > 0 for w in widths)
    assert shown == {s.key: s.headline for s in report.sections}
    assert len(verdicts) == 4 and all(v.startswith(("confirmed", "not confirmed", "not shown")) for v in verdicts)
    assert errors == [] and fetched == []


@pytest.mark.slow
def test_measuring_reports_each_claim_to_the_progress_bar(made: tuple[Path, dict[str, Path], WhyReport]) -> None:
    _, folders, _ = made
    seen: list[tuple[str, int, int]] = []
    build_report(load_roles({"vae": folders["vae"]}), CHEAP, lambda *step: seen.append(step))
    assert seen == [("claims measured", done, 4) for done in range(1, 5)]


def test_whitening_fitted_on_other_codes_gives_them_the_priors_moments_only_approximately() -> None:
    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(3, 3, generator=generator)
    train_codes, test_codes = (torch.randn(4000, 3, generator=generator) @ mix + 2.0 for _ in range(2))
    own = whitened(train_codes, train_codes).double()
    torch.testing.assert_close(own.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cov(own.T), torch.eye(3, dtype=torch.float64), atol=1e-4, rtol=0)
    other = whitened(test_codes, train_codes).double()
    assert other.mean(0).abs().max() < 0.1 and (torch.cov(other.T) - torch.eye(3)).abs().max() < 0.15
    assert other.mean(0).abs().max() > 1e-4  # not exact: fitted elsewhere, as a model's moments would be
