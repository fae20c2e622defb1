"""The training loop: the whole dataset in memory, Adam on the objective, epochs (`vaekit.training.epoch`) followed
by validation and a checkpoint, until the last epoch or until `--patience` runs out, then the test split and the
pictures, of the weights `--select` chose (`vaekit.training.selection`).

One `torch.Generator` drives every random choice (batch order, reparameterization noise, dynamic binarization) and
is saved with each checkpoint, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from vaekit.config import TrainConfig
from vaekit.data.scoring import Scoring
from vaekit.data.sources import Dataset, Split, class_count, load_dataset
from vaekit.devices import RunningSum, resolve_device
from vaekit.errors import VaekitError
from vaekit.files import atomic_write_json
from vaekit.model.objectives import bits_per_dim
from vaekit.model.vae import VAE
from vaekit.parts import CONDITIONS
from vaekit.training import distributed
from vaekit.training.averaging import weight_average
from vaekit.training.callbacks import Callback, Callbacks, EpochEnd, RunEnd, RunStart
from vaekit.training.distributed import Ranks
from vaekit.training.epoch import ObjectiveStep, diverged, train_epoch
from vaekit.training.footprint import check_run_fits
from vaekit.training.precision import prepare_networks
from vaekit.training.resume import agreed_start, restore
from vaekit.training.runlock import RunLock
from vaekit.training.runs import (
    CONFIG,
    FINAL,
    STATE,
    Run,
    build_model,
    check_new_run_folder,
    read_config,
    save_checkpoint,
    write_config,
    write_views,
)
from vaekit.training.selection import BestWeights, describe, patience_spent

EVAL_SEED = 2024  # evaluation noise is fixed, so validation curves do not jitter from one epoch to the next
EVAL_CHUNK = 2000


# Draws a finished run's pictures into its folder (run folder, model, test split, history, seed, the epoch whose
# weights the model holds); the analysis stage provides one (`vaekit.analysis.plots.write_run_pictures`), so training
# itself draws nothing.
Pictures = Callable[[Path, VAE, Split, list[dict[str, Any]], int, int], None]
HELD_OUT_PICTURES = 8  # held-out images each EpochEnd carries, for reconstruction pictures


def evaluate_split(model: VAE, x: Tensor, seed: int = EVAL_SEED, y: Tensor | None = None) -> dict[str, float]:
    """Mean ELBO and its terms over a split (nats per example), with one fixed-seed draw of the noise; a conditional
    model scores each image given its label in `y`.

    The split is scored as `vaekit.data.scoring` defines (validation and test splits arrive binarized when the run
    binarizes), so log p(x|z), the ELBO and bits/dim are those of the data as stored, as `vaekit evaluate` reports them.
    """
    model.eval()
    scoring = Scoring.of(model.config)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    sums = RunningSum(2, x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        labels = None if y is None else y[start : start + EVAL_CHUNK]
        terms = model.elbo(scoring.input(x[start : start + EVAL_CHUNK], generator), generator, y=labels)
        sums.add(torch.stack([terms.log_px.sum(), terms.kl.sum()]))
    log_px, kl = (sums.total / len(x)).tolist()
    log_px += scoring.offset(x)
    dims = math.prod(x.shape[1:])
    return {"elbo": log_px - kl, "log_px": log_px, "kl": kl, "bits_per_dim": float(bits_per_dim(kl - log_px, dims))}


def make_optimizer(model: VAE, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step: a third faster than the default per-parameter loop for small models."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)


def train(
    config: TrainConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    callbacks: Iterable[Callback] = (),
    pictures: Pictures | None = None,
) -> Run:
    """Train a VAE into the run folder `out`; with `resume=True`, continue the run found there; `callbacks` hear of
    the run's start, steps, epochs and end (`vaekit.training.callbacks`); `pictures` draws the finished run's pictures
    (`vaekit.train` passes the analysis stage's).

    On resume the run's own config.json is used; a `config` given alongside may only change `epochs` (to train
    further) and `lr` (to continue a run that diverged). The run folder is locked for the whole run, so a second
    writer is refused. `config` itself is never modified. Returns the finished `Run`.

    Under `torchrun` every process calls this: they train as one DistributedDataParallel model, and only rank 0
    locks and writes the run folder (which, for --resume, every node must be able to read).
    """
    run_dir = Path(out)
    if resume and not (run_dir / CONFIG).is_file():
        read_config(run_dir)  # the one-line "not a run folder" error, before anything is created
    if not resume:
        if config is None:
            raise VaekitError("train needs a TrainConfig (or resume=True to continue an existing run)")
        config = copy.deepcopy(config).validate()  # before the folder is created
    device = resolve_device((config or read_config(run_dir)).device)
    ranks, device = distributed.start(device)
    try:
        heard = Callbacks(callbacks if ranks.main else ())
        if ranks.main:  # before anything is written: a user's folder, and a logger that would fail, are refused here
            if not resume:
                check_new_run_folder(run_dir)
            heard.before_run(run_dir)
        with RunLock(run_dir) if ranks.main else contextlib.nullcontext():
            config, state = agreed_start(run_dir, config, resume, ranks)
            return _train_locked(run_dir, config, state, heard, device, ranks, pictures)
    finally:
        distributed.stop()


def _train_locked(
    run_dir: Path,
    config: TrainConfig,
    state: dict[str, Any] | None,
    callback: Callback,
    device: torch.device,
    ranks: Ranks,
    pictures: Pictures | None,
) -> Run:
    data = load_dataset(config.data)
    if config.data.val_size and not len(data.val) and (config.select != "last" or config.patience):
        raise VaekitError(
            f"{config.data.dataset} has too few training images for a validation split (at most a tenth of train is "
            "held out), and --select best or --patience judge epochs by it: use more images, or drop those settings"
        )
    config.model.input_shape = list(data.shape)
    if CONDITIONS[config.model.condition].impl.labels:  # a conditional model: the classes come from the data
        config.model.classes = class_count(data)
    config.validate()
    check_run_fits(config, state, run_dir / STATE, data, device, EVAL_CHUNK)  # before the model is built
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, config)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    history: list[dict[str, Any]] = []
    average = weight_average(model, config.average_decay)  # None unless the run averages its weights
    if average is not None:
        optimizer.register_step_post_hook(lambda *_: average.update())
        prepare_networks(average.module, config.precision, config.compile)
    evaluated = model if average is None else average.module  # what validation, the test split and pictures see
    best = BestWeights() if config.select == "best" else None
    if state is not None:
        history = restore(state, run_dir / STATE, model, optimizer, generator, average, config.lr)
        if best is not None:
            best.restore(state, run_dir / STATE, evaluated)
    step_fn = distributed.data_parallel(ObjectiveStep(model, config, ranks), ranks, device)
    data = _to_device(data, device)
    if ranks.main:  # only now, every check passed: a refused or failed start leaves the run folder as it was
        if state is not None:
            write_views(run_dir, state, history)
        write_config(run_dir, config)  # also records the world size this stretch of the run trains with
    partial = state.get("partial") if state else None

    def checkpoint(position: dict[str, Any]) -> None:
        """Inside an epoch: state.pt alone, holding the epoch's position; the views stay at the last whole epoch."""
        problem = None
        if ranks.main:
            try:
                save_checkpoint(run_dir, model, optimizer, generator, history, position, average, kept(best))
            except VaekitError as error:
                problem = str(error)
        ranks.agree(problem)

    held_out = data.val if len(data.val) else data.test
    held_out = Split(held_out.x[:HELD_OUT_PICTURES], None if held_out.y is None else held_out.y[:HELD_OUT_PICTURES])
    callback.on_run_start(RunStart(run_dir, config, evaluated, len(history)))
    final: dict[str, Any] | None = None
    status: Literal["finished", "failed", "interrupted"] = "failed"
    try:
        for epoch in range(len(history), config.epochs):
            if ranks.share([patience_spent(history, config.patience)])[0]:  # rank 0's history holds the validation
                break
            started = time.perf_counter()
            record: dict[str, Any] = {"epoch": epoch + 1}
            examples = len(data.train) - (partial["step"] * config.batch_size if partial else 0)
            record["train"] = train_epoch(
                model, optimizer, data, config, epoch, generator, callback, ranks, step_fn, partial, checkpoint
            )
            train_seconds = time.perf_counter() - started
            partial = None
            problem = None
            if ranks.main:  # the others wait: validation and the checkpoint are rank 0's
                record["val"] = evaluate_split(evaluated, data.val.x, y=data.val.y) if len(data.val) else None
                record["seconds"] = round(time.perf_counter() - started, 3)  # the training pass and validation
                record["train_seconds"] = round(train_seconds, 3)
                try:
                    _check_finite(record, config, checkpointed=(run_dir / STATE).is_file())
                    if best is not None:
                        best.offer([*history, record], evaluated)
                    save_checkpoint(
                        run_dir, model, optimizer, generator, [*history, record], average=average, selected=kept(best)
                    )
                except VaekitError as error:
                    problem = str(error)
            ranks.agree(problem)
            history.append(record)
            lr = optimizer.param_groups[0]["lr"]
            speed = examples / max(train_seconds, 1e-9)
            callback.on_epoch_end(EpochEnd(record, config.epochs, lr, speed, evaluated.eval(), held_out))
        run, problem = Run(run_dir, config, evaluated.eval(), history, None), None
        if ranks.main:  # the test split and the pictures are rank 0's; the others wait for the verdict
            try:
                if best is not None and best.epoch:  # from here on the run is its selected weights
                    evaluated.load_state_dict(best.weights)
                run = finish(run_dir, evaluated, data, config, history, pictures)
            except VaekitError as error:
                problem = str(error)
        ranks.agree(problem)
        final, status = run.final, "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        callback.on_run_end(RunEnd(run_dir, history, final, status))
    return run


