"""The training loop: the whole dataset in memory, batches sliced from a per-epoch permutation, Adam on the ELBO.

One `torch.Generator` drives every random choice (batch order, reparameterization noise, dynamic binarization) and
is saved with each checkpoint, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from vaekit.config import TrainConfig
from vaekit.data import Dataset, load_dataset
from vaekit.devices import RunningSum, prepare_networks, resolve_device
from vaekit.errors import VaekitError
from vaekit.model import VAE
from vaekit.objectives import bits_per_dim
from vaekit.runlock import RunLock
from vaekit.runs import (
    CONFIG,
    FINAL,
    STATE,
    Run,
    atomic_write_json,
    build_model,
    load_state,
    load_weights,
    read_config,
    read_final,
    remove_stale_temporaries,
    save_checkpoint,
    write_config,
    write_views,
)
from vaekit.scoring import Scoring

EVAL_SEED = 2024  # evaluation noise is fixed, so validation curves do not jitter from one epoch to the next
EVAL_CHUNK = 2000


class Reporter(Protocol):
    """What the loop tells the outside world; `vaekit.progress.RichReporter` draws it as a progress bar."""

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...
    def step(self, batches_done: int, loss: float) -> None: ...
    def end_epoch(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class SilentReporter:
    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...
    def step(self, batches_done: int, loss: float) -> None: ...
    def end_epoch(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def batches(x: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Slices of one random permutation: no per-sample Python, no DataLoader, no copies beyond the batch."""
    order = torch.randperm(len(x), generator=generator, device=x.device)
    for start in range(0, len(x), batch_size):
        yield x.index_select(0, order[start : start + batch_size])


@torch.no_grad()
def evaluate_split(model: VAE, x: Tensor, seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean ELBO and its terms over a split (nats per example), with one fixed-seed draw of the noise.

    The split is scored as `vaekit.scoring` defines (validation and test splits arrive binarized when the run
    binarizes), so log p(x|z), the ELBO and bits/dim are those of the data as stored, as `vaekit evaluate` reports them.
    """
    model.eval()
    scoring = Scoring.of(model.config)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    sums = RunningSum(2, x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        terms = model.elbo(scoring.input(x[start : start + EVAL_CHUNK], generator), generator)
        sums.add(torch.stack([terms.log_px.sum(), terms.kl.sum()]))
    log_px, kl = (sums.total / len(x)).tolist()
    log_px += scoring.offset(x)
    dims = math.prod(x.shape[1:])
    return {"elbo": log_px - kl, "log_px": log_px, "kl": kl, "bits_per_dim": float(bits_per_dim(kl - log_px, dims))}


def make_optimizer(model: VAE, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step: a third faster than the default per-parameter loop for small models."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)


def temperature_at(config: TrainConfig, step: int) -> float:
    """Gumbel-softmax temperature τ = max(τ_min, τ0·exp(−r·step)) (Jang et al. 2017): a function of the step, so a
    resumed run anneals exactly as an uninterrupted one."""
    model = config.model
    return max(model.temperature_min, model.temperature * math.exp(-model.anneal_rate * step))


def beta_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear KL warm-up: β·min(1, step / (warmup_epochs · steps_per_epoch))."""
    if config.warmup_epochs <= 0:
        return config.beta
    return config.beta * min(1.0, step / (config.warmup_epochs * steps_per_epoch))


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    config: TrainConfig,
    epoch: int,
    generator: torch.Generator,
    reporter: Reporter,
) -> dict[str, float]:
    """One pass over the training split; the record holds the epoch's mean ELBO terms, in the units `evaluate_split`
    reports (log p(x|z) of the data as stored, at exact samples of q)."""
    model.train()
    prepare_networks(model, config.precision, config.compile)  # once per model; evaluate_split runs them too
    x_all = data.train.x
    scoring = Scoring.of(config.model, config.data)  # fresh binarization or dequantization noise on every pass
    offset = scoring.offset(x_all)
    steps = math.ceil(len(x_all) / config.batch_size)
    sums = RunningSum(3, x_all.device)  # log p(x|z), KL, relaxed log p(x|z)
    first_bad = torch.zeros((), dtype=torch.long, device=x_all.device)  # first step whose loss is NaN/inf, or 0
    reporter.start_epoch(epoch, config.epochs, steps)
    for step, x_batch in enumerate(batches(x_all, config.batch_size, generator)):
        x = scoring.input(x_batch, generator)
        global_step = epoch * steps + step + 1
        if model.categorical:
            model.temperature = temperature_at(config, global_step)
        terms = model.elbo(x, generator, config.estimator, config.samples)
        beta = beta_at(config, global_step, steps)
        loss = -terms.objective(beta).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        relaxed = terms.log_px if terms.relaxed_log_px is None else terms.relaxed_log_px
        sums.add(torch.stack([t.detach().sum(dtype=sums.dtype) for t in (terms.log_px, terms.kl, relaxed)]))
        first_bad = torch.where((first_bad == 0) & ~loss.detach().isfinite(), global_step, first_bad)
        if step % 20 == 0 or step == steps - 1:  # reading the loss syncs; not every step, and the flag with it
            loss_value, bad_step = torch.stack([loss.detach().to(sums.dtype), first_bad.to(sums.dtype)]).tolist()
            if bad_step:
                where = f"epoch {epoch + 1}, step {int(bad_step) - epoch * steps} of {steps}"
                raise diverged(config, f"the loss became NaN or infinite at {where}")
            reporter.step(step + 1, loss_value - offset)
    log_px, kl, relaxed_log_px = (sums.total / len(x_all)).tolist()
    log_px, relaxed_log_px = log_px + offset, relaxed_log_px + offset
    record = {"elbo": log_px - kl, "log_px": log_px, "kl": kl, "beta": beta}
    if model.categorical:
        record["temperature"] = model.temperature
    if terms.relaxed_log_px is not None:  # what the Gumbel-softmax objective's reconstruction term measured
        record["relaxed_log_px"] = relaxed_log_px
    return record


