"""ONNX export of a trained run: its encoder and decoder as two graphs with a dynamic batch dimension, so the model runs
wherever ONNX Runtime does, without vaekit or PyTorch.

encoder.onnx maps x (batch, C, H, W) to the posterior's parameters; decoder.onnx maps z (batch, D) to the likelihood's
parameters as the likelihood head emits them; a conditional run takes an int64 `label` (batch,) into both. The graphs
are traced through the model's own `encode` and `decode`, so they compute what vaekit computes. export.json says what
every input and output is, and how outputs become pictures, for someone who has only these files.

The exporter is torch.onnx's tracing one (dynamo=False), at opset 18: torch.export cannot capture the conditional
model's label check, which reads the labels' values, while tracing runs the check once on the example labels and
records only the tensor operations. It gives every kind exported here a dynamic batch axis.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.errors import VaekitError
from vaekit.files import DEFAULT_MODE
from vaekit.model.posteriors import DiagonalGaussian, PointMass, RelaxedCategorical
from vaekit.model.vae import VAE
from vaekit.parts import PRIORS, Exported, Output
from vaekit.small_files import read_json
from vaekit.training.runs import Run, load_run, read_config
from vaekit.version import __version__

FORMATS = ("onnx",)
OPSET = 18
ONNX_MISSING = "ONNX export needs the onnx package: pip install 'vaekit[onnx]'"
FILES = ("encoder.onnx", "decoder.onnx", "config.json", "export.json")
EXAMPLE_BATCH = 2  # a size the tracer cannot mistake for a broadcast (1) or an empty batch (0)


@dataclass(frozen=True)
class Latents:
    """What export.json says of a posterior family: the encoder's outputs, the code the decoder reads, the prior."""

    outputs: tuple[Output, ...]
    code: str
    prior: str


# Each posterior object the model may return, by class; a likelihood (and a posterior class with no export) says its
# own (`export`). The model itself decides which it returns; nothing here asks the config.
LATENTS: dict[type, Latents] = {
    DiagonalGaussian: Latents(
        (
            Output("mu", "mu", "mean of the posterior q(z|x) = N(mu, diag(exp(log_var))); pictures decode mu"),
            Output(
                "log_var",
                "logvar",
                "log-variance of q(z|x), clamped to [-30, 20]; a sample is z = mu + exp(log_var / 2) * eps, "
                "eps ~ N(0, I)",
            ),
        ),
        code="latent codes: the encoder's mu, a sample of q(z|x), or a draw from the prior",
        prior="N(0, I): z = eps, eps ~ N(0, I), decodes to new images",
    ),
    PointMass: Latents(
        (Output("code", "code", "the autoencoder's code, a point with no noise: decode it as it is"),),
        code="the encoder's code",
        prior="none: an autoencoder's codes have no prior to draw new images from",
    ),
    RelaxedCategorical: Latents(
        (
            Output(
                "logits",
                "logits",
                "(batch, V, K) logits of V categorical variables of K classes, probabilities softmax(logits) over K",
            ),
        ),
        code="one-hot codes (batch, V*K): each variable's class (the argmax of its logits, or a Gumbel-max sample) as "
        "a one-hot row of K, the V rows flattened",
        prior="uniform: each of the V variables one-hot at a class drawn uniformly from K",
    ),
}


class Parameters(nn.Module):
    """One path of the model, `encode` or `decode`, returning its distribution's parameters as tensors: the thin
    module the exporter traces, so that the graph is the model's own computation."""

    def __init__(self, model: VAE, path: str, outputs: tuple[Output, ...]) -> None:
        super().__init__()
        self.model = model
        self.path = path
        self.outputs = outputs

    def forward(self, inputs: Tensor, label: Tensor | None = None) -> tuple[Tensor, ...]:
        distribution = getattr(self.model, self.path)(inputs, label)
        return tuple(getattr(distribution, output.attribute) for output in self.outputs)


