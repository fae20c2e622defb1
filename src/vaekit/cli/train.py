"""`vaekit train`: every setting as a flag (or a TOML file of the same names), then one call to `vaekit.train`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vaekit.cli.common import SEED_RANGE, Interrupted, err_console, friendly_errors, out_console, read_toml
from vaekit.config import SETTING_OF_FLAG, TrainConfig, with_overrides
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.training.callbacks import Callback


@friendly_errors
def train(
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder to write (created if missing).  \\[default: runs/latest]", show_default=False),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="fashion-mnist | mnist | digits | an image folder | .npy/.npz | .parquet | a datasets folder"
            "  \\[default: fashion-mnist]",
            show_default=False,
        ),
    ] = None,
    image_column: Annotated[
        str | None,
        typer.Option(help="Image column of a table.  \\[default: image, img or pixels]", show_default=False),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(help="Label column of a table.  \\[default: label, labels or y, if present]", show_default=False),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Epochs to train (with --resume: the new total).  \\[default: 10]", show_default=False),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Examples per step.  \\[default: 128]", show_default=False)
    ] = None,
    latent_dim: Annotated[int | None, typer.Option(help="Size of z.  \\[default: 20]", show_default=False)] = None,
    hidden: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated widths (MLP) or channels (conv).  \\[default: 400 | 32,64]", show_default=False
        ),
    ] = None,
    network: Annotated[
        str | None, typer.Option(help="mlp | conv | resconv (residual conv)  \\[default: mlp]", show_default=False)
    ] = None,
    second_layer: Annotated[
        str | None,
        typer.Option(
            help="A second stochastic layer: its networks' widths, then its size (e.g. 100,100,50).  \\[default: none]",
            show_default=False,
        ),
    ] = None,
    activation: Annotated[
        str | None,
        typer.Option(help="Hidden activation: relu | tanh | elu | gelu  \\[default: relu]", show_default=False),
    ] = None,
    prior: Annotated[
        str | None,
        typer.Option(
            help="standard (N(0, I)) | mog (learned mixture) | vamp (VampPrior)  \\[default: standard]",
            show_default=False,
        ),
    ] = None,
    prior_components: Annotated[
        int | None,
        typer.Option(
            help="Components of a mog prior, pseudo-inputs of a vamp prior.  \\[default: 10]", show_default=False
        ),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            help="elbo | iwae (importance-weighted bound with --k samples)  \\[default: elbo]", show_default=False
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            "--k", help="Importance samples per image for --objective iwae.  \\[default: 5]", show_default=False
        ),
    ] = None,
    gaussian_scale: Annotated[
        float | None,
        typer.Option(
            help="Fixed σ of the gaussian likelihood; the starting σ of the learned ones.  \\[default: 0.1]",
            show_default=False,
        ),
    ] = None,
    mixtures: Annotated[
        int | None,
        typer.Option(help="Logistic components per pixel of discretized-logistic.  \\[default: 5]", show_default=False),
    ] = None,
    free_bits: Annotated[
        float | None,
        typer.Option(
            help="Nats per latent unit under which its KL is not pushed down.  \\[default: 0]", show_default=False
        ),
    ] = None,
    average_decay: Annotated[
        float | None,
        typer.Option(
            help="Evaluate and save a moving average of the weights with this decay per step (0.999, say); the"
            " optimizer still steps the weights themselves.  \\[default: 0: no average]",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="vae | ae (plain autoencoder baseline)  \\[default: vae]", show_default=False),
    ] = None,
    likelihood: Annotated[
        str | None,
        typer.Option(
            help="bernoulli | gaussian | gaussian-learned | gaussian-pixel | continuous-bernoulli |"
            " discretized-logistic  \\[default: bernoulli]",
            show_default=False,
        ),
    ] = None,
    binarize: Annotated[
        str | None, typer.Option(help="none | dynamic | static  \\[default: none]", show_default=False)
    ] = None,
    beta: Annotated[float | None, typer.Option(help="KL weight β.  \\[default: 1.0]", show_default=False)] = None,
    warmup: Annotated[
        float | None, typer.Option(help="Epochs of linear KL warm-up from 0 to β.  \\[default: 0]", show_default=False)
    ] = None,
    estimator: Annotated[
        str | None,
        typer.Option(
            help="Encoder gradient: reparam | score-function | score-function-baseline | dreg (with --objective iwae)."
            "  \\[default: reparam]",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="z samples per image per step.  \\[default: 1]", show_default=False)
    ] = None,
    latent: Annotated[
        str | None,
        typer.Option(help="gaussian | categorical (Gumbel-softmax).  \\[default: gaussian]", show_default=False),
    ] = None,
    categories: Annotated[
        int | None, typer.Option(help="Categories per categorical variable.  \\[default: 10]", show_default=False)
    ] = None,
    latent_vars: Annotated[
        int | None, typer.Option(help="Categorical latent variables.  \\[default: 30]", show_default=False)
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            help="Starting Gumbel-softmax temperature, annealed to --temperature-min.  \\[default: 1.0]",
            show_default=False,
        ),
    ] = None,
    temperature_min: Annotated[
        float | None,
        typer.Option(help="Gumbel-softmax temperature the annealing stops at.  \\[default: 0.5]", show_default=False),
    ] = None,
    anneal_rate: Annotated[
        float | None,
        typer.Option(
            help="r in temperature × exp(−r · step), the Gumbel-softmax annealing per step.  \\[default: 0.0001]",
            show_default=False,
        ),
    ] = None,
    straight_through: Annotated[
        bool | None,
        typer.Option(
            "--straight-through", help="Hard one-hot codes forward, relaxed gradient backward.", show_default=False
        ),
    ] = None,
    condition: Annotated[
        str | None,
        typer.Option(
            help="none | label (a conditional VAE: encoder and decoder see the class label)  \\[default: none]",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Adam learning rate.  \\[default: 0.001]", show_default=False)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed for initialisation, batch order and noise.  \\[default: 0]", show_default=False),
        SEED_RANGE,
    ] = None,
    data_dir: Annotated[
        str | None,
        typer.Option(
            help="Folder holding the dataset files: the only one searched, downloaded into when empty.",
            show_default=False,
        ),
    ] = None,
    val_size: Annotated[
        int | None, typer.Option(help="Validation images held out of train.  \\[default: 5000]", show_default=False)
    ] = None,
    split_seed: Annotated[
        int | None,
        typer.Option(help="Seed that picks the validation images out of train.  \\[default: 0]", show_default=False),
        SEED_RANGE,
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps  \\[default: cpu]", show_default=False)
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="fp32 | bf16 (networks under autocast; likelihood and KL in fp32)  \\[default: fp32]",
            show_default=False,
        ),
    ] = None,
    compile_networks: Annotated[
        bool | None,
        typer.Option(
            "--compile", help="Run the networks through torch.compile (eager where it fails).", show_default=False
        ),
    ] = None,
    checkpoint_every: Annotated[
        float | None,
        typer.Option(help="Minutes between checkpoints inside an epoch.  \\[default: 30]", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of settings, its keys the flags' names (out included); flags win.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    logger: Annotated[
        str | None,
        typer.Option(
            help="Also log to: tensorboard (RUN/tensorboard) | mlflow | tensorboard,mlflow  \\[default: none]",
            show_default=False,
        ),
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI for --logger mlflow.  \\[default: $MLFLOW_TRACKING_URI, else RUN/mlruns]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train a VAE and write a run folder: weights, checkpoints, metrics and pictures."""
    from vaekit.api import train as run_training
    from vaekit.cli.progress import ProgressBar
    from vaekit.training.runs import STATE, read_config

    flags = {  # by flag name; `to_settings` maps them, and a TOML file's keys, to TrainConfig's settings
        "model": model,
        "latent": latent,
        "categories": categories,
        "latent_vars": latent_vars,
        "temperature": temperature,
        "temperature_min": temperature_min,
        "anneal_rate": anneal_rate,
        "straight_through": straight_through,
        "estimator": estimator,
        "samples": samples,
        "dataset": dataset,
        "image_column": image_column,
        "label_column": label_column,
        "epochs": epochs,
        "batch_size": batch_size,
        "latent_dim": latent_dim,
        "network": network,
        "activation": activation,
        "prior": prior,
        "prior_components": prior_components,
        "objective": objective,
        "k": k,
        "free_bits": free_bits,
        "average_decay": average_decay,
        "mixtures": mixtures,
        "gaussian_scale": gaussian_scale,
        "condition": condition,
        "hidden": hidden,
        "second_layer": second_layer,
        "likelihood": likelihood,
        "binarize": binarize,
        "beta": beta,
        "warmup": warmup,
        "lr": lr,
        "seed": seed,
        "data_dir": data_dir,
        "val_size": val_size,
        "split_seed": split_seed,
        "device": device,
        "precision": precision,
        "compile": compile_networks,
        "checkpoint_every": checkpoint_every,
    }
    from_file = {key.replace("-", "_"): value for key, value in (read_toml(config) if config else {}).items()}
    file_out, file_log, file_uri = (from_file.pop(key, None) for key in COMMAND_KEYS)
    for key, value in zip(COMMAND_KEYS, (file_out, file_log, file_uri), strict=True):
        if value is not None and not isinstance(value, str):
            raise VaekitError(f'config file {config}: {key} = {value!r} is not text: write it in quotes, {key} = "…"')
    out = out or Path(file_out or "runs/latest")  # the command line wins over the file
    logger, mlflow_uri = logger or file_log, mlflow_uri or file_uri
    settings = to_settings(from_file, f"config file {config}")
    settings.update(to_settings({k: v for k, v in flags.items() if v is not None}, "flags"))
    base = read_config(out) if resume else TrainConfig()
    train_config = with_overrides(base, settings)
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
    out_console.print(f"run folder: [bold]{run.path}[/]\n{summary}", highlight=False, soft_wrap=True)


COMMAND_KEYS = ("out", "logger", "mlflow_uri")  # flags a TOML file may hold that steer the command, not the model


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
    settings = {}
    for key, value in named.items():
        name = key.replace("-", "_")
        if name not in SETTING_OF_FLAG:
            valid = ", ".join(sorted(flag.replace("_", "-") for flag in [*SETTING_OF_FLAG, *COMMAND_KEYS]))
            raise VaekitError(f"{source}: unknown key {key!r}: use the flags' names ({valid})")
        if name in ("hidden", "second_layer") and isinstance(value, str):  # "400,200" on a command line
            value = _int_list(value, "--" + name.replace("_", "-"))
        settings[SETTING_OF_FLAG[name]] = value
    return settings


def _int_list(text: str, flag: str = "--hidden") -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise VaekitError(f"{flag} {text!r} is not a comma-separated list of integers (e.g. 512,256)") from None
