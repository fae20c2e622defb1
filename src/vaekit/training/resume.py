"""Where a run starts: afresh, or from its checkpoint with the settings a resume may change; under torchrun, rank 0
decides (it holds the lock and reads the checkpoint) and every rank gets the same answer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from vaekit.config import TrainConfig
from vaekit.errors import VaekitError
from vaekit.model.vae import VAE
from vaekit.training.averaging import WeightAverage
from vaekit.training.distributed import Ranks
from vaekit.training.runs import (
    FINAL,
    STATE,
    load_average,
    load_state,
    load_weights,
    read_config,
    read_final,
    remove_stale_temporaries,
)
from vaekit.training.selection import patience_spent


def agreed_start(
    run_dir: Path, config: TrainConfig | None, resume: bool, ranks: Ranks
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Rank 0 decides where the run starts (it holds the lock and reads the checkpoint); every rank gets the same
    config and state, or the same one-line error."""
    found: list[Any] = [None, None, None]
    if ranks.main:
        try:
            remove_stale_temporaries(run_dir)
            if resume:
                config, state = resume_point(run_dir, config)
            else:
                assert config is not None
                config, state = fresh_start(run_dir, config), None
            found = [None, config.to_dict(), state]
        except VaekitError as error:
            found = [str(error), None, None]
    found = ranks.share(found)
    ranks.agree(found[0])
    agreed = TrainConfig.from_dict(found[1])
    agreed.world_size = ranks.world
    return agreed, found[2]


def fresh_start(run_dir: Path, config: TrainConfig) -> TrainConfig:
    """A new run may go into a folder that holds no finished epoch (a run killed in its first epoch, say)."""
    if (run_dir / STATE).exists() or (run_dir / FINAL).exists():
        raise VaekitError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    return config


RESUMABLE = {
    "epochs",
    "lr",
    "world_size",
    "checkpoint_every",
    "patience",
}  # what a resume may change; anything else would make it another run


def resume_point(run_dir: Path, given: TrainConfig | None) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's own config (with `epochs`/`lr` from `given`) and its checkpoint; None when no epoch finished yet,
    so the run starts from the beginning with the config it was started with. Nothing is written here: the trainer
    writes the config once the data, the model and the checkpoint have all been loaded."""
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
        # written by the trainer once the run has started
        saved.epochs, saved.lr, saved.patience = given.epochs, given.lr, given.patience
    final = read_final(run_dir)
    done = state["epoch"] if state else 0
    finished = final is not None and final.get("epochs") == done
    if done >= saved.epochs and finished:
        raise VaekitError(
            f"{run_dir} already finished its {done} epochs: pass --epochs N (more than {done}) to train further"
        )
    if finished and state is not None and patience_spent(state["history"], saved.patience):
        raise VaekitError(
            f"{run_dir} stopped after {saved.patience} epochs without a better validation ELBO: pass --patience N "
            f"(more than {saved.patience}, or 0 for none) to train further"
        )
    if done > saved.epochs:
        raise VaekitError(f"{run_dir} has trained {done} epochs already: pass --epochs {done} or more")
    return saved, state


def restore(
    state: dict[str, Any],
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    average: WeightAverage | None,
    lr: float,
) -> list[dict[str, Any]]:
    """Load a checkpoint into the run's model, optimizer and generator, checking that each part fits them; returns
    its history. `lr` is the one optimizer setting a resume may change."""
    load_weights(model, state["model"], path)
    if average is not None:
        load_average(average, state, path)
    fix = "delete it to restart the run, or train a new run"
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
        raise VaekitError(f"{path} holds an optimizer state that does not fit this model ({error}): {fix}") from None
    problem = _optimizer_problem(optimizer, settings)
    if problem:
        raise VaekitError(f"{path} holds an optimizer state that does not fit this model ({problem}): {fix}")
    for group in optimizer.param_groups:
        group["lr"] = lr
    try:
        generator.set_state(state["generator"])
    except (RuntimeError, TypeError, ValueError) as error:
        raise VaekitError(f"{path} holds a random generator state that does not fit ({error}): {fix}") from None
    history: list[dict[str, Any]] = state["history"]
    return history


def _optimizer_problem(optimizer: torch.optim.Optimizer, settings: list[dict[str, Any]]) -> str | None:
    """What in a loaded optimizer state would fail at its first step, or None. `load_state_dict` checks only the
    groups' sizes: each group must keep the kind of every setting the optimizer was made with (`settings`), and each
    parameter's state must hold exactly the entries one step of this optimizer makes, tensors of the right shape."""
    for group, made in zip(optimizer.param_groups, settings, strict=True):
        for key, value in made.items():
            if not _same_kind(group.get(key), value):
                return f"the setting {key!r} is {group.get(key)!r}"
    entries = _entries_of_a_step(optimizer, settings[0])
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            held = optimizer.state.get(parameter, {})
            if held and set(held) != entries:
                return f"a parameter's state holds {sorted(map(str, held))}, not {sorted(entries)}"
            for name, value in held.items():
                if not isinstance(value, torch.Tensor) or (value.dim() > 0 and value.shape != parameter.shape):
                    return f"{name} is not a tensor of its parameter's shape"
    return None


def _same_kind(saved: Any, made: Any) -> bool:
    if isinstance(made, bool) or made is None:
        return type(saved) is type(made)
    if isinstance(made, int | float):
        return isinstance(saved, int | float) and not isinstance(saved, bool)
    if isinstance(made, tuple | list):
        return isinstance(saved, tuple | list) and len(saved) == len(made) and all(map(_same_kind, saved, made))
    return type(saved) is type(made)


def _entries_of_a_step(optimizer: torch.optim.Optimizer, settings: dict[str, Any]) -> set[str]:
    """The state entries one step of this optimizer, with these settings, makes for a parameter."""
    probe = torch.zeros(1, requires_grad=True)
    probe.grad = torch.ones(1)
    stepped = type(optimizer)([probe], **{k: v for k, v in settings.items() if k in optimizer.defaults})
    stepped.step()
    return set(stepped.state[probe])