def train(
    config: TrainConfig | None, out: str | Path, *, resume: bool = False, reporter: Reporter | None = None
) -> Run:
    """Train a VAE into the run folder `out`; with `resume=True`, continue the run found there.

    On resume the run's own config.json is used; a `config` given alongside may only change `epochs` (to train
    further) and `lr` (to continue a run that diverged). The run folder is locked for the whole run, so a second
    writer is refused. `config` itself is never modified. Returns the finished `Run`.
    """
    run_dir = Path(out)
    if resume and not (run_dir / CONFIG).is_file():
        read_config(run_dir)  # the one-line "not a run folder" error, before anything is created
    if not resume:
        if config is None:
            raise VaekitError("train needs a TrainConfig (or resume=True to continue an existing run)")
        config = copy.deepcopy(config).validate()  # before the folder is created
    with RunLock(run_dir):
        remove_stale_temporaries(run_dir)
        if resume:
            config, state = _resume_point(run_dir, config)
        else:
            assert config is not None
            config, state = _fresh_start(run_dir, config), None
        return _train_locked(run_dir, config, state, reporter or SilentReporter())


def _train_locked(run_dir: Path, config: TrainConfig, state: dict[str, Any] | None, reporter: Reporter) -> Run:
    device = resolve_device(config.device)
    data = load_dataset(config.data)
    config.model.input_shape = list(data.shape)
    config.validate()
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    if state is None:
        write_config(run_dir, config)
    else:
        load_weights(model, state["model"], run_dir / STATE)
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr  # the one optimizer setting a resume may change
        generator.set_state(state["generator"])
        history = state["history"]
        write_views(run_dir, state["model"], history)
    data = _to_device(data, device)
    try:
        for epoch in range(len(history), config.epochs):
            started = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch + 1}
            record["train"] = train_epoch(model, optimizer, data, config, epoch, generator, reporter)
            record["val"] = evaluate_split(model, data.val.x) if len(data.val) else None
            record["seconds"] = round(time.perf_counter() - started, 3)
            _check_finite(record, config)
            history.append(record)
            save_checkpoint(run_dir, model, optimizer, generator, history)
            reporter.end_epoch(record)
    finally:
        reporter.close()
    return finish(run_dir, model, data, config, history)


