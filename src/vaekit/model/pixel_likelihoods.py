"""Likelihoods that are true distributions of pixel data: the continuous Bernoulli for grey values in [0, 1], the
discretized logistic mixture for 8-bit images.

Both follow the interface of `Bernoulli` and `Gaussian`: built from decoder output (..., C, H, W) (the mixture from
(..., C·3·mixtures, H, W)), `mean` in [0, 1] for pictures, `log_prob(x)` in nats summed over the event dimensions,
with leading sample dimensions of the parameters broadcasting against x (N, C, H, W), and `sample(generator)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.errors import VaekitError
from vaekit.model.likelihoods import sum_event
from vaekit.parts import Exported, Output

# Inside |logits| < SERIES_LIMIT the closed forms of the continuous Bernoulli divide 0 by 0 at logits = 0 and lose
# digits (and gradient accuracy) near it; their Taylor series, kept to l⁸, are exact to ~1e-12 there.
SERIES_LIMIT = 0.25
# PixelCNN++ floors the logistic log-scales: e^-7 ≈ 1e-3, an eighth of a bin in [-1, 1], already a near point mass.
LOG_SCALE_MIN = -7.0
# 8-bit data on [-1, 1]: bins are 2/255 wide and centred on the grid, so each bin reaches 1/255 either side.
HALF_BIN = 1.0 / 255.0
LOG_BIN = math.log(2.0 / 255.0)


def check_event_ndim(params: Tensor, event_ndim: int, what: str) -> None:
    """One line naming the mismatch, rather than a shape error deep inside a sum."""
    if not 0 <= event_ndim <= params.dim():
        raise VaekitError(
            f"event_ndim={event_ndim} does not fit {what} of shape {tuple(params.shape)}: "
            f"pass an event_ndim between 0 and {params.dim()} (3 for images (C, H, W))"
        )


def linear_term(params: Tensor, x: Tensor, event_ndim: int) -> Tensor:
    """Σ_event params·x without expanding x over the leading sample dimensions of params (as `Bernoulli` does)."""
    if event_ndim == 0:
        return params * x
    summed: Tensor = torch.linalg.vecdot(params.flatten(-event_ndim), x.flatten(-event_ndim))
    return summed


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    """log C(λ), λ = sigmoid(l), elementwise, stable for any finite l.

    C(λ) = 2·atanh(1−2λ)/(1−2λ); with 1−2λ = −tanh(l/2) and atanh(1−2λ) = −l/2 this is C = l / tanh(l/2), even in l.
    For a = |l|: log C = log a − log tanh(a/2) = log a − log(−expm1(−a)) + softplus(−a), with no overflow at any a.
    Near 0, x·coth(x) at x = l/2 gives log C = log 2 + l²/12 − 7l⁴/1440 + 62l⁶/181440 − 127l⁸/4838400.
    """
    small = logits.abs() < SERIES_LIMIT
    a = torch.where(small, torch.ones_like(logits), logits.abs())  # a safe value where the series is used
    closed = torch.log(a) - torch.log(-torch.expm1(-a)) + F.softplus(-a)
    l2 = logits.square()
    series = math.log(2.0) + l2 * (1 / 12 + l2 * (-7 / 1440 + l2 * (62 / 181440 + l2 * (-127 / 4838400))))
    return torch.where(small, series, closed)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """E[x] = λ/(2λ−1) + 1/(2·atanh(1−2λ)) = ½ + ½·(coth(l/2) − 2/l), ½ plus half the Langevin function of l/2.

    Near 0 the Langevin series L(y) = y/3 − y³/45 + 2y⁵/945 − y⁷/4725 replaces the cancelling difference.
    """
    small = logits.abs() < SERIES_LIMIT
    y = torch.where(small, torch.ones_like(logits), logits) / 2
    closed = 1 / torch.tanh(y) - 1 / y
    y = logits / 2
    y2 = y.square()
    series = y * (1 / 3 + y2 * (-1 / 45 + y2 * (2 / 945 + y2 * (-1 / 4725))))
    return 0.5 + 0.5 * torch.where(small, series, closed)


def log_bin_width_factor(log_scale: Tensor) -> Tensor:
    """log(1 − e^(−δ)) for δ = (2/255)·e^(−log_scale), the last factor of a bin's probability, for any log-scale:
    below δ = 1e-3 it is log δ − δ/2 (exact to δ²/24), with log δ formed without computing δ, which underflows."""
    delta = torch.exp(LOG_BIN - log_scale)
    small = delta < 1e-3
    closed = torch.log(-torch.expm1(-torch.where(small, torch.ones_like(delta), delta)))
    return torch.where(small, LOG_BIN - log_scale - delta / 2, closed)


class ContinuousBernoulli:
    """p(x|z) = Π C(λ) λ^x (1−λ)^(1−x) on [0, 1], λ = sigmoid(logits) (Loaiza-Ganem & Cunningham 2019).

    The Bernoulli's log-likelihood of grey values is not normalized on [0, 1]; C(λ) makes it a density, so
    log p = x·l − softplus(l) + log C(λ) is a true log-likelihood of continuous pixels (nats, summed over the event).
    """

    export: Exported = (
        Output(
            "logits",
            "logits",
            "continuous Bernoulli logits l per pixel, lambda = sigmoid(l); the picture is its mean "
            "0.5 + 0.5 * (coth(l / 2) - 2 / l), which is 0.5 at l = 0 (not lambda)",
        ),
    )

    def __init__(self, logits: Tensor, event_ndim: int = 3) -> None:
        check_event_ndim(logits, event_ndim, "the continuous Bernoulli's logits")
        self.logits = logits
        self.event_ndim = event_ndim

    @property
    def log_normalizer(self) -> Tensor:
        """log C(λ) per pixel, (..., C, H, W)."""
        return continuous_bernoulli_log_norm(self.logits)

    @property
    def mean(self) -> Tensor:
        """The distribution's mean, which lies between λ and ½ (not λ: a picture of λ would be too contrasted)."""
        return continuous_bernoulli_mean(self.logits)

    def log_prob(self, x: Tensor) -> Tensor:
        """Σ_j x_j·l_j − softplus(l_j) + log C(λ_j), one value per example (and per leading sample)."""
        per_pixel = F.softplus(self.logits) - self.log_normalizer
        return linear_term(self.logits, x, self.event_ndim) - sum_event(per_pixel, self.event_ndim)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Inverse-CDF draws: F(x) = (e^(l·x) − 1)/(e^l − 1), so x = log1p(u·expm1(l))/l for u ~ U(0, 1).

        Written for a = |l| and mirrored for l < 0 (X ~ CB(−l) is 1 − X' with X' ~ CB(l)); for a > 1 the same
        inverse is 1 + log(u + (1−u)·e^(−a))/a, which cannot overflow; for tiny a, x = u + u(1−u)·a/2.
        """
        with torch.no_grad():
            logits = self.logits
            u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
            u = torch.where(logits < 0, 1 - u, u)
            a = logits.abs()
            mid = a.clamp(1e-3, 1.0)  # each branch sees only the values it is safe for
            moderate = torch.log1p(u * torch.expm1(mid)) / mid
            large = 1 + torch.log(u + (1 - u) * torch.exp(-a)) / a.clamp(min=1.0)
            tiny = u + u * (1 - u) * a / 2
            x = torch.where(a > 1.0, large, torch.where(a < 1e-3, tiny, moderate))
            return torch.where(logits < 0, 1 - x, x).clamp(0.0, 1.0)


class DiscretizedLogisticMixture:
    """p(v) for 8-bit pixels v = 0..255: a mixture of logistics on [−1, 1], integrated over each value's bin
    (Salimans et al. 2017, PixelCNN++, without the autoregressive coupling of the channels).

    P(v) = Σ_m π_m [F_m(x_v + 1/255) − F_m(x_v − 1/255)], F_m(y) = sigmoid((y − μ_m)/s_m), x_v = 2v/255 − 1, where
    v = 0 takes F_m(−∞) = 0 and v = 255 takes F_m(+∞) = 1. Decoder output layout: (..., C·3·mixtures, H, W); the
    3·mixtures channels of image channel c are [mixture logits (mixtures), means μ (mixtures), log-scales (mixtures)],
    in that order. With mixtures = 1 it is the plain discretized logistic (its mixture logit is unused).
    """

    export: Exported = (
        Output(
            "mixture_logits",
            "mixture_logits",
            "(batch, C, M, H, W) logits of M logistic components per pixel: weights pi = softmax over M",
        ),
        Output(
            "loc",
            "loc",
            "(batch, C, M, H, W) component means mu on [-1, 1]: the picture is "
            "clip((sum over M of pi * mu + 1) / 2, 0, 1)",
        ),
        Output(
            "log_scale",
            "log_scale",
            "(batch, C, M, H, W) component log-scales s (floored at -7) of the "
            "logistic in (x - mu) / exp(s), on [-1, 1]",
        ),
    )

    def __init__(self, params: Tensor, mixtures: int, event_ndim: int = 3) -> None:
        per_channel = self.channels(mixtures)
        if params.dim() < 3 or params.shape[-3] % per_channel:
            raise VaekitError(
                f"a discretized logistic mixture of {mixtures} takes decoder output (..., C·{per_channel}, H, W), "
                f"got {tuple(params.shape)}: make the decoder output C·DiscretizedLogisticMixture.channels({mixtures}) "
                "channels"
            )
        channels = params.shape[-3] // per_channel
        split = params.reshape(*params.shape[:-3], channels, 3, mixtures, *params.shape[-2:])  # (..., C, 3, M, H, W)
        self.mixture_logits, self.loc, log_scale = split.unbind(-4)  # each (..., C, M, H, W)
        self.log_scale = log_scale.clamp(min=LOG_SCALE_MIN)
        self.mixtures = mixtures
        self.event_ndim = event_ndim
        check_event_ndim(self.loc.select(-3, 0), event_ndim, "the mixture's pixels")

    @staticmethod
    def channels(mixtures: int) -> int:
        """Decoder output channels per image channel: a logit, a mean and a log-scale per component."""
        if mixtures < 1:
            raise VaekitError(f"mixtures={mixtures}: a discretized logistic mixture needs at least 1 component")
        return 3 * mixtures

    @property
    def mean(self) -> Tensor:
        """Σ_m π_m μ_m mapped from [−1, 1] back to [0, 1] (clamped: a component's centre may lie outside)."""
        centre = (torch.softmax(self.mixture_logits, -3) * self.loc).sum(-3)
        mean: Tensor = ((centre + 1) / 2).clamp(0.0, 1.0)
        return mean

    def log_prob(self, x: Tensor) -> Tensor:
        """log P(v) of the 8-bit values v = round(255·x), summed over the event dimensions.

        Each bin is factored, σ(b) − σ(a) = σ(b)·σ(−a)·(1 − e^(a−b)) for the standardized edges a < b, so every
        term is a log-sigmoid or a log(−expm1(−δ)) with δ = (b − a) = (2/255)/s: no difference of two nearly equal
        CDFs, so neither tail loses the probability to rounding and PixelCNN++'s fallback to the density at the bin
        centre is never needed. The edge bins drop the factor of the infinite edge.
        """
        v = torch.round(x * 255).clamp(0, 255).unsqueeze(-3)  # (N, C, 1, H, W) against (..., C, M, H, W)
        inv_scale = torch.exp(-self.log_scale)
        centred = 2 * v / 255 - 1 - self.loc
        upper = inv_scale * (centred + HALF_BIN)  # b
        lower = inv_scale * (centred - HALF_BIN)  # a
        log_upper = torch.where(v < 255, F.logsigmoid(upper), 0.0)  # log F(b); the top bin reaches +∞
        log_lower = torch.where(v > 0, F.logsigmoid(-lower), 0.0)  # log(1 − F(a)); the bottom bin reaches −∞
        log_width = torch.where((v > 0) & (v < 255), log_bin_width_factor(self.log_scale), 0.0)
        log_component = log_upper + log_lower + log_width
        log_weights = torch.log_softmax(self.mixture_logits, -3)
        return sum_event(torch.logsumexp(log_weights + log_component, -3), self.event_ndim)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Pick a component (Gumbel-max), draw y = μ + s·logit(u), and round (y + 1)/2 to the 8-bit grid."""
        with torch.no_grad():
            logits = self.mixture_logits

            def uniform() -> Tensor:
                return torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)

            gumbel = -torch.log(-torch.log(uniform().clamp(1e-10, 1 - 1e-7)))
            pick = (logits + gumbel).argmax(-3, keepdim=True)
            loc = self.loc.gather(-3, pick).squeeze(-3)
            # Beyond s = e^20 a logistic puts under 1e-9 of its mass in [−1, 1]; the cap keeps s·logit(u) from inf·0.
            scale = self.log_scale.gather(-3, pick).squeeze(-3).clamp(max=20.0).exp()
            u = uniform().select(-3, 0)
            y = loc + scale * (torch.log(u) - torch.log1p(-u))
            return torch.round((y + 1) / 2 * 255).clamp(0, 255) / 255
