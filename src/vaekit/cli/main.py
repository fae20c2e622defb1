"""The `vaekit` command: a thin shell over the library. Each command parses, calls one library function, prints.

Errors a user can fix arrive as `VaekitError` and leave as one line on stderr with exit code 2, no traceback.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vaekit.analysis import samplers
from vaekit.cli.common import (
    Command,
    DeviceOpt,
    Group,
    RunArg,
    SeedOpt,
    check_index,
    friendly_errors,
    load_on,
    load_test_split,
    out_console,
    output,
)
from vaekit.cli.latent import latent_app
from vaekit.cli.score import score
from vaekit.cli.tools import evaluate, export, gradients, serve
from vaekit.cli.train import train
from vaekit.cli.why import why
from vaekit.errors import VaekitError
from vaekit.parts import SAMPLERS

app = typer.Typer(
    cls=Group,
    help="Train, measure and explore Variational Autoencoders.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def installed_version() -> str:
    """The installed distribution's version; a source tree on PYTHONPATH with no metadata reports its own."""
    from importlib.metadata import PackageNotFoundError, version

    import vaekit.version

    try:
        return version("vaekit")
    except PackageNotFoundError:
        return vaekit.version.__version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vaekit {installed_version()}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Train, measure and explore Variational Autoencoders."""


app.command(cls=Command)(train)  # cli/train.py; registered first, so it leads the help


def _sample(
    run: Path,
    n: int = 64,
    out: Path | None = None,
    seed: int = 0,
    device: str = "auto",
    sampler: str = samplers.DEFAULT,
    **settings: Any,
) -> None:
    """Decode draws from the run's prior, or from a mixture fitted to the codes, into a grid of images.

    Writes RUN/sample.png (--out: elsewhere); like every command, it writes into the run folder.
    """
    from vaekit.analysis.plots import save_image

    chosen = samplers.settings_of(sampler, settings)  # before the run loads: a refusal costs nothing
    loaded = load_on(run, device)
    path = output(out, run, "sample.png")
    grid, note = SAMPLERS[sampler].impl.draw(loaded, n, seed, chosen)
    save_image(grid, path)
    if note:
        out_console.print(note, highlight=False)
    out_console.print(f"wrote {path}")


def _with_sampler_options(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with the signature typer reads: its own options, then every sampler's, each with its help line and
    default (written once, in the sampler's settings), in a help panel per sampler."""
    samplers.load()
    own: dict[str, Any] = {
        "run": RunArg,
        "n": Annotated[int, typer.Option(help="Number of samples.", min=1, max=4096)],
        "out": Annotated[
            Path | None,
            typer.Option(help="PNG to write, instead of RUN/sample.png in the run folder.", show_default=False),
        ],
        "seed": SeedOpt,
        "device": DeviceOpt,
        "sampler": Annotated[str, typer.Option(help=SAMPLERS.choices_help())],
    }
    defaults = {"n": 64, "out": None, "seed": 0, "device": "auto", "sampler": samplers.DEFAULT}
    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=annotation,
            default=defaults.get(name, inspect.Parameter.empty),
        )
        for name, annotation in own.items()
    ]
    for option in samplers.options().values():
        text = option.help + (f"  \\[default: {option.default}]" if option.default is not None else "")
        flag = typer.Option(help=text, show_default=False, rich_help_panel=f"--sampler {option.sampler}")
        kind = option.type if option.default is None else option.type | None  # None: not given
        parameters.append(
            inspect.Parameter(
                option.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, flag], default=None
            )
        )
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    command.__name__ = "sample"
    return command


sample = app.command(cls=Command)(friendly_errors(_with_sampler_options(_sample)))


