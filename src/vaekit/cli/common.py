"""What every `vaekit` command shares: the consoles, one-line errors, and the run/test-image arguments."""

from __future__ import annotations

import functools
import inspect
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from vaekit.config import MAX_SEED, TrainConfig
from vaekit.data.sources import Split
from vaekit.errors import VaekitError
from vaekit.files import os_error
from vaekit.training.distributed import launched_ranks

if TYPE_CHECKING:
    from vaekit.training.runs import Run


class Command(TyperCommand):
    """typer's command, its help listing no value type beside a flag (`--resume`, not `--resume <bool>`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _blank_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    """typer's command group, its help listing no value type beside a flag, like `Command`."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _blank_flag_types(super().get_params(ctx))


def _blank_flag_types(params: list[Any]) -> list[Any]:
    """typer 0.29's rich help prints a value type beside every option, flags included (--help too), though a flag takes
    no value; its plain-text help leaves flags bare. An empty metavar is what that column prints instead."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


out_console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

RunArg = Annotated[Path, typer.Argument(help="A run folder written by `vaekit train`.", show_default=False)]


@dataclass(frozen=True)
class Within:
    """An integer option's bounds, given as `Annotated` metadata beside its `typer.Option` and checked by
    `friendly_errors` before the command runs: an out-of-range value is one line naming the flag (click's own range
    check prints a usage panel), and never reaches torch, which fails on seeds past 64 bits with a traceback."""

    low: int
    high: int
    what: str  # "a seed": what the fix asks for

    def check(self, flag: str, value: int | None) -> None:
        if value is not None and not self.low <= value <= self.high:
            raise VaekitError(f"{flag} {value} is out of range: give {self.what} from {self.low} to {self.high}")


SEED_RANGE = Within(0, MAX_SEED, "a seed")
SeedOpt = Annotated[int, typer.Option(help="Seed for the noise, so the picture can be reproduced."), SEED_RANGE]
DeviceOpt = Annotated[
    str, typer.Option(help="Where the model runs: auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps.")
]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a command trained, carrying the line that says how to continue."""


def friendly_errors(command: F) -> F:
    """Turn VaekitError (and an operating-system error, naming its path and errno) into one line + exit 2, and Ctrl-C
    into one line + exit 130 ("interrupted", or a training command's hint how to continue); anything else is a bug
    and keeps its trace."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            for name, (flag, bounds) in bounded_options(command).items():
                bounds.check(flag, kwargs.get(name))
            return command(*args, **kwargs)
        except (VaekitError, OSError) as error:  # an OSError the writers did not meet first: the disk, permissions
            if isinstance(error, OSError):
                error = os_error(error, error.filename or "a file", "use")
            if launched_ranks().main:  # under torchrun every rank meets the same error; one line says it
                err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as interrupt:
            line = str(interrupt) if isinstance(interrupt, Interrupted) else "interrupted"
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@functools.cache
def bounded_options(command: Callable[..., Any]) -> dict[str, tuple[str, Within]]:
    """The command's options that carry `Within` bounds, by parameter name, with the flag a user typed."""
    found = {}
    for name, parameter in inspect.signature(command, eval_str=True).parameters.items():
        metadata = getattr(parameter.annotation, "__metadata__", ())
        for bounds in (item for item in metadata if isinstance(item, Within)):
            declared = [d for item in metadata for d in getattr(item, "param_decls", None) or () if d.startswith("--")]
            found[name] = (declared[0] if declared else "--" + name.replace("_", "-"), bounds)
    return found


def output(out: Path | None, run: Path, name: str) -> Path:
    """--out, else RUN/name. One rule for every command: what it makes from a run goes into the run folder, under a
    name of its own (the command's), so the pictures training drew there are never overwritten."""
    return out or run / name


def read_toml(path: Path) -> dict[str, Any]:
    """A --config file: UTF-8 TOML text, every way it can fail one line that names it."""
    if path.is_dir():
        raise VaekitError(f"config file {path} is a folder: give --config a TOML file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VaekitError(f"config file {path} does not exist: check the --config path") from None
    except UnicodeDecodeError:
        raise VaekitError(f"config file {path} is not UTF-8 text: give --config a TOML file") from None
    except RecursionError:
        raise VaekitError(f"config file {path} is nested too deeply: give --config a flat TOML file") from None
    except (tomllib.TOMLDecodeError, ValueError) as error:  # ValueError: an integer of thousands of digits
        raise VaekitError(f"config file {path} is not valid TOML ({error}): fix the file given to --config") from None
    except OSError as error:
        raise VaekitError(f"config file {path} cannot be read ({error.strerror}): check the --config path") from None


def load_on(run: Path, device: str) -> Run:
    """The run's model on `device`, checked to exist here first; any run loads on any device."""
    from vaekit.devices import resolve_device
    from vaekit.training.runs import load_run

    return load_run(run, str(resolve_device(device)))


def load_unconditional(run: Path, device: str, what: str) -> Run:
    """`load_on`, for the commands that walk or decode latent codes with no class label to give them."""
    loaded = load_on(run, device)
    if loaded.model.conditional:
        raise VaekitError(
            f"{what} is not available for a conditional run ({run} was trained with --condition label): use "
            "`vaekit sample RUN --label K`, reconstruct or evaluate here, or a run trained with --condition none"
        )
    return loaded


def load_test_split(config: TrainConfig) -> Split:
    """The test images (and labels) of the data a run was trained on."""
    from vaekit.data.sources import load_dataset

    return load_dataset(config.data).test


def check_index(index: int, size: int, flag: str) -> None:
    if not 0 <= index < size:
        raise VaekitError(f"{flag} {index} is out of range: the test split has images 0 to {size - 1}")
