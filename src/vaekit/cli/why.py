"""`vaekit why`: train the runs the comparison needs in one time budget (or take them from --runs) and write the
report of the four reasons to reparameterize."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vaekit.cli.common import DeviceOpt, Interrupted, SeedOpt, err_console, friendly_errors, out_console
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.training.runs import Run

RUNS_HELP = (
    "Build the report from existing runs instead of training: "
    "vae=PATH[,score-function=PATH,ae=PATH,beta-0.25=PATH,beta-4=PATH,memorize=PATH,mc-kl=PATH]."
)


@friendly_errors
def why(
    dataset: Annotated[
        str | None, typer.Option(help="fashion-mnist | mnist | digits | an image folder | .npy/.npz, with labels.")
    ] = None,
    budget: Annotated[str, typer.Option(help="Training time shared by all runs: 15m, 90s, 1h.")] = "15m",
    out: Annotated[Path, typer.Option(help="Folder for the runs (OUT/runs/ROLE) and the report.")] = Path("why"),
    runs: Annotated[str | None, typer.Option(help=RUNS_HELP, show_default=False)] = None,
    repeats: Annotated[int, typer.Option(help="Gradient estimates per estimator.", min=2)] = 100,
    k: Annotated[int, typer.Option("--k", help="Importance samples per image for the NLL.", min=1)] = 100,
    images: Annotated[int, typer.Option(help="Test images (and as many training images) scored.", min=10)] = 2000,
    prior_samples: Annotated[
        int, typer.Option(help="Draws from the prior for audits, holes and sample quality.", min=10)
    ] = 1000,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """The four reasons to reparameterize, measured on your data: writes OUT/report.html and OUT/report.md."""
    from vaekit.analysis.why import Settings, build_report, summary, write_report
    from vaekit.analysis.why.runs import load_roles, parse_budget, parse_runs, train_in_budget
    from vaekit.api import train
    from vaekit.cli.tools import scoring_progress
    from vaekit.config import DataConfig, TrainConfig
    from vaekit.devices import resolve_device

    if (dataset is None) == (runs is None):
        raise VaekitError("give either --dataset D (train the runs) or --runs vae=PATH,... (use existing runs)")
    where = str(resolve_device(device))
    if runs is not None:
        folders = parse_runs(runs)
    else:
        base = TrainConfig(data=DataConfig(dataset=str(dataset)), device=where, seed=seed)
        seconds = parse_budget(budget)

        def trainer(config: TrainConfig, folder: Path, resume: bool) -> Run:
            err_console.print(f"training {folder} to epoch {config.epochs}", highlight=False)
            return train(config, folder, resume=resume)

        try:
            folders = train_in_budget(base, out, seconds, trainer)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: the runs' last checkpoints are saved in {out / 'runs'}; the same `vaekit why` command "
                "continues them"
            ) from None
    settings = Settings(repeats=repeats, k=k, images=images, samples=prior_samples, seed=seed)
    with scoring_progress(f"measuring the four claims on {len(folders)} runs") as advance:
        report = build_report(load_roles(folders, where), settings, advance)
    written = write_report(report, out)
    for line in summary(report):
        out_console.print(line, highlight=False, soft_wrap=True)
    out_console.print("wrote " + ", ".join(str(path) for path in written), highlight=False, soft_wrap=True)
