"""`vaekit evaluate`, `vaekit gradients`, `vaekit serve`, `vaekit export`: the commands that analyse or ship a finished
run."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from vaekit.cli.common import (
    DeviceOpt,
    RunArg,
    SeedOpt,
    err_console,
    friendly_errors,
    load_on,
    load_test_split,
    load_unconditional,
    out_console,
)
from vaekit.config import ELBO_ESTIMATORS
from vaekit.devices import resolve_device
from vaekit.training import distributed


@friendly_errors
def evaluate(
    run: RunArg,
    k: Annotated[int, typer.Option(help="Importance samples per image (5000 for papers).", min=1)] = 1000,
    split: Annotated[
        str, typer.Option(help="Likelihoods on: test | train | both (both adds the generalization gap).")
    ] = "both",
    prior_samples: Annotated[
        int, typer.Option(help="Draws from the prior for the neighbour audit and sample quality.", min=2)
    ] = 1000,
    seed: SeedOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Held-out log-likelihood, the KL term's anatomy, generalization and sample quality.

    Writes RUN/evaluation.json, RUN/kl_per_dim.png and RUN/neighbours.png; like every command, it writes into the run
    folder.
    """
    from vaekit.analysis.evaluate import NO_BOUND, PER_IMAGE
    from vaekit.analysis.evaluate import evaluate as run_evaluation
    from vaekit.analysis.report import evaluation_tables

    ranks, where = distributed.start(resolve_device(device))  # under torchrun the bounds are shared out over ranks
    try:
        loaded = load_on(run, str(where))
        with scoring_progress(f"evaluating {run} on {loaded.model.device}") as advance:
            evaluation = run_evaluation(
                loaded, k=k, split=split, prior_samples=prior_samples, seed=seed, ranks=ranks, progress=advance
            )
    finally:
        distributed.stop()
    if not ranks.main:
        return
    if as_json:
        out_console.print_json(json.dumps(evaluation.to_dict()))
        return
    if NO_BOUND in evaluation.notes:
        out_console.print(NO_BOUND, highlight=False)  # wrapped to the terminal, as the tables are
    for table in evaluation_tables(evaluation):
        out_console.print(table)
    pictures = ["kl_per_dim.png", "neighbours.png"] if evaluation.kl else ["neighbours.png"]
    bounds = [PER_IMAGE] if any(report.nll is not None for report in evaluation.likelihood) else []
    out_console.print("wrote " + ", ".join(str(run / name) for name in ["evaluation.json", *bounds, *pictures]))