@app.command(cls=Command)
@friendly_errors
def reconstruct(
    run: RunArg,
    n: Annotated[int, typer.Option(help="Number of test images.", min=1, max=1024)] = 16,
    start: Annotated[int, typer.Option(help="Index of the first test image.", min=0)] = 0,
    out: Annotated[
        Path | None,
        typer.Option(help="PNG to write, instead of RUN/reconstruct.png in the run folder.", show_default=False),
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Show test images above their reconstructions (decoded posterior means).

    Writes RUN/reconstruct.png (--out: elsewhere); like every command, it writes into the run folder.
    """
    from vaekit.analysis.plots import reconstruction_grid, save_image

    loaded = load_on(run, device)
    test = load_test_split(loaded.config)
    check_index(start, len(test.x), "--start")
    path = output(out, run, "reconstruct.png")
    labels = None if test.y is None else test.y[start : start + n]  # a conditional model reads them
    save_image(reconstruction_grid(loaded.model, test.x[start : start + n], y=labels), path)
    out_console.print(f"wrote {path}")


@app.command(cls=Command)
@friendly_errors
def info(
    run: RunArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Show a run's configuration, progress and latest metrics."""
    from vaekit.training.runs import load_run

    loaded = load_run(run)
    summary = {
        "run": str(loaded.path),
        "config": loaded.config.to_dict(),
        "epochs_done": loaded.epochs_done,
        "finished": loaded.final is not None,
        "last_epoch": loaded.history[-1] if loaded.history else None,
        "weights_epoch": loaded.weights_epoch,
        "weights": loaded.weights_text(),
        "final": loaded.final,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
    }
    if as_json:
        out_console.print_json(json.dumps(summary))
        return
    table = Table(title=f"{loaded.path}", show_header=False)
    config = loaded.config
    rows = [
        ("dataset", f"{config.data.dataset} (binarize: {config.data.binarize})"),
        (
            "model",
            f"{config.model.network} {config.model.hidden}, latent {config.model.latent_dim}, "
            + (f"second layer {config.model.second_layer}, " if config.model.second_layer else "")
            + f"{config.model.likelihood}, {summary['parameters']:,} parameters"
            + (f", conditioned on {config.model.classes} classes" if loaded.model.conditional else ""),
        ),
        (
            "training",
            f"{loaded.epochs_done}/{config.epochs} epochs, batch {config.batch_size}, lr {config.lr}, β {config.beta}"
            + (f"; weights: their average (decay {config.average_decay:g})" if config.average_decay else ""),
        ),
        ("weights", loaded.weights_text()),
    ]
    chosen = loaded.weights_epoch
    for label, metrics in (
        ("last epoch (val)", (loaded.history[-1]["val"] if loaded.history else None)),
        (f"epoch {chosen} (val)", loaded.history[chosen - 1]["val"] if chosen != loaded.epochs_done else None),
        (f"test (epoch {chosen}'s weights)", loaded.final["test"] if loaded.final else None),
    ):
        if metrics:
            rows.append(
                (label, f"−ELBO {-metrics['elbo']:.2f} = recon {-metrics['log_px']:.2f} + KL {metrics['kl']:.2f} nats")
            )
    for row in rows:
        table.add_row(*row)
    out_console.print(table)


@app.command(cls=Command)
@friendly_errors
def pack(
    source: Annotated[
        str,
        typer.Argument(
            help="What to pack: fashion-mnist | mnist | digits | an image folder | .npy/.npz | .parquet | a datasets"
            " folder; with --verify, a pack.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None, typer.Argument(help="Pack folder to write (must not exist yet).", show_default=False)
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check the pack SOURCE against the SHA-256 in its manifest; write nothing.")
    ] = False,
    data_dir: Annotated[
        str | None, typer.Option(help="Folder holding a named dataset's files (as for train).", show_default=False)
    ] = None,
    image_column: Annotated[
        str | None, typer.Option(help="Image column of a table (as for train).", show_default=False)
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Label column of a table (as for train).", show_default=False)
    ] = None,
) -> None:
    """Write a dataset as a memory-mapped pack that `train --dataset PACK` reads a batch at a time."""
    from vaekit.data.pack import verify_pack
    from vaekit.data.sources import pack_dataset

    if verify:
        if out is not None:
            raise VaekitError("--verify checks one pack: give only its folder (vaekit pack --verify PACK)")
        manifest = verify_pack(Path(source))
        out_console.print(
            f"{source}: every file matches its manifest (shape {manifest['shape']})", highlight=False, soft_wrap=True
        )
        return
    if out is None:
        raise VaekitError("give the pack folder to write: vaekit pack SOURCE OUT")
    manifest = pack_dataset(source, out, data_dir, image_column=image_column, label_column=label_column)
    splits = ", ".join(f"{name} rows {start}-{stop}" for name, (start, stop) in manifest["splits"].items())
    out_console.print(f"wrote {out}: {manifest['shape']} uint8 ({splits})", highlight=False, soft_wrap=True)


for command in (evaluate, gradients, serve, export):  # defined in cli_tools.py, registered after the core commands
    app.command(cls=Command)(command)
app.command(cls=Command)(why)  # cli/why.py
app.command(cls=Command)(score)  # cli/score.py
app.add_typer(latent_app, name="latent")


def main() -> None:
    app(prog_name="vaekit")


if __name__ == "__main__":
    main()
