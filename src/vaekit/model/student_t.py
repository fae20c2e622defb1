"""The Student-t likelihood: p(x|z) = Π t_ν(x; sigmoid(out), σ) with one learned scale σ and ν degrees of freedom.

Its tails fall polynomially, so a pixel the decoder gets badly wrong costs log|residual| rather than the Gaussian's
residual²: a few outlying pixels (a scratch, a stray label) do not dominate the loss. ν sets how heavy the tails are:
ν = 1 is the Cauchy, large ν approaches the Gaussian. Like the Gaussians it is a density on [0, 1]-valued pixels,
scored on dequantized 8-bit data.

This module is the whole part, its own setting (`--dof`) included: the distribution, its head, what an export holds
of it, and its registration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig, TrainConfig, options_of, setting
from vaekit.model.heads import DEQUANTIZED, Likelihood, register
from vaekit.model.likelihoods import LOG_SCALE_MIN, sum_event
from vaekit.parts import Exported, Output, Requirement

INITIAL_SCALE = 0.1  # σ at the first step, about the spread of a decoder's first guesses on [0, 1] pixels
MAX_DOF = 1e6  # past this the t is a Gaussian to float32's precision


@dataclass(frozen=True)
class StudentTSettings:
    """The part's own setting: a `vaekit train` flag, a TOML key and a config value, declared here alone."""

    dof: float = setting(4.0, "Degrees of freedom ν of the student-t likelihood: 1 is Cauchy, large is Gaussian.")


class StudentT:
    """p(x|z) = Π_j t_ν((x_j − loc_j) / σ_j) / σ_j, with log σ given (it broadcasts over the pixels)."""

    export: Exported = (
        Output("mean", "loc", "Student-t location per pixel, in [0, 1] (the sigmoid is applied): the picture"),
        Output(
            "log_scale",
            "log_scale",
            "log σ per pixel: a sample is mean + exp(log_scale) * t, t a standard Student-t draw with the run's "
            "model.options.dof degrees of freedom",
        ),
    )

    def __init__(self, loc: Tensor, log_scale: Tensor, dof: float, event_ndim: int = 3) -> None:
        self.loc = loc
        self.log_scale = log_scale.expand_as(loc)
        self.dof = dof
        self.event_ndim = event_ndim

    @property
    def mean(self) -> Tensor:
        return self.loc  # the location: the mean wherever ν > 1, and the median always

    def log_prob(self, x: Tensor) -> Tensor:
        """Σ_j [log Γ((ν+1)/2) − log Γ(ν/2) − ½ log(νπ) − log σ_j − (ν+1)/2 · log(1 + r_j²/ν)], r = (x − loc)/σ."""
        nu = self.dof
        constant = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        residual = (x - self.loc) * torch.exp(-self.log_scale)
        per_pixel = constant - self.log_scale - (nu + 1) / 2 * torch.log1p(residual.square() / nu)
        return sum_event(per_pixel, self.event_ndim)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """loc + σ·t with t from Bailey's polar method (1994): u, v uniform on the disc, w = u² + v², then
        t = u·sqrt(ν(w^(−2/ν) − 1)/w). Draws outside the disc are redrawn, so every draw comes from `generator`."""
        t = torch.empty_like(self.loc)
        todo = torch.ones_like(self.loc, dtype=torch.bool)
        while todo.any():
            uv = torch.rand((2, int(todo.sum())), generator=generator, dtype=self.loc.dtype, device=self.loc.device)
            u, v = uv * 2 - 1
            w = u.square() + v.square()
            inside = (w < 1) & (w > 0)
            drawn = u[inside] * torch.sqrt(self.dof * (w[inside] ** (-2 / self.dof) - 1) / w[inside])
            where = todo.nonzero(as_tuple=True)
            chosen = tuple(index[inside] for index in where)
            t[chosen] = drawn
            todo[chosen] = False
        return self.loc + torch.exp(self.log_scale) * t


class StudentTHead(nn.Module):
    """Decoder output → Student-t with location sigmoid(out), one learned scale floored like the Gaussians' σ, and
    the run's ν."""

    channels, scores = 1, DEQUANTIZED

    def __init__(self, dof: float) -> None:
        super().__init__()
        self.dof = dof
        self.log_scale = nn.Parameter(torch.tensor(math.log(INITIAL_SCALE)))

    def forward(self, out: Tensor) -> Likelihood:
        return StudentT(torch.sigmoid(out), self.log_scale.clamp_min(LOG_SCALE_MIN), self.dof)


def _build(config: ModelConfig) -> nn.Module:
    return StudentTHead(options_of(config, StudentTSettings).dof)


def _dof_in_range(config: TrainConfig) -> bool:
    return 0 < options_of(config.model, StudentTSettings).dof <= MAX_DOF


register(
    "student-t",
    "one learned scale, ν = --dof, heavy tails",
    _build,
    DEQUANTIZED,
    settings=StudentTSettings,
    requires=(Requirement(_dof_in_range, f"--dof must be above 0 and at most {MAX_DOF:g}: change that setting"),),
)