@contextmanager
def scoring_progress(title: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per scored split, with the time left (a k = 5000 bound on MNIST takes minutes), on stderr and
    gone when done; `title` spins beside it for the parts that report no progress."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=err_console, transient=True) as bar:
        bar.add_task(title, total=None)
        tasks: dict[str, TaskID] = {}

        def advance(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done)

        yield advance


@friendly_errors
def gradients(
    run: RunArg,
    repeats: Annotated[
        int, typer.Option(help="Independent estimates per estimator on the same mini-batch.", min=2)
    ] = 100,
    batch_size: Annotated[int, typer.Option(help="Training images in the fixed mini-batch.", min=1)] = 128,
    samples: Annotated[
        int, typer.Option(help="z samples per image in each estimate (the baseline needs 2+).", min=2)
    ] = 4,
    at_init: Annotated[bool, typer.Option("--at-init", help="Also measure the same model at initialisation.")] = False,
    seed: SeedOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Reparameterization vs score-function gradients of the ELBO: variance, SNR, agreement.

    Writes RUN/gradients.json and RUN/gradient_variance.png; like every command, it writes into the run folder.
    """
    from vaekit.analysis.estimators import gradient_lab

    reports = gradient_lab(load_on(run, device), repeats, batch_size, samples, seed, at_init)
    if as_json:
        out_console.print_json(json.dumps([dataclasses.asdict(r) for r in reports]))
        return
    for report in reports:
        table = Table(title=f"ELBO gradient w.r.t. the encoder ({report.label}): {report.repeats} estimates, "
                      f"batch {report.batch_size}, {report.samples} samples per image")  # fmt: skip
        for column in ("estimator", "variance (trace)", "× reparam", "95% interval", "SNR", "cos(mean, reparam)"):
            table.add_column(column, justify="left" if column == "estimator" else "right")
        for estimator in ELBO_ESTIMATORS:
            s = report.overall(estimator)
            low, high = report.ratio_intervals.get(estimator, (1.0, 1.0) if estimator == "reparam" else (math.nan,) * 2)
            table.add_row(estimator, f"{s.variance:.4g}", f"{report.variance_ratio(estimator):,.1f}",
                          f"{low:,.1f} to {high:,.1f}" if estimator != "reparam" else "", f"{s.snr:.3f}",
                          f"{s.cosine_to_reparam:.3f}")  # fmt: skip
        out_console.print(table)
    out_console.print(
        "95% interval: a bootstrap over the estimates, each estimator's and the pathwise ones resampled on their own",
        highlight=False,
    )
    out_console.print(f"wrote {run / 'gradients.json'}, {run / 'gradient_variance.png'}")


ALLOW_HOST_HELP = (
    "Also answer requests whose Host is this name (repeatable). By default only the bound address and localhost, "
    "127.0.0.1, [::1] are answered, so a page elsewhere cannot reach the explorer through DNS rebinding."
)


@friendly_errors
def serve(
    run: RunArg,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps it on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    top_k: Annotated[int, typer.Option(help="Sliders for this many dimensions (largest KL first).", min=1, max=64)] = 8,
    allow_host: Annotated[list[str] | None, typer.Option(help=ALLOW_HOST_HELP, metavar="NAME")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Threads that run the model; more clients queue for them (default: min(4, CPUs)).", min=1),
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Explore the latent space in the browser: sliders, a 2-d pad, interpolation, prior samples."""
    import os

    import torch

    from vaekit.data.sources import CLASS_NAMES
    from vaekit.model.posteriors import need_continuous
    from vaekit.web import server
    from vaekit.web.app import create_app
    from vaekit.web.guards import WILDCARD_BINDS, allowed_hosts

    hosts = allowed_hosts(host, allow_host or [])
    loaded = load_unconditional(run, device, "the explorer")
    need_continuous(loaded.model.posterior, "the explorer's sliders")
    test = load_test_split(loaded.config)
    cpus = os.cpu_count() or 1
    workers = workers or min(4, cpus)
    torch.set_num_threads(max(1, cpus // workers))  # workers × torch threads stays within the machine
    names = CLASS_NAMES.get(loaded.config.data.dataset)
    app_ = create_app(loaded.model, test, str(run), names, top_k, hosts, workers, loaded.config.data)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"note: binding {host} makes the explorer reachable from other machines")
    if host in WILDCARD_BINDS and not allow_host:
        err_console.print("note: other machines are answered only for the names given with --allow-host NAME")
    if "*" in hosts:
        err_console.print(
            "warning: --allow-host '*' answers any Host, so any web page a browser here opens can reach the explorer "
            "through DNS rebinding: give the names clients use instead",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out_console.print(f"latent explorer for {run}: http://{host}:{port}/  (API docs: /docs; Ctrl-C stops)")
    server.serve_app(app_, host, port)


@friendly_errors
def export(
    run: RunArg,
    fmt: Annotated[str, typer.Option("--format", help="What to write: onnx (the only format so far).")] = "onnx",
    out: Annotated[Path | None, typer.Option(help="Folder to write (default: RUN/onnx).", show_default=False)] = None,
) -> None:
    """Write the encoder and decoder as ONNX graphs with a dynamic batch, and export.json saying what they compute."""
    from vaekit.export import FILES, export_run

    folder = export_run(run, out, fmt)
    out_console.print(f"wrote {folder}: " + ", ".join(FILES), highlight=False, soft_wrap=True)