def export_run(run: str | Path, out: str | Path | None = None, fmt: str = "onnx") -> Path:
    """Export a run's model into the folder `out` (default RUN/onnx): encoder.onnx, decoder.onnx, config.json and
    export.json; returns the folder.

    The files are written into a temporary folder beside `out`, which is renamed into place: `out` is never half
    written. An empty folder or an earlier export there is replaced; any other existing `out` is refused, so no run
    and no user's file is overwritten."""
    if fmt not in FORMATS:
        raise VaekitError(f"export format {fmt!r} is not supported: use --format onnx")
    check_onnx()
    loaded = load_run(run, "cpu")
    target = Path(out) if out is not None else loaded.path / "onnx"
    check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not `.tmp`: a run folder's `.*.tmp` are the trainer's stale files, which it unlinks when it takes the lock.
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        write_export(loaded, temp)
        replace_folder(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


def check_onnx() -> None:
    """onnx is an optional extra: the modules that use it import it only once this check has passed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise VaekitError(ONNX_MISSING) from None


def check_target(target: Path) -> None:
    """Only an empty folder, or one an earlier export wrote, may be replaced: an `--out` that names a run, a user's
    own files of the same names, a symbolic link, or anything else keeps its files."""
    if not os.path.lexists(target) or (not target.is_symlink() and target.is_dir() and not os.listdir(target)):
        return
    if target.is_symlink() or not target.is_dir() or not set(os.listdir(target)) <= set(FILES) or not is_export(target):
        raise VaekitError(f"{target} exists and is not an earlier vaekit export: choose another --out, or remove it")


def is_export(folder: Path) -> bool:
    """Whether `folder` holds what `write_export` writes: an export.json that describes an ONNX export by vaekit, and
    a config.json that is a valid vaekit config."""
    try:
        described = read_json(folder / "export.json", "")
        read_config(folder)
    except (OSError, ValueError, VaekitError):
        return False
    versions = described.get("versions") if isinstance(described, dict) else None
    return described.get("format") == "onnx" and isinstance(versions, dict) and "vaekit" in versions


def write_export(loaded: Run, folder: Path) -> None:
    """The four files of an export, written into `folder` and flushed to disk."""
    model = loaded.model.eval()
    x = torch.rand(EXAMPLE_BATCH, *model.input_shape, generator=torch.Generator().manual_seed(0))
    label = torch.arange(EXAMPLE_BATCH) % model.classes if model.conditional else None
    with torch.no_grad():
        posterior = model.encode(x, label)
        likelihood = model.decode(posterior.mode, label)
    latents, outputs = LATENTS.get(type(posterior)), exported(likelihood, "likelihood")
    if latents is None:
        exported(posterior, "posterior")  # its one-line reason
        raise VaekitError(f"ONNX export does not cover the {type(posterior).__name__} posterior: export another run")
    encoder = export_graph(Parameters(model, "encode", latents.outputs), {"x": x}, label, folder / "encoder.onnx")
    decoder = export_graph(Parameters(model, "decode", outputs), {"z": posterior.mode}, label, folder / "decoder.onnx")
    write_json(folder / "config.json", loaded.config.to_dict())
    write_json(folder / "export.json", describe(loaded, latents, outputs, encoder, decoder))
    for path in folder.iterdir():  # every file's bytes on disk before the rename makes them visible
        os.chmod(path, DEFAULT_MODE)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())


def exported(distribution: object, what: str) -> tuple[Output, ...]:
    """The graph outputs a distribution's class lists (`export`), or its one-line reason for having none."""
    found: Exported | None = getattr(type(distribution), "export", None)
    if found is None:
        raise VaekitError(f"ONNX export does not cover the {type(distribution).__name__} {what}: export another run")
    if isinstance(found, str):
        raise VaekitError(found)
    return found


def export_graph(
    module: Parameters, inputs: dict[str, Tensor], label: Tensor | None, path: Path
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Trace `module` on example inputs into the ONNX file `path`: the first axis of every input and output is named
    `batch` and dynamic, the others are fixed. Returns the example inputs and outputs, by name."""
    import onnx

    if label is not None:
        inputs = {**inputs, "label": label}
    with torch.no_grad():
        outputs = dict(zip([o.name for o in module.outputs], module(*inputs.values()), strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the label check, and on its own deprecation
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={name: {0: "batch"} for name in [*inputs, *outputs]},
        )
    graph = onnx.load(str(path))
    tensors = {**inputs, **outputs}
    for value in [*graph.graph.input, *graph.graph.output]:  # the tracer leaves some fixed sizes symbolic
        dims = value.type.tensor_type.shape.dim
        for axis, size in enumerate(tensors[value.name].shape[1:], start=1):
            dims[axis].dim_value = size
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return inputs, outputs


def describe(
    loaded: Run,
    latents: Latents,
    likelihood: tuple[Output, ...],
    encoder: tuple[dict[str, Tensor], dict[str, Tensor]],
    decoder: tuple[dict[str, Tensor], dict[str, Tensor]],
) -> dict[str, Any]:
    """export.json: each graph's inputs and outputs with their shapes, dtypes and meaning, and the prior."""
    config = loaded.config
    x = "images as the encoder reads them: pixel values / 255, in [0, 1]"
    if config.data.binarize != "none":
        x += f"; this run was trained on binarized images (binarize: {config.data.binarize}), pixels 0 or 1"
    inputs = {
        "x": x,
        "z": latents.code,
        "label": f"class labels in 0..{config.model.classes - 1}, one per row (the run was trained with --condition "
        "label); the graphs do not check the range",
    }
    prior = PRIORS[config.model.prior].export or latents.prior

    def graph(file: str, tensors: tuple[dict[str, Tensor], dict[str, Tensor]], outputs: tuple[Output, ...]) -> Any:
        meanings = {**inputs, **{output.name: output.meaning for output in outputs}}
        given, made = tensors
        return {
            "file": file,
            "inputs": [spec(name, tensor, meanings[name]) for name, tensor in given.items()],
            "outputs": [spec(name, tensor, meanings[name]) for name, tensor in made.items()],
        }

    return {
        "format": "onnx",
        "opset": OPSET,
        "batch": "the first axis of every input and output is dynamic: any number of rows",
        "encoder": graph("encoder.onnx", encoder, latents.outputs),
        "decoder": graph("decoder.onnx", decoder, likelihood),
        "likelihood": config.model.likelihood,
        "prior": prior,
        "versions": {"vaekit": __version__, "torch": torch.__version__},
    }


def spec(name: str, tensor: Tensor, meaning: str) -> dict[str, Any]:
    return {
        "name": name,
        "shape": ["batch", *tensor.shape[1:]],
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "meaning": meaning,
    }


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def replace_folder(temp: Path, target: Path) -> None:
    """Rename the finished `temp` to `target`. An earlier export there is moved aside first and removed after: a
    crash in between leaves it in a hidden folder beside `target`, never a mixture of the two."""
    os.chmod(temp, DEFAULT_MODE | (DEFAULT_MODE & 0o444) >> 2)  # mkdtemp's 0700 made what mkdir would have made
    if not target.exists():
        os.replace(temp, target)
        return
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    os.replace(target, aside / target.name)
    os.replace(temp, target)
    shutil.rmtree(aside, ignore_errors=True)