class TrainingDiverged(VaekitError):
    """The loss or a metric became NaN or infinite; the last good checkpoint is left as it was."""


def diverged(config: TrainConfig, where: str) -> TrainingDiverged:
    lower = f"{config.lr / 3:.2g}"
    return TrainingDiverged(
        f"training diverged: {where}; the last good checkpoint is kept. Likely cause: a learning rate too high for "
        f"this model and data (--lr {config.lr:g}): continue with `vaekit train --resume --out RUN --lr {lower}`"
    )


def _check_finite(record: dict[str, Any], config: TrainConfig) -> None:
    for split in ("train", "val"):
        for name, value in (record[split] or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise diverged(config, f"the {split} {name} of epoch {record['epoch']} is {value}")


def finish(run_dir: Path, model: VAE, data: Dataset, config: TrainConfig, history: list[dict[str, Any]]) -> Run:
    """Evaluate on the test split, write metrics.json and the pictures; the run is complete once this returns."""
    from vaekit.plots import write_run_pictures  # matplotlib is only needed once training is done

    final = {
        "epochs": len(history),
        "test": evaluate_split(model, data.test.x),
        "val": history[-1]["val"],
        "train": history[-1]["train"],
        "units": "nats per example; bits_per_dim from the negative ELBO",
    }
    write_run_pictures(run_dir, model, data.test.x, history, seed=config.seed)
    atomic_write_json(run_dir / FINAL, final)
    return Run(run_dir, config, model.eval(), history, final)


def _fresh_start(run_dir: Path, config: TrainConfig) -> TrainConfig:
    """A new run may go into a folder that holds no finished epoch (a run killed in its first epoch, say)."""
    if (run_dir / STATE).exists() or (run_dir / FINAL).exists():
        raise VaekitError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    return config


RESUMABLE = {"epochs", "lr"}  # what a resume may change; anything else would make it another run


def _resume_point(run_dir: Path, given: TrainConfig | None) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's own config (with `epochs`/`lr` from `given`) and its checkpoint; None when no epoch finished yet,
    so the run starts from the beginning with the config it was started with."""
    saved = read_config(run_dir)
    state = load_state(run_dir)
    if given is not None:
        given = copy.deepcopy(given)
        given.model.input_shape = list(saved.model.input_shape)
        if not given.model.hidden:
            given.model.hidden = list(saved.model.hidden)
        saved_dict, given_dict = saved.to_dict(), given.validate().to_dict()
        for key in sorted(set(saved_dict) - RESUMABLE):
            if saved_dict[key] != given_dict[key]:
                raise VaekitError(
                    f"--resume continues {run_dir} with its own settings, but {key} differs from {run_dir}/config.json:"
                    " drop that setting, or train a new run with another --out"
                )
        changed = {key for key in RESUMABLE if saved_dict[key] != given_dict[key]}
        saved.epochs, saved.lr = given.epochs, given.lr
        if changed:
            write_config(run_dir, saved)
    final = read_final(run_dir)
    done = state["epoch"] if state else 0
    if done >= saved.epochs and final is not None and final.get("epochs") == done:
        raise VaekitError(
            f"{run_dir} already finished its {saved.epochs} epochs: "
            f"pass --epochs N (more than {saved.epochs}) to train further"
        )
    if done > saved.epochs:
        raise VaekitError(f"{run_dir} has trained {done} epochs already: pass --epochs {done} or more")
    return saved, state


def _to_device(data: Dataset, device: torch.device) -> Dataset:
    if device.type == "cpu":
        return data
    for split in (data.train, data.val, data.test):
        split.x = split.x.to(device)
    return data
