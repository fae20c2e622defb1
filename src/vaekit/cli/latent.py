"""`vaekit latent …`: pictures and measurements of a run's latent space. Thin: each command calls the library."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.table import Table

from vaekit.cli.common import (
    Command,
    DeviceOpt,
    Group,
    RunArg,
    SeedOpt,
    check_index,
    friendly_errors,
    load_test_split,
    load_unconditional,
    out_console,
    output,
)
from vaekit.data.sources import CLASS_NAMES, Split, to_float
from vaekit.errors import VaekitError
from vaekit.files import atomic_write_json
from vaekit.model.posteriors import need_continuous
from vaekit.training.runs import Run

latent_app = typer.Typer(
    cls=Group, help="See and measure the latent space: paths, traversals, grids, smoothness.", no_args_is_help=True
)

OutOpt = Annotated[
    Path | None,
    typer.Option(help="File to write, instead of RUN/latent/<command>.png in the run folder.", show_default=False),
]
MethodOpt = Annotated[str, typer.Option(help="linear | slerp (spherical, along the prior's shell).")]


def _input(spec: str, run: Run, test: Split, flag: str) -> torch.Tensor:
    """A test-image index, or the path of an image file of the model's size: (1, C, H, W)."""
    from vaekit.data.userdata import load_image_like

    if spec.isdigit():
        check_index(int(spec), len(test), flag)
        return test.x[int(spec) : int(spec) + 1]
    shape = tuple(run.config.model.input_shape)
    return load_image_like(Path(spec), (shape[0], shape[1], shape[2]))


def _gaussian_only(run: Run, what: str) -> None:
    need_continuous(run.model.posterior, what)


def _method(method: str) -> str:
    if method not in ("linear", "slerp"):
        raise VaekitError(f"--method {method!r}: use linear or slerp")
    return method


def _written(path: Path) -> None:
    out_console.print(f"wrote {path}")


