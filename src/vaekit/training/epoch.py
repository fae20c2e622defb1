"""One pass over the training split: batches sliced from a per-epoch permutation, KL warm-up, the objective's step
on one process or many, and the stop when the loss diverges.

`vaekit.training.loop` runs the epochs around it: set-up, validation, checkpoints and the run's finish.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import TrainConfig, as_flags
from vaekit.data.scoring import Scoring
from vaekit.data.sources import Dataset
from vaekit.devices import RunningSum
from vaekit.errors import VaekitError
from vaekit.model.objectives import objective_of
from vaekit.model.randomness import BatchSlice, Randomness
from vaekit.model.vae import VAE
from vaekit.training.callbacks import STEP_EVERY, Callback, StepEnd
from vaekit.training.distributed import Ranks
from vaekit.training.precision import prepare_networks


def batches(x: Tensor, batch_size: int, order: Tensor, first_step: int = 0) -> Iterator[Tensor]:
    """Slices of one random permutation `order` (from step `first_step` on, to resume inside an epoch): no
    per-sample Python, no DataLoader, no copies beyond the batch."""
    for start in range(first_step * batch_size, len(x), batch_size):
        yield x.index_select(0, order[start : start + batch_size])


def beta_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear KL warm-up: β·min(1, step / (warmup_epochs · steps_per_epoch))."""
    if config.warmup_epochs <= 0:
        return config.beta
    return config.beta * min(1.0, step / (config.warmup_epochs * steps_per_epoch))


