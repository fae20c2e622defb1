"""The explorer's JSON API and static page. Every input is validated: a bad request gets 422 (or 413 when it is
too large) with a message naming the problem, never a 500."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response
from torch import Tensor

from vaekit.data import Split, to_float
from vaekit.evaluate import kl_report
from vaekit.latent import interpolate
from vaekit.model import VAE

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024  # a latent vector of a few thousand numbers fits; anything bigger is refused
MAX_IMAGES = 64  # per response
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class DecodeRequest(BaseModel):
    z: list[FiniteFloat] = Field(description="A latent vector of the model's size.", max_length=4096)


class EncodeRequest(BaseModel):
    index: int = Field(description="Index of a test image.")


class InterpolateRequest(BaseModel):
    a: int = Field(description="Index of the first test image.")
    b: int = Field(description="Index of the second test image.")
    steps: int = Field(17, ge=2, le=MAX_IMAGES, description="Points along the path.")
    extend: FiniteFloat = Field(0.5, ge=0.0, le=2.0, description="Extrapolate past both ends by this fraction.")
    method: Literal["linear", "slerp"] = "linear"


class SampleRequest(BaseModel):
    n: int = Field(1, ge=1, le=MAX_IMAGES, description="Number of prior samples.")
    seed: int = Field(0, ge=0, le=2**31 - 1)


def png_data_url(image: Tensor) -> str:
    """(C, H, W) in [0, 1] → a PNG data URL at the image's own size (the page scales it without smoothing)."""
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    picture = Image.fromarray(pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class LimitBody(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """422 with one readable line per problem, and without echoing the input (NaN cannot even be sent back as JSON)."""
    assert isinstance(error, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in e['loc'] if part != 'body') or 'body'}: {e['msg']}" for e in error.errors()
    ]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


def create_app(model: VAE, test: Split, name: str, class_names: list[str] | None = None, top_k: int = 8) -> FastAPI:
    """The explorer for one model and its test split."""
    model = model.eval()
    kl = kl_report(model, test.x)
    top = kl.order[: min(top_k, model.latent_dim)]
    app = FastAPI(title="vaekit latent explorer", description=f"Explore the latent space of {name}.")
    app.add_middleware(LimitBody)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def test_index(index: int, field: str) -> int:
        if not 0 <= index < len(test):
            raise HTTPException(422, f"{field} = {index} is out of range: test images are 0 to {len(test) - 1}")
        return index

    @torch.no_grad()
    def decode(z: Tensor) -> list[str]:
        return [png_data_url(image) for image in model.decode(z.to(model.device)).mean]

    @torch.no_grad()
    def encode(indices: list[int]) -> Tensor:
        return model.encode(to_float(test.x[indices]).to(model.device)).mean.cpu()

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info", summary="The model, its data, and its latent dimensions ordered by KL")
    def info() -> dict[str, Any]:
        return {
            "name": name, "latent_dim": model.latent_dim, "kind": model.config.kind,
            "image_shape": list(model.input_shape), "test_images": len(test), "top_dims": top,
            "kl_per_dim": kl.kl_per_dim, "active_units": kl.active_units, "class_names": class_names,
        }  # fmt: skip

    @app.post("/api/decode", summary="Decode a latent vector into an image")
    def decode_one(request: DecodeRequest) -> dict[str, Any]:
        if len(request.z) != model.latent_dim:
            raise HTTPException(
                422, f"z has {len(request.z)} numbers; this model's latent vectors have {model.latent_dim}"
            )
        return {"image": decode(torch.tensor([request.z]))[0]}

    @app.post("/api/encode", summary="Posterior mean of a test image, with the image and its reconstruction")
    def encode_one(request: EncodeRequest) -> dict[str, Any]:
        index = test_index(request.index, "index")
        z = encode([index])
        label = int(test.y[index]) if test.y is not None else None
        return {"index": index, "z": z[0].tolist(), "image": png_data_url(to_float(test.x[index])),
                "reconstruction": decode(z)[0], "label": label}  # fmt: skip

    @app.post("/api/interpolate", summary="Decoded path between two test images, extended past both ends")
    def interpolate_pair(request: InterpolateRequest) -> dict[str, Any]:
        z = encode([test_index(request.a, "a"), test_index(request.b, "b")])
        path = interpolate(z[0], z[1], request.steps, request.extend, request.method)
        t = torch.linspace(-request.extend, 1 + request.extend, request.steps)
        return {"t": t.tolist(), "z": path.tolist(), "images": decode(path)}

    @app.post("/api/sample", summary="Decoded draws from the prior N(0, I)")
    def sample(request: SampleRequest) -> dict[str, Any]:
        z = torch.randn(request.n, model.latent_dim, generator=torch.Generator().manual_seed(request.seed))
        return {"z": z.tolist(), "images": decode(z)}

    @app.get("/api/thumbnails", summary="Test images, for picking endpoints")
    def thumbnails(
        start: Annotated[int, Query(ge=0)] = 0, count: Annotated[int, Query(ge=1, le=MAX_IMAGES)] = 24
    ) -> dict[str, Any]:
        test_index(start, "start")
        indices = list(range(start, min(start + count, len(test))))
        labels = test.y[indices].tolist() if test.y is not None else None
        return {"indices": indices, "labels": labels,
                "images": [png_data_url(to_float(test.x[i])) for i in indices]}  # fmt: skip

    return app
