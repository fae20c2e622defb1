"""`vaekit train`: every setting as a flag (or a TOML file of the same names), then one call to `vaekit.train`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from vaekit.cli.common import Interrupted, Within, err_console, friendly_errors, out_console, read_toml
from vaekit.config import PANELS, Setting, TrainConfig, setting_of_flag, settings, with_overrides
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.training.callbacks import Callback


def _train(
    out: Path | None = None,
    config: Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    logger: str | None = None,
    mlflow_uri: str | None = None,
    **flags: Any,
) -> None:
    """Train a VAE and write a run folder: weights, checkpoints, metrics and pictures."""
    from vaekit.api import train as run_training
    from vaekit.cli.progress import ProgressBar
    from vaekit.training.runs import STATE, read_config

    from_file = {key.replace("-", "_"): value for key, value in (read_toml(config) if config else {}).items()}
    file_out, file_log, file_uri = (from_file.pop(key, None) for key in COMMAND_KEYS)
    for key, value in zip(COMMAND_KEYS, (file_out, file_log, file_uri), strict=True):
        if value is not None and not isinstance(value, str):
            raise VaekitError(f'config file {config}: {key} = {value!r} is not text: write it in quotes, {key} = "…"')
    out = out or Path(file_out or "runs/latest")  # the command line wins over the file
    logger, mlflow_uri = logger or file_log, mlflow_uri or file_uri
    chosen = to_settings(from_file, f"config file {config}")
    chosen.update(to_settings({k: v for k, v in flags.items() if v is not None}, "flags"))
    base = read_config(out) if resume else TrainConfig()
    train_config = with_overrides(base, chosen)
    callbacks = [*loggers(logger, mlflow_uri), *([] if quiet else [ProgressBar(err_console)])]
    try:
        run = run_training(train_config, out, resume=resume, callbacks=callbacks)
    except KeyboardInterrupt:
        if not (out / STATE).is_file():
            raise Interrupted(f"interrupted before {out} had a checkpoint: start the same command again") from None
        raise Interrupted(
            f"interrupted: the last checkpoint is saved; continue with `vaekit train --resume --out {out}`"
        ) from None
    if run.final is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    test = run.final["test"]
    if not run.model.posterior.has_density:  # a point-mass code: no KL, so no ELBO and no bound to print
        summary = f"test reconstruction −log p(x|code) {-test['log_px']:.2f} nats/image (an autoencoder has no ELBO)"
    else:
        summary = (
            f"test ELBO {test['elbo']:.2f} nats/image  (−ELBO {-test['elbo']:.2f}: reconstruction {-test['log_px']:.2f}"
            f" + KL {test['kl']:.2f}; {test['bits_per_dim']:.4f} bits/dim)"
        )
    weights = f"weights: {escape(run.weights_text())}"
    out_console.print(f"run folder: [bold]{run.path}[/]\n{weights}\n{summary}", highlight=False, soft_wrap=True)


COMMAND_KEYS = ("out", "logger", "mlflow_uri")  # flags a TOML file may hold that steer the command, not the model
RUN, LOGGING = "run", "logging"  # help panels of the options that steer the command
COMMAND_OPTIONS = {  # the options that are not settings, in the panel each belongs to
    "out": Annotated[
        Path | None,
        typer.Option(
            help="Run folder to write (created if missing).  \\[default: runs/latest]",
            show_default=False,
            rich_help_panel=RUN,
        ),
    ],
    "config": Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of settings, its keys the flags' names (out included); flags win.",
            show_default=False,
            rich_help_panel=RUN,
        ),
    ],
    "resume": Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --out from its last checkpoint.", rich_help_panel=RUN),
    ],
    "quiet": Annotated[bool, typer.Option("--quiet", help="No progress bar.", rich_help_panel=RUN)],
    "logger": Annotated[
        str | None,
        typer.Option(
            help="Also log to: tensorboard (RUN/tensorboard) | mlflow | tensorboard,mlflow  \\[default: none]",
            show_default=False,
            rich_help_panel=LOGGING,
        ),
    ],
    "mlflow_uri": Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI for --logger mlflow.  \\[default: $MLFLOW_TRACKING_URI, else RUN/mlruns]",
            show_default=False,
            rich_help_panel=LOGGING,
        ),
    ],
}


def setting_option(setting: Setting) -> Any:
    """A setting's flag: its type from the default, its help, choices, default, panel and bounds from
    `vaekit.config`."""
    default = setting.default
    value_type: Any = str if default is None or isinstance(default, list) else type(default)  # lists: "400,200"
    text = setting.help_text()
    if setting.shown:
        text += f"  \\[default: {setting.shown}]"  # escaped: rich would take [default: …] for markup
    flag = "--" + setting.flag.replace("_", "-")
    option = typer.Option(flag, help=text, show_default=False, rich_help_panel=setting.panel)
    if setting.bounds is not None:  # checked by friendly_errors before anything runs
        return Annotated[value_type | None, option, Within(*setting.bounds, f"a {setting.noun}")]
    return Annotated[value_type | None, option]


def with_options(command: Callable[..., None], name: str) -> Callable[..., None]:
    """`command`, called `name`, with the signature typer reads: the command's own options and one per setting, each
    panel's options together in the order of PANELS."""
    annotations: dict[str, Any] = dict(COMMAND_OPTIONS)
    for setting in settings().values():
        annotations[setting.flag] = setting_option(setting)

    def panel_of(name: str) -> int:
        info = annotations[name].__metadata__[0]
        return PANELS.index(info.rich_help_panel)

    ordered = sorted(annotations, key=panel_of)  # stable: fields keep their order within a panel
    defaults = {"resume": False, "quiet": False}
    parameters = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name), annotation=annotations[name]
        )
        for name in ordered
    ]
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {**{option: annotations[option] for option in ordered}, "return": None}
    command.__name__ = name
    return command


