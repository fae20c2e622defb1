"""The explorer's JSON API and static pages. Every input is validated against bounds that /openapi.json states: a bad
request gets 422 (413 when it is too large, 400 for a Host the server does not answer to), never a 500.

The model runs in a small dedicated thread pool, so many clients queue for `workers` threads instead of each
starting its own torch threads."""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations at runtime, and the
# request models are local to `add_api` because their bounds depend on the model and its test split.

import asyncio
import base64
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import torch
from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import Field
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from torch import Tensor

from vaekit.analysis.evaluate import image_terms, kl_report
from vaekit.analysis.latent import interpolate
from vaekit.analysis.scores import score_columns
from vaekit.config import DataConfig
from vaekit.data.sources import Split, to_float
from vaekit.errors import VaekitError
from vaekit.model.vae import VAE
from vaekit.web.guards import LOOPBACK_HOSTS, LimitBody, http_error, validation_error
from vaekit.web.schemas import (
    MAX_IMAGES,
    Z_LIMIT,
    Coordinate,
    Decoded,
    Encoded,
    Info,
    Integer,
    Interpolation,
    Pixel,
    Samples,
    Scored,
    StrictBody,
    Thumbnails,
    problem_responses,
)

STATIC = Path(__file__).parent / "static"
T = TypeVar("T")


class ModelThreads:
    """The few threads that run the model. Concurrent requests queue here rather than each getting a thread of its
    own (and torch's intra-op threads with it); the threads exit when the app is garbage collected."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise VaekitError(f"workers = {workers}: the explorer needs at least 1 thread to run the model")
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaekit-model")

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args)


def png_data_url(image: Tensor) -> str:
    """(C, H, W) in [0, 1] → a PNG data URL at the image's own size (the page scales it without smoothing)."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    picture = Image.fromarray(pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def create_app(
    model: VAE,
    test: Split,
    name: str,
    class_names: list[str] | None = None,
    top_k: int = 8,
    hosts: Sequence[str] = LOOPBACK_HOSTS,
    workers: int = 2,
    data: DataConfig | None = None,
) -> FastAPI:
    """The explorer for one model and its test split.

    hosts: the Host names it answers (`guards.allowed_hosts` builds them); any other gets 400, so a page on another
    site cannot reach it through DNS rebinding. workers: threads that run the model. data: the run's data settings,
    so that an image scored through /api/score is scored as the run scores its own (binarized or dequantized)."""
    threads = ModelThreads(workers)
    model = model.eval()
    kl = kl_report(model, test.x)
    info = Info(
        name=name, latent_dim=model.latent_dim, kind=model.config.kind, image_shape=list(model.input_shape),
        test_images=len(test), top_dims=kl.order[: min(top_k, model.latent_dim)], kl_per_dim=kl.kl_per_dim,
        active_units=kl.active_units, class_names=class_names,
    )  # fmt: skip
    # /docs and /redoc would load their scripts from a CDN; our /docs page renders /openapi.json itself.
    description = f"Explore the latent space of {name}."
    app = FastAPI(title="vaekit latent explorer", description=description, docs_url=None, redoc_url=None)
    app.add_middleware(LimitBody)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))  # outermost: checked before the body
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    add_api(app, model, test, info, threads)
    add_scoring(app, model, test, threads, data)
    return app