@latent_app.command(cls=Command)
@friendly_errors
def interpolate(
    run: RunArg,
    a: Annotated[str, typer.Option(help="First input: test-image index or image file.")] = "0",
    b: Annotated[str, typer.Option(help="Second input: test-image index or image file.")] = "1",
    through: Annotated[
        str | None, typer.Option(help="Comma-separated inputs for a chain (overrides --a/--b).", show_default=False)
    ] = None,
    steps: Annotated[int, typer.Option(help="Points per path (per segment for a chain).", min=2, max=256)] = 10,
    extend: Annotated[
        float, typer.Option(help="Extrapolate past both ends by this fraction (not for chains).", min=0.0, max=10.0)
    ] = 0.5,
    method: MethodOpt = "linear",
    gif: Annotated[bool, typer.Option("--gif", help="Write an animated GIF instead of a PNG strip.")] = False,
    out: OutOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Decode the path between inputs' posterior means (linear or spherical), extended past the ends, or a chain.

    Writes RUN/latent/interpolate.png, or .gif with --gif (--out: elsewhere); like every command, it writes into the
    run folder.
    """
    from vaekit.analysis.plots import (
        chain_frames,
        image_grid,
        interpolation_frames,
        interpolation_grid,
        save_gif,
        save_image,
    )

    loaded = load_unconditional(run, device, "vaekit latent interpolate")
    test = load_test_split(loaded.config)
    path = output(out, run, f"latent/interpolate.{'gif' if gif else 'png'}")
    if through:
        inputs = torch.cat([_input(s.strip(), loaded, test, "--through") for s in through.split(",")])
        if len(inputs) < 2:
            raise VaekitError("--through needs at least two inputs, e.g. --through 0,5,9")
        frames = chain_frames(loaded.model, inputs, steps, _method(method))
    else:
        x_a, x_b = _input(a, loaded, test, "--a"), _input(b, loaded, test, "--b")
        if not gif:
            save_image(interpolation_grid(loaded.model, x_a, x_b, steps, extend, _method(method)), path)
            return _written(path)
        frames = interpolation_frames(loaded.model, x_a, x_b, steps, extend, _method(method))[0]
    if gif:
        save_gif(frames, path)
    else:
        save_image(image_grid(frames, columns=min(len(frames), 16)), path)
    _written(path)


@latent_app.command(cls=Command)
@friendly_errors
def traverse(
    run: RunArg,
    index: Annotated[str, typer.Option(help="Input to start from: test-image index or image file.")] = "0",
    dims: Annotated[int, typer.Option(help="How many dimensions (those with the largest KL).", min=1)] = 8,
    steps: Annotated[int, typer.Option(help="Values per dimension, over ±3 prior σ.", min=2, max=64)] = 11,
    out: OutOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Vary one latent dimension at a time around an input's posterior mean: one row per dimension, largest KL first.

    Writes RUN/latent/traverse.png (--out: elsewhere); like every command, it writes into the run folder.
    """
    from vaekit.analysis.evaluate import kl_report
    from vaekit.analysis.plots import save_image, traversal_grid

    loaded = load_unconditional(run, device, "vaekit latent traverse")
    _gaussian_only(loaded, "traversals")
    test = load_test_split(loaded.config)
    order = kl_report(loaded.model, test.x).order[:dims]
    path = output(out, run, "latent/traverse.png")
    save_image(traversal_grid(loaded.model, _input(index, loaded, test, "--index"), order, steps), path)
    out_console.print(f"rows: dimensions {order}")
    _written(path)


@latent_app.command(cls=Command)
@friendly_errors
def manifold(
    run: RunArg,
    n: Annotated[int, typer.Option(help="Grid size n (n×n images).", min=2, max=40)] = 15,
    out: OutOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Decode a grid at prior quantiles: the latent plane for D = 2, else the top-2 principal directions.

    Writes RUN/latent/manifold.png (--out: elsewhere); like every command, it writes into the run folder.
    """
    from vaekit.analysis.plots import manifold_grid, save_image

    loaded = load_unconditional(run, device, "vaekit latent manifold")
    _gaussian_only(loaded, "manifold grids")
    path = output(out, run, "latent/manifold.png")
    save_image(manifold_grid(loaded.model, load_test_split(loaded.config).x, n), path)
    _written(path)


@latent_app.command(cls=Command)
@friendly_errors
def embed(
    run: RunArg,
    method: Annotated[str, typer.Option(help="pca | tsne (first two dimensions when D = 2).")] = "pca",
    n: Annotated[int, typer.Option(help="Test images to plot.", min=10)] = 5000,
    out: OutOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Scatter the test images' posterior means in 2-d, coloured by label.

    Writes RUN/latent/embed.png (--out: elsewhere); like every command, it writes into the run folder.
    """
    from vaekit.analysis.latent import embed_2d
    from vaekit.analysis.plots import embedding_figure
    from vaekit.files import atomic_write

    if method not in ("pca", "tsne"):
        raise VaekitError(f"--method {method!r}: use pca or tsne")
    loaded = load_unconditional(run, device, "vaekit latent embed")
    test = load_test_split(loaded.config)
    x, labels = test.x[:n], (test.y[:n] if test.y is not None else None)
    with torch.no_grad():
        points, title = embed_2d(loaded.model.encode(to_float(x).to(loaded.model.device)).mean, method)
    path = output(out, run, "latent/embed.png")
    names = CLASS_NAMES.get(loaded.config.data.dataset)
    atomic_write(path, embedding_figure(points, labels, f"{title} ({len(x)} test images)", names))
    _written(path)


@latent_app.command(cls=Command)
@friendly_errors
def arithmetic(
    run: RunArg,
    source: Annotated[int, typer.Option("--from", help="Class of the inputs.")] = 0,
    target: Annotated[int, typer.Option("--to", help="Class whose mean code direction is added.")] = 1,
    n: Annotated[int, typer.Option(help="Inputs to show.", min=1, max=32)] = 8,
    out: OutOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Add mean code(target class) − mean code(source class) to inputs of the source class, and decode.

    Writes RUN/latent/arithmetic.png (--out: elsewhere); like every command, it writes into the run folder.
    """
    from vaekit.analysis.plots import arithmetic_grid, save_image

    loaded = load_unconditional(run, device, "vaekit latent arithmetic")
    test = load_test_split(loaded.config)
    if test.y is None:
        raise VaekitError(f"{loaded.config.data.dataset} has no labels: attribute arithmetic needs labelled data")
    for flag, label in (("--from", source), ("--to", target)):
        if not (test.y == label).any():
            raise VaekitError(
                f"{flag} {label}: no test image has that label (labels are {sorted(set(test.y.tolist()))})"
            )
    path = output(out, run, "latent/arithmetic.png")
    save_image(arithmetic_grid(loaded.model, test.x, test.y, source, target, n), path)
    out_console.print("rows: inputs, reconstructions, reconstructions + (mean code of --to − mean code of --from)")
    _written(path)


@latent_app.command(cls=Command)
@friendly_errors
def smoothness(
    run: RunArg,
    paths: Annotated[int, typer.Option(help="Random interpolation paths between test images.", min=1)] = 200,
    steps: Annotated[int, typer.Option(help="Steps per path.", min=2, max=256)] = 16,
    method: MethodOpt = "linear",
    seed: SeedOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Measure how evenly decoded images change along latent paths.

    Writes RUN/smoothness.json; like every command, it writes into the run folder.
    """
    from vaekit.analysis.classifier import feature_space
    from vaekit.analysis.smoothness import smoothness as measure
    from vaekit.data.sources import load_dataset

    loaded = load_unconditional(run, device, "vaekit latent smoothness")
    data = load_dataset(loaded.config.data)
    if len(data.test) < 2:
        raise VaekitError("smoothness needs at least two test images")
    space = feature_space(data, device=loaded.model.device)
    report = measure(loaded.model, data.test, space, paths, steps, seed, _method(method))
    atomic_write_json(run / "smoothness.json", dataclasses.asdict(report))
    if as_json:
        out_console.print_json(json.dumps(dataclasses.asdict(report)))
        return
    table = Table(title=f"latent smoothness: {paths} {method} paths × {steps} steps ({loaded.config.model.kind})")
    for column in ("space", "mean step", "p95 of max step", "max/mean (mean)", "max/mean (p95)"):
        table.add_column(column, justify="left" if column == "space" else "right")
    for s in report.stats:
        table.add_row(s.space, f"{s.mean_step:.3f}", f"{s.p95_max_step:.3f}", f"{s.mean_max_over_mean:.3f}",
                      f"{s.p95_max_over_mean:.3f}")  # fmt: skip
    if report.off_manifold is not None:
        table.caption = f"interpolants classified as neither endpoint's class: {report.off_manifold:.1%}"
    out_console.print(table)