train = friendly_errors(with_options(_train, "train"))


def loggers(names: str | None, mlflow_uri: str | None) -> list[Callback]:
    """The experiment loggers --logger names, each checked to be installed before training starts."""
    chosen = [name.strip() for name in (names or "").split(",") if name.strip()]
    unknown = [name for name in chosen if name not in ("tensorboard", "mlflow")]
    if unknown:
        raise VaekitError(f"--logger {', '.join(unknown)} is unknown: use tensorboard, mlflow or tensorboard,mlflow")
    if mlflow_uri and "mlflow" not in chosen:
        raise VaekitError("--mlflow-uri sets where --logger mlflow logs: add --logger mlflow, or drop it")
    found: list[Callback] = []
    if "tensorboard" in chosen:
        from vaekit.tracking.tensorboard_logger import TensorBoardLogger

        found.append(TensorBoardLogger())
    if "mlflow" in chosen:
        from vaekit.tracking.mlflow_logger import MLflowLogger

        found.append(MLflowLogger(mlflow_uri))
    return found


def to_settings(named: dict[str, Any], source: str) -> dict[str, Any]:
    """Values by flag name (`latent-dim` or `latent_dim`) → TrainConfig's flat settings: the one mapping that both the
    flags and a TOML file's keys go through."""
    flat, by_flag = {}, setting_of_flag()
    for key, value in named.items():
        name = key.replace("-", "_")
        if name not in by_flag:
            valid = ", ".join(sorted(flag.replace("_", "-") for flag in [*by_flag, *COMMAND_KEYS]))
            raise VaekitError(f"{source}: unknown key {key!r}: use the flags' names ({valid})")
        if name in ("hidden", "second_layer") and isinstance(value, str):  # "400,200" on a command line
            value = _int_list(value, "--" + name.replace("_", "-"))
        flat[by_flag[name]] = value
    return flat


def _int_list(text: str, flag: str = "--hidden") -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise VaekitError(f"{flag} {text!r} is not a comma-separated list of integers (e.g. 512,256)") from None
