"""`vaekit serve`: the JSON API's answers and its validation (never a 500), what it refuses (foreign Host, oversize
bodies however they are sent), its schema (fuzzed by schemathesis), its behaviour under load, and the pages in a
real Chromium."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import tiny_config
from vaekit import load_run, train
from vaekit.cli.main import app as cli_app
from vaekit.data.sources import Split, load_dataset
from vaekit.errors import VaekitError
from vaekit.model.vae import VAE
from vaekit.web.app import create_app
from vaekit.web.guards import MAX_BODY_BYTES, allowed_hosts
from vaekit.web.server import server_config

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[VAE, Split]:
    out = tmp_path_factory.mktemp("web") / "run"
    train(tiny_config(epochs=2), out)
    run = load_run(out)
    return run.model, load_dataset(run.config.data).test


@pytest.fixture(scope="module")
def explorer(trained: tuple[VAE, Split]) -> FastAPI:
    return create_app(*trained, "digits run", top_k=3)


@pytest.fixture(scope="module")
def client(explorer: FastAPI) -> TestClient:
    return TestClient(explorer, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)


def png_size(data_url: str) -> tuple[int, int]:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).size


def test_the_test_client_runs_on_the_http_client_starlette_asks_for() -> None:
    """starlette's TestClient deprecates httpx for httpx2: the dev extra brings httpx2, so importing it warns not."""
    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(re.match(r"httpx2\b", requirement) for requirement in extras["dev"])
    command = [
        sys.executable,
        "-W",
        "error::UserWarning",
        "-W",
        "error::DeprecationWarning",
        "-c",
        "import fastapi.testclient",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


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


def test_score_places_an_image_among_the_test_images(trained: tuple[VAE, Split], client: TestClient) -> None:
    """A test image scores like the test images; noise is less likely than every one of them."""
    _, test = trained
    own = client.post("/api/score", json={"pixels": test.x[0].flatten().tolist()})
    assert own.status_code == 200, own.text
    scored = own.json()
    assert scored["reference_images"] == 297 and scored["k"] == 100 and scored["llr"] == {}
    assert 0.02 < scored["unlikelier_than"] < 0.98 and scored["nll"] <= scored["neg_elbo"] + 1.0
    assert png_size(scored["image"]) == (8, 8) and png_size(scored["reconstruction"]) == (8, 8)
    noise = np.random.default_rng(0).integers(0, 256, 64).tolist()
    assert client.post("/api/score", json={"pixels": noise}).json()["unlikelier_than"] == 1.0


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "fragment"),
    [
        ("post", "/api/decode", {"z": [1.0, 2.0]}, 422, "z: List should have at least 4 items"),
        ("post", "/api/decode", {"z": [0.0] * 5}, 422, "z: List should have at most 4 items"),
        ("post", "/api/decode", {"z": "abc"}, 422, "z:"),
        ("post", "/api/decode", {}, 422, "z: Field required"),
        ("post", "/api/decode", {"z": [1e308, 0, 0, 0]}, 422, "z.0: Input should be less than or equal to 1000000"),
        ("post", "/api/decode", {"z": [0, 0, 0, -3e38]}, 422, "z.3: Input should be greater than or equal to -1000000"),
        ("post", "/api/decode", {"z": [0, 0, 0, 0], "w": 1}, 422, "w: Extra inputs are not permitted"),
        ("post", "/api/encode", {"index": 297}, 422, "index: Input should be less than or equal to 296"),
        ("post", "/api/encode", {"index": -1}, 422, "index: Input should be greater than or equal to 0"),
        ("post", "/api/encode", {"index": "3"}, 422, "index: Input should be a valid integer"),
        ("post", "/api/encode", {"index": True}, 422, "index: Input should be a valid integer"),
        ("post", "/api/encode", {"index": 2.5}, 422, "index: Input should be a valid integer"),
        ("post", "/api/interpolate", {"a": 0, "b": 1, "steps": 100000}, 422, "steps"),
        ("post", "/api/interpolate", {"a": 0, "b": 1, "method": "cubic"}, 422, "method"),
        ("post", "/api/interpolate", {"a": 0, "b": 300}, 422, "b: Input should be less than or equal to 296"),
        ("post", "/api/sample", {"n": 0}, 422, "n:"),
        ("post", "/api/sample", {"n": 10**6}, 422, "n:"),
        ("post", "/api/score", {"pixels": [0] * 63}, 422, "pixels: List should have at least 64 items"),
        (
            "post",
            "/api/score",
            {"pixels": [0] * 63 + [256]},
            422,
            "pixels.63: Input should be less than or equal to 255",
        ),
        (
            "post",
            "/api/score",
            {"pixels": [0] * 63 + [-1]},
            422,
            "pixels.63: Input should be greater than or equal to 0",
        ),
        ("post", "/api/score", {"pixels": [0] * 63 + ["9"]}, 422, "pixels.63: Input should be a valid integer"),
        ("get", "/api/thumbnails?count=100000", None, 422, "count"),
        ("get", "/api/thumbnails?start=5000", None, 422, "start: Input should be less than or equal to 296"),
    ],
)
def test_bad_requests_get_a_clear_4xx(
    client: TestClient, method: str, path: str, payload: dict[str, object] | None, status: int, fragment: str
) -> None:
    response = client.post(path, json=payload) if method == "post" else client.get(path)
    assert response.status_code == status
    assert fragment in response.json()["detail"]