class ObjectiveStep(nn.Module):
    """The training forward pass as a module, so that DistributedDataParallel can hook its backward. Returns per
    example: log p(x|z), the KL, a third term for the record (`extra_term`; None when the objective has none) and the
    objective to maximize."""

    def __init__(self, model: VAE, config: TrainConfig, ranks: Ranks = Ranks()) -> None:
        super().__init__()
        self.model, self.config, self.ranks = model, config, ranks

    def forward(
        self, x: Tensor, source: Randomness, beta: float, batch: int, y: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        config = self.config
        terms = objective_of(config).terms(self.model, x, source, config, y)

        def batch_mean(per_example: Tensor) -> Tensor:  # over the global batch, whatever the number of processes
            return self.ranks.sum(per_example.sum(0)) / batch

        value = terms.objective(beta, config.free_bits, batch_mean)
        extra = terms.bound if terms.bound is not None else terms.relaxed_log_px
        return terms.log_px, terms.kl, extra, value


def extra_term(model: VAE, config: TrainConfig) -> str | None:
    """What the third running sum of the loop records: the objective says (the importance-weighted bound, or the
    relaxed surrogate's reconstruction term of Gumbel-softmax training beside the exact one, or nothing)."""
    return objective_of(config).extra_term(model, config)


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    config: TrainConfig,
    epoch: int,
    generator: torch.Generator,
    callback: Callback | None = None,
    ranks: Ranks = Ranks(),
    step_fn: nn.Module | None = None,
    partial: dict[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """One pass over the training split; the record holds the epoch's mean ELBO terms, in the units
    `vaekit.training.loop.evaluate_split` reports (log p(x|z) of the data as stored, at exact samples of q).

    Every rank walks the same global batches and draws their randomness in full (binarization, dequantization, ε),
    then keeps its own rows; its loss is its rows' share of the global batch's mean, scaled by the world size
    because DistributedDataParallel averages the gradients over ranks (`step_fn` is the model's ObjectiveStep,
    wrapped in it). So 1 and N processes take the same steps.

    Every `config.checkpoint_every` minutes (rank 0's clock, agreed at the loop's sync points) `checkpoint` is given
    the epoch's position: its permutation, the next step and the running sums; `partial` resumes from one.
    """
    step_fn = step_fn or ObjectiveStep(model, config, ranks)
    callback = callback or Callback()
    step_fn.train()
    prepare_networks(model, config.precision, config.compile)  # once per model; evaluate_split runs them too
    x_all = data.train.x
    scoring = Scoring.of(config.model, config.data)  # fresh binarization or dequantization noise on every pass
    offset = scoring.offset(x_all)
    steps = math.ceil(len(x_all) / config.batch_size)
    if partial is None:
        order, first_step = torch.randperm(len(x_all), generator=generator, device=x_all.device), 0
    else:
        order, first_step = partial["order"].to(x_all.device), partial["step"]
    # The saved sums are already summed over ranks: rank 0 alone carries them on.
    sums = StepSums(x_all.device, first_step, partial["sums"] if partial is not None and ranks.main else None)
    last_save = time.monotonic()
    checkpointed = epoch > 0 or partial is not None  # a checkpoint exists on disk to continue from
    # A conditional model's labels follow their images through the same permutation, and each rank keeps its rows.
    y_all = data.train.y if model.conditional else None
    y_batches = itertools.repeat(None) if y_all is None else batches(y_all, config.batch_size, order, first_step)
    x_batches = batches(x_all, config.batch_size, order, first_step)
    for step, (x_batch, y_batch) in enumerate(zip(x_batches, y_batches, strict=False), start=first_step):
        start, stop = ranks.slice_of(len(x_batch))
        x = scoring.input(x_batch, generator, fresh=True)[start:stop]
        y = None if y_batch is None else y_batch[start:stop]
        global_step = epoch * steps + step + 1
        model.posterior.at_step(global_step)
        source = BatchSlice(generator, start, stop, len(x_batch)) if ranks.world > 1 else generator
        beta = beta_at(config, global_step, steps)
        log_px, kl, extra, value = step_fn(x, source, beta, len(x_batch), y)
        loss = value.sum() * (-ranks.world / len(x_batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums.add(step, log_px, kl, extra, loss)
        if step % STEP_EVERY == 0 or step == steps - 1:  # reading the loss syncs; not every step, and the flag with it
            due = ranks.main and time.monotonic() - last_save >= 60 * config.checkpoint_every
            first_bad = sums.fold(step)  # 1 + the epoch's first step whose loss was NaN or infinite, or 0
            due_flag = torch.tensor(int(due), device=first_bad.device)
            bad_step, save_now = ranks.max(torch.stack([first_bad, due_flag])).tolist()
            if bad_step:
                raise diverged(
                    config,
                    f"the loss became NaN or infinite at epoch {epoch + 1}, step {bad_step} of {steps}",
                    first_step=epoch == 0 and bad_step == 1,
                    checkpointed=checkpointed,
                )
            mean_loss = ranks.sum(loss.detach().to(sums.dtype)).item() / ranks.world - offset
            callback.on_step_end(StepEnd(epoch + 1, config.epochs, step + 1, steps, mean_loss))
            if save_now and checkpoint is not None and step < steps - 1:
                checkpoint({"step": step + 1, "order": order.cpu(), "sums": ranks.sum(sums.total.clone()).cpu()})
                last_save, checkpointed = time.monotonic(), True
    log_px_mean, kl_mean, extra_mean = (ranks.sum(sums.total.clone()) / len(x_all)).tolist()
    record = {"elbo": log_px_mean + offset - kl_mean, "log_px": log_px_mean + offset, "kl": kl_mean, "beta": beta}
    record.update(model.posterior.record())
    extra_name = extra_term(model, config)
    if extra_name is not None:
        record[extra_name] = extra_mean + offset
    return record


class StepSums:
    """The epoch's sums of log p(x|z), the KL and the extra term, and the first step whose loss was not finite.

    A step writes one row of a small float32 buffer on the device (its three sums and its loss: one op, nothing read
    back). At the loop's sync points `fold` adds the rows written since the last one to float64 totals and looks for
    a NaN or infinite loss among them. Folding at fixed steps keeps a resumed epoch exact: it continues from a sync
    point, so it folds the same rows in the same order as the run that was not interrupted.
    """

    def __init__(self, device: torch.device, first_step: int, carried: Tensor | None = None) -> None:
        self.rows = torch.zeros(STEP_EVERY + 1, 4, device=device)  # the most rows between two sync points, and one
        self.totals = RunningSum(3, device)
        if carried is not None:
            self.totals.total.copy_(carried)
        self.dtype = self.totals.dtype
        self.folded = first_step  # the first step not yet added to the totals
        self.none = torch.zeros((), device=device)

    @property
    def total(self) -> Tensor:
        return self.totals.total

    def add(self, step: int, log_px: Tensor, kl: Tensor, extra: Tensor | None, loss: Tensor) -> None:
        terms = (log_px, kl, self.none if extra is None else extra, loss)
        torch.stack([t.detach().sum() for t in terms], out=self.rows[step - self.folded])

    def fold(self, step: int) -> Tensor:
        """Add the rows of steps up to `step` to the totals; return 1 + the first of those steps (counted in the
        epoch) whose loss was NaN or infinite, or 0 when every one was finite."""
        rows = self.rows[: step + 1 - self.folded]
        self.totals.add(rows[:, :3].sum(0, dtype=self.dtype))
        bad = ~rows[:, 3].isfinite()
        first_bad = torch.where(bad.any(), bad.int().argmax() + self.folded + 1, 0)
        self.folded = step + 1
        return first_bad


class TrainingDiverged(VaekitError):
    """The loss or a metric became NaN or infinite; the last good checkpoint, if any, is left as it was."""


# Settings that scale the loss or the sampling noise: set far from their defaults, they can make the loss overflow
# from the very first step, before the learning rate has moved a single weight.
LOSS_SCALE_SETTINGS = ("gaussian_scale", "beta", "free_bits", "temperature", "temperature_min", "precision")


def diverged(config: TrainConfig, where: str, *, first_step: bool, checkpointed: bool) -> TrainingDiverged:
    """The one message for a loss that stopped being finite, saying only what is true of this run: whether a
    checkpoint exists to continue from, and which causes are possible (none of the learning rate's doing when the
    very first step, taken before any update, already failed)."""
    settings = as_flags(config, LOSS_SCALE_SETTINGS)
    named = f" ({', '.join(settings)})" if settings else ""
    if first_step:
        return TrainingDiverged(
            f"training diverged: the loss was NaN or infinite at the first step, before any update, so the learning "
            f"rate is not the cause; no checkpoint was written. Likely cause: a setting that scales the loss{named}, "
            "or the data: change it and train again"
        )
    lower = f"{config.lr / 3:.2g}"
    causes = f"a learning rate too high for this model and data (--lr {config.lr:g})"
    if settings:
        causes += f", or a setting that scales the loss{named}"
    if checkpointed:
        return TrainingDiverged(
            f"training diverged: {where}; the last good checkpoint is kept. Likely cause: {causes}: continue with "
            f"`vaekit train --resume --out RUN --lr {lower}`"
        )
    return TrainingDiverged(
        f"training diverged: {where}; no checkpoint was written yet. Likely cause: {causes}: train again with "
        f"--lr {lower}"
    )
