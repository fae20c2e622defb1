"""`vaekit serve`: the JSON API's answers and its validation (never a 500), and the page in a real Chromium."""

from __future__ import annotations

import base64
import io
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import tiny_config
from vaekit import load_run, train
from vaekit.data import load_dataset
from vaekit.web.app import create_app

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def explorer(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    out = tmp_path_factory.mktemp("web") / "run"
    train(tiny_config(epochs=2), out)
    run = load_run(out)
    return create_app(run.model, load_dataset(run.config.data).test, "digits run", top_k=3)


@pytest.fixture(scope="module")
def client(explorer: FastAPI) -> TestClient:
    return TestClient(explorer, raise_server_exceptions=False)


def png_size(data_url: str) -> tuple[int, int]:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).size


def test_info_lists_top_dimensions_by_kl(client: TestClient) -> None:
    info = client.get("/api/info").json()
    assert info["latent_dim"] == 4 and len(info["top_dims"]) == 3 and info["image_shape"] == [1, 8, 8]
    kl = info["kl_per_dim"]
    assert [kl[d] for d in info["top_dims"]] == sorted(kl, reverse=True)[:3]


def test_decode_encode_interpolate_sample_thumbnails(client: TestClient) -> None:
    decoded = client.post("/api/decode", json={"z": [0.5, -1, 0, 2]})
    assert decoded.status_code == 200 and png_size(decoded.json()["image"]) == (8, 8)
    encoded = client.post("/api/encode", json={"index": 3}).json()
    assert len(encoded["z"]) == 4 and isinstance(encoded["label"], int)
    path = client.post("/api/interpolate", json={"a": 0, "b": 5, "steps": 7, "extend": 0.5}).json()
    assert len(path["images"]) == 7 and path["t"][0] == -0.5 and path["t"][-1] == 1.5
    slerp = client.post("/api/interpolate", json={"a": 0, "b": 5, "steps": 5, "method": "slerp"})
    assert slerp.status_code == 200
    one, again = (client.post("/api/sample", json={"n": 3, "seed": 9}).json() for _ in range(2))
    assert one == again and len(one["images"]) == 3
    thumbs = client.get("/api/thumbnails", params={"start": 290, "count": 20}).json()
    assert thumbs["indices"] == list(range(290, 297))  # stops at the end of the 297 test images


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "fragment"),
    [
        ("post", "/api/decode", {"z": [1.0, 2.0]}, 422, "has 2 numbers"),
        ("post", "/api/decode", {"z": "abc"}, 422, "z:"),
        ("post", "/api/decode", {}, 422, "z: Field required"),
        ("post", "/api/encode", {"index": 297}, 422, "out of range"),
        ("post", "/api/encode", {"index": -1}, 422, "out of range"),
        ("post", "/api/interpolate", {"a": 0, "b": 1, "steps": 100000}, 422, "steps"),
        ("post", "/api/interpolate", {"a": 0, "b": 1, "method": "cubic"}, 422, "method"),
        ("post", "/api/sample", {"n": 0}, 422, "n:"),
        ("post", "/api/sample", {"n": 10**6}, 422, "n:"),
        ("get", "/api/thumbnails?count=100000", None, 422, "count"),
        ("get", "/api/thumbnails?start=5000", None, 422, "out of range"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    client: TestClient, method: str, path: str, payload: dict[str, object] | None, status: int, fragment: str
) -> None:
    response = client.post(path, json=payload) if method == "post" else client.get(path)
    assert response.status_code == status
    assert fragment in response.json()["detail"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(client: TestClient, value: str) -> None:
    body = '{"z": [0, 0, 0, ' + value + "]}"
    response = client.post("/api/decode", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "finite" in response.json()["detail"]


def test_oversize_body_is_refused(client: TestClient) -> None:
    response = client.post("/api/decode", json={"z": [0.0] * 40000})
    assert response.status_code == 413


def test_openapi_documents_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/decode", "/api/encode", "/api/interpolate", "/api/sample"} <= set(paths)


# ---- a real browser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(explorer: FastAPI) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(explorer, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def chromium_or_fail() -> str:
    """CI must run the browser test (.ci/run installs Chromium); elsewhere a missing Chromium is said, not hidden."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI always runs this test")
    return ""


def test_page_in_a_real_browser(server_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = chromium_or_fail()
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=flags)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server_url)
        decoded = page.locator("#decoded")
        expect(decoded).to_have_attribute("src", re.compile("^data:image/png"))
        first = decoded.get_attribute("src")
        sliders = page.locator("#sliders input[type=range]")
        expect(sliders).to_have_count(3)
        sliders.nth(0).fill("2.5")  # move a slider: the decoded image must change
        expect(decoded).not_to_have_attribute("src", first or "")
        thumbnails = page.locator("#thumbnails img")
        expect(thumbnails).to_have_count(24)
        thumbnails.nth(0).click()
        thumbnails.nth(5).click()
        scrub, interpolated = page.locator("#scrub"), page.locator("#interp-image")
        expect(scrub).to_be_enabled()
        scrub.fill("0")
        start = interpolated.get_attribute("src")
        scrub.fill("40")  # scrub to the far end: past B
        expect(interpolated).not_to_have_attribute("src", start or "")
        expect(page.locator("#scrub-label")).to_contain_text("extrapolating past B")
        page.locator("#sample-prior").click()
        expect(page.locator("#status")).to_contain_text("prior sample")
        page.locator("#random-test").click()
        expect(page.locator("#status")).to_contain_text("test image")
        page.locator("#pad").hover(position={"x": 200, "y": 20})
        expect(page.locator("#status")).to_contain_text("pad:")
        page.screenshot(path=str(tmp_path / "explorer.png"))
        browser.close()
    assert errors == []
