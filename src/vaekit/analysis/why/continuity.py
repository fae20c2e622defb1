"""Claim 2: a continuous latent space. Paths between prior samples, scored for length and realism in classifier
features, for the VAE, the autoencoder decoding N(0, I) samples, and the autoencoder decoding samples of a mixture
fitted to its codes (Ghosh et al. 2020); the prior's holes; an MMD between codes and N(0, I); and today's
encoded-endpoint smoothness, the control on which VAE and autoencoder are on a par."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from vaekit.analysis.aggregate_sampler import fit_aggregate_gmm
from vaekit.analysis.intervals import bootstrap, weighted_mean
from vaekit.analysis.smoothness import smoothness
from vaekit.analysis.why import figures, verdicts
from vaekit.analysis.why.base import Context, Section, Table, fmt, missing, subset
from vaekit.analysis.why.evidence import Evidence
from vaekit.analysis.why.measures import held_out_off_manifold, mmd, path_realism
from vaekit.analysis.why.runs import AE, VAE
from vaekit.data.scoring import Scoring
from vaekit.devices import generator_on
from vaekit.training.runs import Run

VAE_ROW = "VAE, prior samples"
AE_GAUSSIAN = "AE, samples of a Gaussian fitted to its codes"  # the control that could win: whitened codes


def continuity(ctx: Context) -> Section:
    s = ctx.settings
    rows: dict[str, tuple[Run, Any]] = {VAE_ROW: (ctx.vae, ctx.vae.model.prior_sample)}
    section = Section.start("continuity")
    ae = ctx.runs.get(AE)
    if ae is not None:
        rows[AE_GAUSSIAN] = (ae, fit_aggregate_gmm(ae, components=1, seed=s.seed, cache=False).sample)
        rows["AE, N(0, I) samples"] = (ae, ae.model.prior_sample)
        rows["AE, samples of a mixture fitted to its codes"] = (ae, fit_aggregate_gmm(ae, seed=s.seed).sample)
        rows["VAE, samples of a mixture fitted to its codes"] = (
            ctx.vae, fit_aggregate_gmm(ctx.vae, seed=s.seed, cache=False).sample
        )  # fmt: skip
    else:
        section.missing.append(missing(AE, "nothing shows what the same networks give without the noise and the KL"))
    realism, pictures = {}, {}
    for name, (run, sampler) in rows.items():
        realism[name], pictures[name] = path_realism(
            run.model, ctx.space, sampler, name, ctx.real, s.paths, s.steps, s.samples, s.seed
        )
    held_out = ctx.space.embed(subset(ctx.grey.train, len(ctx.real)).x)
    floor = held_out_off_manifold(ctx.real, held_out)
    section.tables.append(
        Table(
            f"slerp paths between sampler draws, {s.paths} paths of {s.steps} steps, in classifier features; "
            f"the off-manifold share counts the inner points (endpoints excluded); {floor:.1%} of real held-out "
            "images lie off it",
            [
                "model and sampler",
                "path length (PPL, features)",
                "mean confidence",
                "off manifold along paths",
                "prior holes",
            ],
            [
                [n, f"{r.ppl:.4g}", f"{r.confidence:.3f}", f"{r.off_manifold:.1%}", f"{r.prior_holes:.1%}"]
                for n, r in realism.items()
            ],
        )
    )
    test_x = ctx.data.test.x[: s.images]
    gauss = torch.randn(len(test_x), ctx.vae.model.latent_dim, generator=torch.Generator().manual_seed(s.seed))
    codes = {role: _codes(ctx.runs[role], test_x) for role in (VAE, AE) if role in ctx.runs}
    discrepancy = {role: mmd(c, gauss) for role, c in codes.items()}
    parity = {
        role: smoothness(ctx.runs[role].model, ctx.data.test, ctx.space, s.paths, s.steps, s.seed) for role in codes
    }
    section.tables.append(
        Table(
            "codes against N(0, I); paths between encoded test images (the control: both are smooth there)",
            [
                "run",
                "MMD² (test means vs N(0, I))",
                "max/mean step, features (encoded ends)",
                "off either class (encoded ends)",
            ],
            [
                [
                    r,
                    f"{discrepancy[r]:.4f}",
                    f"{parity[r].stats[-1].mean_max_over_mean:.2f}",
                    fmt(parity[r].off_manifold, ".1%"),
                ]
                for r in codes
            ],
        )
    )
    vae_row = realism[VAE_ROW]
    section.headline = f"{vae_row.off_manifold:.1%}"
    control = realism.get(AE_GAUSSIAN)
    if control is not None:
        vae_paths, ae_paths = (torch.tensor(r.off_by_path, dtype=torch.float64) for r in (vae_row, control))
        section.evidence = Evidence(
            "the share of inner path points off the manifold for the autoencoder decoding a Gaussian fitted to its "
            "codes (its codes whitened) minus the VAE's from its prior",
            float(ae_paths.mean() - vae_paths.mean()),
            bootstrap(_difference(vae_paths, ae_paths), [vae_paths, ae_paths], seed=s.seed),
            null=0.0, side="above", n=s.paths, unit="paths per sampler",
        )  # fmt: skip
        section.confirmed = section.evidence.confirmed
    others = {name: r.off_manifold for name, r in realism.items() if name != VAE_ROW}
    section.verdict = verdicts.continuity_verdict(section.evidence, vae_row.off_manifold, others, floor)
    section.figures.append(
        ("decoded paths between sampler draws (rows: paths; left to right: t = 0 … 1)", figures.paths_figure(pictures))
    )
    section.numbers = {
        "paths": {n: dataclasses.asdict(r) for n, r in realism.items()},
        "held_out_off_manifold": floor,
        "mmd": discrepancy,
        "encoded_paths": {r: dataclasses.asdict(p) for r, p in parity.items()},
    }
    return section


def _difference(vae: Tensor, ae: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """The resampled statistic: the autoencoder's mean share minus the VAE's, each over its own paths' counts."""
    return lambda v, a: weighted_mean(a, ae) - weighted_mean(v, vae)


@torch.no_grad()
def _codes(run: Run, x: Tensor) -> Tensor:
    """Posterior means of the images, scored as `kl_report` scores them."""
    device = run.model.device
    return run.model.encode(Scoring.of(run.model.config).input(x.to(device), generator_on(device, 0))).mean.cpu()
