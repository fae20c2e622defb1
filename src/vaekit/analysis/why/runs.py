"""The runs the comparison needs, trained with the same networks in one shared time budget, or named by the user.

Every run is an ordinary run folder, DIR/runs/ROLE. The budget is split evenly; a run trains one epoch, then as many
more as the time it measured per epoch says fit in its share. Whether a run is done is read from its folder alone (the
seconds its epochs took), so an interrupted `vaekit why` resumes each run where it stopped and reuses finished ones.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vaekit.config import TrainConfig, with_overrides
from vaekit.data.sources import load_dataset, split_off
from vaekit.errors import VaekitError
from vaekit.files import atomic_write
from vaekit.training.runs import CONFIG, Run, load_run, read_history

VAE, SCORE_FUNCTION, AE, MEMORIZE, MC_KL = "vae", "score-function", "ae", "memorize", "mc-kl"
BETAS = (0.25, 4.0)  # with the VAE's β = 1, the sweep
MEMORIZE_IMAGES, MEMORIZE_EPOCHS = 200, 300  # a small subset, trained long: what copying training images looks like
SUBSET_SEED = 11
ROLES: dict[str, dict[str, object]] = {  # role → the settings that differ from the VAE's
    VAE: {},
    SCORE_FUNCTION: {"estimator": "score-function-baseline", "samples": 4},
    AE: {"kind": "ae"},
    **{f"beta-{beta:g}": {"beta": beta} for beta in BETAS},
    MEMORIZE: {"val_size": 0, "batch_size": 32},
    MC_KL: {"objective": "iwae", "k": 1},  # the ELBO with its KL sampled at z ~ q(z|x) instead of in closed form
}
Trainer = Callable[[TrainConfig, Path, bool], Run]  # (config, run folder, resume) → the run; `vaekit.train` in use


def parse_budget(text: str) -> float:
    """ "15m", "90s", "1h" or a number of seconds → seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise VaekitError(f"--budget {text!r} is not a positive duration: use e.g. 15m, 90s or 1h")
    return seconds


def parse_runs(text: str) -> dict[str, Path]:
    """ "vae=PATH,ae=PATH,…" → role → run folder; every role one of ROLES (beta-X for any β)."""
    roles: dict[str, Path] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, _, path = item.partition("=")
        if not path or not (role in ROLES or role.startswith("beta-")):
            raise VaekitError(
                f"--runs item {item!r}: write ROLE=PATH with ROLE one of {', '.join(ROLES)} (beta-X for any β)"
            )
        roles[role] = Path(path)
    if VAE not in roles:
        raise VaekitError("--runs needs the VAE itself: add vae=PATH (the other roles are controls)")
    return roles


def next_epochs(seconds: list[float], share: float, cap: int) -> int | None:
    """The epoch total to train to next, or None when the run is done: one epoch to time it, then as many as the
    time left in its share allows at the mean seconds per epoch so far (at most `cap`)."""
    done = len(seconds)
    if done == 0:
        return 1
    per_epoch = max(sum(seconds) / done, 1e-6)
    more = math.floor((share - sum(seconds)) / per_epoch)
    return None if more < 1 or done >= cap else min(cap, done + more)


def role_config(base: TrainConfig, role: str, folder: Path) -> TrainConfig:
    """The VAE's config with the role's changes; the memorizing control trains on a subset written into `folder`."""
    changes = dict(ROLES.get(role, {}))
    if role == MEMORIZE:
        changes["dataset"] = str(write_subset(base, folder.resolve() / f"subset-{MEMORIZE_IMAGES}.npz"))
    return with_overrides(base, changes)


def write_subset(base: TrainConfig, path: Path) -> Path:
    """MEMORIZE_IMAGES training images of the base data with the whole test split, as an .npz the loaders read: the
    control is tested on exactly the images the VAE is tested on. Written once; kept for a resume."""
    if path.is_file():
        return path
    data = load_dataset(dataclasses.replace(base.data, binarize="none"))
    if len(data.train) < 2 * MEMORIZE_IMAGES:
        raise VaekitError(
            f"{base.data.dataset} has {len(data.train)} training images, too few for a {MEMORIZE_IMAGES}-image "
            "memorizing control: use a larger dataset, or give the runs with --runs"
        )
    subset = split_off(data.train, MEMORIZE_IMAGES, SUBSET_SEED)[1]
    arrays = {"x": subset.x.numpy(), "x_test": data.test.x.numpy()}
    if subset.y is not None and data.test.y is not None:
        arrays |= {"y": subset.y.numpy(), "y_test": data.test.y.numpy()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write(path, buffer.getvalue())
    return path


def train_in_budget(base: TrainConfig, out: Path, budget: float, trainer: Trainer) -> dict[str, Path]:
    """Train (or resume, or reuse) every role under out/runs with an even share of `budget` seconds each."""
    share = budget / len(ROLES)
    folders = {}
    for role in ROLES:
        folder = out / "runs" / role
        config = role_config(base, role, out)
        cap = MEMORIZE_EPOCHS if role == MEMORIZE else 10**6
        while (target := next_epochs([r.get("seconds", 0.0) for r in read_history(folder)], share, cap)) is not None:
            trainer(dataclasses.replace(config, epochs=target), folder, (folder / CONFIG).is_file())
            if len(read_history(folder)) < target:  # a trainer that stops short would loop here forever
                raise VaekitError(f"{folder} stopped before epoch {target}: run `vaekit why` again to resume it")
        folders[role] = folder
    return folders


def load_roles(folders: dict[str, Path], device: str = "cpu") -> dict[str, Run]:
    """Every role's run, loaded on `device`; the VAE must be a VAE with Gaussian codes."""
    runs = {role: load_run(path, device) for role, path in folders.items()}
    vae = runs[VAE].model
    if not (vae.posterior.has_density and vae.posterior.continuous):
        raise VaekitError(f"{folders[VAE]} is not a VAE with Gaussian codes: give such a run as vae=PATH")
    conditional = [str(folders[role]) for role, run in runs.items() if run.model.conditional]
    if conditional:
        raise VaekitError(
            f"{', '.join(conditional)} trained with --condition label: the report compares unconditional runs; "
            "give runs trained without it"
        )
    return runs