def kept(best: BestWeights | None) -> dict[str, Any] | None:
    """What state.pt keeps of the selected weights (None when the run keeps the last)."""
    return None if best is None else best.checkpoint()


def _check_finite(record: dict[str, Any], config: TrainConfig, checkpointed: bool) -> None:
    for split in ("train", "val"):
        for name, value in (record[split] or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                where = f"the {split} {name} of epoch {record['epoch']} is {value}"
                raise diverged(config, where, first_step=False, checkpointed=checkpointed)


def finish(
    run_dir: Path,
    model: VAE,
    data: Dataset,
    config: TrainConfig,
    history: list[dict[str, Any]],
    pictures: Pictures | None = None,
) -> Run:
    """Evaluate `model` (the selected epoch's weights) on the test split, write the pictures and metrics.json; the
    run is complete once this returns. `val` and `train` are the selected epoch's, the numbers its weights earned."""
    selection = describe(history, config)
    chosen = selection["selected_epoch"]
    final = {
        "epochs": len(history),
        **selection,
        "test": evaluate_split(model, data.test.x, y=data.test.y),
        "val": history[chosen - 1]["val"],
        "train": history[chosen - 1]["train"],
        "units": "nats per example; bits_per_dim from the negative ELBO",
    }
    if pictures is not None:
        pictures(run_dir, model, data.test, history, config.seed, chosen)
    atomic_write_json(run_dir / FINAL, final)
    return Run(run_dir, config, model.eval(), history, final, chosen)


def _to_device(data: Dataset, device: torch.device) -> Dataset:
    if device.type == "cpu":
        return data
    for split in (data.train, data.val, data.test):
        split.x = split.x.to(device)
        split.y = None if split.y is None else split.y.to(device)
    return data