def test_integral_floats_are_integers(client: TestClient) -> None:
    """JSON Schema counts 3.0 as an integer, so a schema-valid request must not be refused for it."""
    assert client.post("/api/encode", json={"index": 3.0}).json()["index"] == 3


def test_a_body_that_is_not_json_is_named(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    broken = client.post("/api/decode", content=b'{"z": [0, 0', headers=headers)
    assert broken.status_code == 422 and broken.json()["detail"].startswith("body: not JSON")
    binary = client.post("/api/decode", content=b"\x01\xff\xfe", headers=headers)
    assert binary.status_code == 400 and "not UTF-8 JSON" in binary.json()["detail"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(client: TestClient, value: str) -> None:
    body = '{"z": [0, 0, 0, ' + value + "]}"
    response = client.post("/api/decode", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "finite" in response.json()["detail"]


def test_oversize_body_is_refused(client: TestClient) -> None:
    response = client.post("/api/decode", json={"z": [0.0] * 40000})
    assert response.status_code == 413 and "send at most 65536" in response.json()["detail"]


@pytest.mark.parametrize(
    ("host", "status"),
    [("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200), ("LOCALHOST", 200),
     ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400), ("", 400)],
)  # fmt: skip
def test_only_the_served_host_names_are_answered(client: TestClient, host: str, status: int) -> None:
    """DNS rebinding points a foreign name at 127.0.0.1: the browser then sends that name as Host."""
    for path in ("/api/thumbnails", "/api/info", "/", "/openapi.json"):
        response = client.get(path, headers={"host": host})
        assert response.status_code == status
        if status == 400:
            assert response.text == "Invalid host header"  # nothing of the model or its data
    posted = client.post("/api/decode", json={"z": [0, 0, 0, 0]}, headers={"host": host})
    assert posted.status_code == status


def test_allowed_hosts_add_the_bound_name_and_refuse_what_cannot_match() -> None:
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts("0.0.0.0", ["Box.local", "10.0.0.5", "*.lab.example", "fe80::1"]) == [
        "127.0.0.1", "localhost", "[::1]", "box.local", "10.0.0.5", "*.lab.example", "[fe80::1]"
    ]  # fmt: skip
    assert allowed_hosts("192.168.1.5") == ["127.0.0.1", "localhost", "[::1]", "192.168.1.5"]
    for bad in ("box.local:8000", "http://box.local", "a*b", "*", ""):
        if bad == "*":
            assert allowed_hosts("127.0.0.1", [bad])[-1] == "*"  # explicit opt-out stays possible
            continue
        with pytest.raises(VaekitError, match="give a host name or address without scheme or port"):
            allowed_hosts("127.0.0.1", [bad])


def test_serve_refuses_an_allowed_host_with_a_port(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["serve", str(tmp_path), "--allow-host", "box.local:8000"])
    assert result.exit_code == 2
    assert "host 'box.local:8000' cannot be allowed: give a host name or address without scheme or port" in (
        result.output
    )
    assert "Traceback" not in result.output


def test_model_work_never_exceeds_the_worker_pool(trained: tuple[VAE, Split], monkeypatch: pytest.MonkeyPatch) -> None:
    """32 concurrent requests, 2 workers: at most 2 decodes at a time, always on the same 2 threads."""
    model, test = trained
    lock, active, peak, threads = threading.Lock(), [0], [0], set()
    decode = model.decode

    def counting_decode(z: object) -> object:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.01)  # hold the worker long enough for the others to pile up
        try:
            return decode(z)  # type: ignore[arg-type]
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(model, "decode", counting_decode)
    app = create_app(model, test, "pool", workers=2)

    async def burst() -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            requests = [client.post("/api/decode", json={"z": [i / 10, 0, 0, 0]}) for i in range(32)]
            return [response.status_code for response in await asyncio.gather(*requests)]

    assert asyncio.run(burst()) == [200] * 32
    assert peak[0] == 2 and len(threads) == 2  # the pool was used in parallel, and never beyond its size


def test_openapi_states_the_bounds_the_server_enforces(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/decode", "/api/encode", "/api/interpolate", "/api/sample", "/api/thumbnails"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    z = schemas["DecodeRequest"]["properties"]["z"]
    assert z["minItems"] == z["maxItems"] == 4 and z["items"]["maximum"] == 1e6
    assert schemas["EncodeRequest"]["properties"]["index"]["maximum"] == 296
    start = next(p for p in spec["paths"]["/api/thumbnails"]["get"]["parameters"] if p["name"] == "start")
    assert start["schema"]["maximum"] == 296
    errors = spec["paths"]["/api/decode"]["post"]["responses"]
    assert errors["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
    assert "HTTPValidationError" not in schemas


def test_docs_load_nothing_from_elsewhere(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert not re.search(r"(src|href)=\"(https?:)?//", docs.text)
    assert client.get("/redoc").status_code == 404


# ---- a real browser -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url(explorer: FastAPI) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(explorer, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


def chunked_post(url: str, path: str, body: bytes, chunk: int = 8192) -> tuple[int, bytes]:
    """POST `body` with Transfer-Encoding: chunked (no Content-Length) over a raw socket; (status, response body)."""
    host, port = url.removeprefix("http://").strip("/").split(":")
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(head.encode() + encoded)
        answer = b""
        while data := connection.recv(65536):
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def test_chunked_upload_is_counted_not_trusted(server_url: str) -> None:
    """Without Content-Length the bytes received are what counts: over the limit is 413, under it is served."""
    padding = b" " * (MAX_BODY_BYTES + 1000)  # valid JSON once parsed, so only the size can refuse it
    status, body = chunked_post(server_url, "/api/decode", b'{"z": [0, 0, 0, 0]}' + padding)
    assert status == 413 and b"request body over 65536 bytes" in body
    status, body = chunked_post(server_url, "/api/decode", b'{"z": [0, 0, 0, 0]}' + b" " * 30000)
    assert status == 200 and b"data:image/png;base64," in body


@pytest.fixture(scope="module")
def api_schema(server_url: str) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(server_url + "openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def _node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 renames the test per operation through `node._nodeid`, which pytest 9.2 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_api_keeps_its_schema(case: schemathesis.Case[Any], _node_id: None) -> None:
    """Every check schemathesis has: no 5xx, documented status codes and bodies, schema-valid requests accepted,
    schema-invalid ones refused."""
    case.call_and_validate()


@pytest.mark.slow
def test_load_from_eight_clients(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """1,000 decodes from 8 concurrent clients over real sockets: no errors; prints p95 and the rate."""
    bodies = [{"z": [(i % 61) / 10 - 3, (i % 7) / 3, -1.0, 0.5]} for i in range(1000)]

    def client_share(share: list[dict[str, list[float]]]) -> list[tuple[int, float]]:
        results = []
        with httpx2.Client(base_url=server_url) as http:
            for body in share:
                start = time.perf_counter()
                results.append((http.post("/api/decode", json=body).status_code, time.perf_counter() - start))
        return results

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as clients:
        shares = list(clients.map(client_share, [bodies[i::8] for i in range(8)]))
    elapsed = time.perf_counter() - started
    results = [result for share in shares for result in share]
    latencies = sorted(seconds * 1000 for _, seconds in results)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    errors = sum(status != 200 for status, _ in results)
    with capsys.disabled():  # shown in every run, not only when the test fails
        print(f"\n1000 POST /api/decode from 8 clients: errors {errors}, p50 {statistics.median(latencies):.1f} ms, "
              f"p95 {p95:.1f} ms, {len(results) / elapsed:.0f} requests/s")  # fmt: skip
    assert len(results) == 1000 and errors == 0


def chromium_or_fail() -> str:
    """CI must run the browser test (.ci/run installs Chromium); elsewhere a missing Chromium is said, not hidden."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); CI always runs this test")
    return ""


@pytest.mark.slow
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
        slots = "[...document.querySelectorAll('#interp-row img')]"
        loaded = f"{slots}.every(img => img.complete && img.naturalWidth > 0)"  # a broken image has no width
        assert page.evaluate(loaded), "an interpolation slot shows a broken image before any is chosen"
        assert page.evaluate(f"{slots}.every(img => img.classList.contains('empty'))")
        thumbnails.nth(0).click()
        expect(page.locator("#endpoint-a")).not_to_have_class(re.compile("empty"))
        assert page.evaluate(loaded) and page.evaluate(
            "document.getElementById('endpoint-b').classList.contains('empty')"
        )
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
        draw = page.locator("#draw").bounding_box()
        assert draw is not None
        page.mouse.move(draw["x"] + 60, draw["y"] + 40)  # a stroke down the middle, like a digit 1
        page.mouse.down()
        page.mouse.move(draw["x"] + 110, draw["y"] + 190, steps=8)
        page.mouse.up()
        page.locator("#score").click()
        expect(page.locator("#score-result")).to_contain_text("less likely than")
        expect(page.locator("#score-reconstruction")).not_to_have_class(re.compile("empty"))
        page.screenshot(path=str(tmp_path / "explorer.png"))
        browser.close()
    assert errors == []


@pytest.mark.slow
def test_docs_page_works_offline(server_url: str) -> None:
    """/docs renders the API from /openapi.json with every request to anywhere but the server blocked."""
    from playwright.sync_api import Route, expect, sync_playwright

    executable = chromium_or_fail()
    elsewhere: list[str] = []

    def block_elsewhere(route: Route) -> None:
        if route.request.url.startswith(server_url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.route("**/*", block_elsewhere)
        page.goto(server_url + "docs")
        decode = page.locator("#post-api-decode")
        expect(decode).to_contain_text("POST /api/decode")
        expect(decode).to_contain_text("array of number (-1000000 to 1000000) (4 items)")
        expect(page.locator("#post-api-encode")).to_contain_text("integer (0 to 296)")
        expect(page.locator("#get-api-thumbnails")).to_contain_text("start (query)")
        browser.close()
    assert errors == [] and elsewhere == []
