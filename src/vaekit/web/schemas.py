"""The shapes of the explorer's API, so that /openapi.json states what the server enforces and returns.

Bounds that depend on the model (the latent size) and on the test split (the index range) are filled in per app by
`app.create_app`; this module holds what every explorer shares."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_IMAGES = 64  # per response
# The prior is N(0, I): a coordinate of a million standard deviations is already meaningless, and the bound keeps
# the decoder's float32 arithmetic finite (coordinates near the float32 maximum, 3.4e38, decode to NaN pixels).
Z_LIMIT = 1e6
Coordinate = Annotated[float, Field(ge=-Z_LIMIT, le=Z_LIMIT, allow_inf_nan=False)]


def json_integer(value: object) -> object:
    """JSON Schema counts 3.0 as an integer (JSON has one number type), so it is one here too; "3" and true are not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(json_integer)]
# A grey level of an 8-bit image. The bounds sit inside, so that the schema states them as minimum and maximum.
Pixel = Annotated[Annotated[int, Field(ge=0, le=255)], BeforeValidator(json_integer)]
PngDataUrl = Annotated[str, Field(pattern=r"^data:image/png;base64,", description="A PNG at the image's own size.")]


class StrictBody(BaseModel):
    """Request bodies take exactly the documented fields with their JSON types: `"3"` is not an index, `true` is
    not a number, and an unknown field is a mistake worth naming."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Problem(BaseModel):
    """The body of every 4xx answer."""

    detail: str = Field(description="What is wrong with the request and how to fix it.")


def problem_responses(*, body: bool) -> dict[int | str, dict[str, Any]]:
    """The error answers an endpoint documents: 422 always; 400 and 413 where it reads a body."""
    responses: dict[int | str, dict[str, Any]] = {
        422: {"model": Problem, "description": "A parameter is missing, malformed or out of range."}
    }
    if body:
        responses[400] = {"model": Problem, "description": "The request body is not UTF-8 JSON text."}
        responses[413] = {"model": Problem, "description": "The request body is larger than the server reads."}
    return responses


class Info(BaseModel):
    name: str
    latent_dim: int
    kind: str = Field(description="vae, or ae for the deterministic autoencoder baseline.")
    image_shape: list[int] = Field(description="(C, H, W) of the images.")
    test_images: int
    top_dims: list[int] = Field(description="Latent dimensions with the largest KL, largest first.")
    kl_per_dim: list[float] = Field(description="KL(q(z|x) ‖ p(z)) per dimension, nats, test mean.")
    active_units: int
    class_names: list[str] | None


class Decoded(BaseModel):
    image: PngDataUrl


class Encoded(BaseModel):
    index: int
    z: list[float] = Field(description="Posterior mean of the image.")
    image: PngDataUrl
    reconstruction: PngDataUrl = Field(description="The posterior mean decoded.")
    label: int | None


class Interpolation(BaseModel):
    t: list[float] = Field(description="Position of each point: 0 at a, 1 at b, outside [0, 1] when extrapolating.")
    z: list[list[float]]
    images: list[PngDataUrl]


class Samples(BaseModel):
    z: list[list[float]]
    images: list[PngDataUrl]


class Thumbnails(BaseModel):
    indices: list[int]
    labels: list[int] | None
    images: list[PngDataUrl]


class Scored(BaseModel):
    nll: float | None = Field(description="−log p(x) by the importance-weighted bound, nats; null for an autoencoder.")
    bits_per_dim: float | None
    neg_elbo: float | None = Field(description="The negative ELBO, nats; null for an autoencoder.")
    mse: float = Field(description="Squared error per pixel of the reconstruction from the posterior mean.")
    llr: dict[str, float] = Field(description="A hierarchy's LLR>k by name (llr>1, …); empty for other models.")
    unlikelier_than: float | None = Field(
        description="Share of the reference test images whose NLL (or, for an autoencoder, MSE) is lower than this "
        "image's: near 1 for an image unlike the training data."
    )
    reference_images: int
    k: int = Field(description="Importance samples per image.")
    image: PngDataUrl = Field(description="The image as scored.")
    reconstruction: PngDataUrl