def add_api(app: FastAPI, model: VAE, test: Split, info: Info, threads: ModelThreads) -> None:
    """The JSON endpoints; everything that touches the model or encodes a PNG runs on `threads`."""
    last, dim = len(test) - 1, model.latent_dim
    index_help = f"Index of a test image, 0 to {last}."

    class DecodeRequest(StrictBody):
        z: list[Coordinate] = Field(
            min_length=dim, max_length=dim, description=f"A latent vector: {dim} numbers, each within ±{Z_LIMIT:g}."
        )

    class EncodeRequest(StrictBody):
        index: Integer = Field(ge=0, le=last, description=index_help)

    class InterpolateRequest(StrictBody):
        a: Integer = Field(ge=0, le=last, description=f"The first endpoint. {index_help}")
        b: Integer = Field(ge=0, le=last, description=f"The second endpoint. {index_help}")
        steps: Integer = Field(17, ge=2, le=MAX_IMAGES, description="Points along the path.")
        extend: float = Field(0.5, ge=0.0, le=2.0, description="Extrapolate past both ends by this fraction.")
        method: Literal["linear", "slerp"] = "linear"

    class SampleRequest(StrictBody):
        n: Integer = Field(1, ge=1, le=MAX_IMAGES, description="Number of prior samples.")
        seed: Integer = Field(0, ge=0, le=2**31 - 1)

    @torch.no_grad()
    def decode(z: Tensor) -> list[str]:
        return [png_data_url(image) for image in model.decode(z.to(model.device)).mean]

    @torch.no_grad()
    def encode(indices: list[int]) -> Tensor:
        return model.encode(to_float(test.x[indices]).to(model.device)).mean.cpu()

    def encoded(index: int) -> Encoded:
        z = encode([index])
        label = int(test.y[index]) if test.y is not None else None
        return Encoded(index=index, z=z[0].tolist(), image=png_data_url(to_float(test.x[index])),
                       reconstruction=decode(z)[0], label=label)  # fmt: skip

    def interpolated(request: InterpolateRequest) -> Interpolation:
        z = encode([request.a, request.b])
        path = interpolate(z[0], z[1], request.steps, request.extend, request.method)
        t = torch.linspace(-request.extend, 1 + request.extend, request.steps)
        return Interpolation(t=t.tolist(), z=path.tolist(), images=decode(path))

    def sampled(n: int, seed: int) -> Samples:
        z = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
        return Samples(z=z.tolist(), images=decode(z))

    def strip(start: int, count: int) -> Thumbnails:
        indices = list(range(start, min(start + count, len(test))))
        labels = test.y[indices].tolist() if test.y is not None else None
        return Thumbnails(indices=indices, labels=labels, images=[png_data_url(to_float(test.x[i])) for i in indices])

    body_errors, query_errors = problem_responses(body=True), problem_responses(body=False)

    @app.get("/api/info", summary="The model, its data, and its latent dimensions ordered by KL")
    async def get_info() -> Info:
        return info

    @app.post("/api/decode", summary="Decode a latent vector into an image", responses=body_errors)
    async def decode_one(request: DecodeRequest) -> Decoded:
        images = await threads.run(decode, torch.tensor([request.z]))
        return Decoded(image=images[0])

    @app.post(
        "/api/encode",
        summary="Posterior mean of a test image, with the image and its reconstruction",
        responses=body_errors,
    )
    async def encode_one(request: EncodeRequest) -> Encoded:
        return await threads.run(encoded, request.index)

    @app.post("/api/interpolate", summary="Decoded path between two test images, past both ends", responses=body_errors)
    async def interpolate_pair(request: InterpolateRequest) -> Interpolation:
        return await threads.run(interpolated, request)

    @app.post("/api/sample", summary="Decoded draws from the model's own prior", responses=body_errors)
    async def sample(request: SampleRequest) -> Samples:
        return await threads.run(sampled, request.n, request.seed)

    @app.get("/api/thumbnails", summary="Test images, for picking endpoints", responses=query_errors)
    async def thumbnails(
        start: Annotated[int, Query(ge=0, le=last, description=f"The first image. {index_help}")] = 0,
        count: Annotated[int, Query(ge=1, le=MAX_IMAGES, description="At most this many, fewer at the end.")] = 24,
    ) -> Thumbnails:
        return await threads.run(strip, start, count)


SCORE_K = 100  # importance samples for an image scored in the explorer
REFERENCE_IMAGES = 500  # test images whose scores place an uploaded image among them


def add_scoring(app: FastAPI, model: VAE, test: Split, threads: ModelThreads, data: DataConfig | None) -> None:
    """POST /api/score: one image's scores under the run (the NLL bound, the −ELBO, a hierarchy's LLR>k, the
    reconstruction error) and where its NLL falls among the test split's, for a picture drawn or uploaded in the
    page. The reference scores are computed once, on first use, with the same k and seeds."""
    channels, height, width = model.input_shape
    size = channels * height * width
    reference: dict[str, Any] = {}

    class ScoreRequest(StrictBody):
        pixels: list[Pixel] = Field(
            min_length=size,
            max_length=size,
            description=f"The image's {size} grey levels (0 to 255), channel by channel, row by row: {channels}x"
            f"{height}x{width}.",
        )

    def scores(x: Tensor) -> dict[str, Any]:
        terms = image_terms(model, x, SCORE_K, 0, data)
        return score_columns(terms, size)

    def scored(pixels: list[int]) -> Scored:
        if not reference:
            reference.update(scores(test.x[:REFERENCE_IMAGES]))
        image = torch.tensor(pixels, dtype=torch.uint8).view(1, channels, height, width)
        found = scores(image)
        key = "nll" if "nll" in found else "mse"
        unlikelier = float((reference[key] < found[key][0]).mean())
        value = {name: float(found[name][0]) for name in found}
        with torch.no_grad():
            reconstruction = model.reconstruct(to_float(image).to(model.device))[0]
        return Scored(
            nll=value.get("nll"), bits_per_dim=value.get("bits_per_dim"), neg_elbo=value.get("neg_elbo"),
            mse=value["mse"], llr={name: v for name, v in value.items() if name.startswith("llr>")},
            unlikelier_than=unlikelier, reference_images=len(reference[key]), k=SCORE_K,
            image=png_data_url(to_float(image[0])), reconstruction=png_data_url(reconstruction),
        )  # fmt: skip

    @app.post(
        "/api/score",
        summary="Score an image under the run: its NLL, −ELBO, LLR>k and reconstruction error, against the test split",
        responses=problem_responses(body=True),
    )
    async def score_one(request: ScoreRequest) -> Scored:
        return await threads.run(scored, request.pixels)
