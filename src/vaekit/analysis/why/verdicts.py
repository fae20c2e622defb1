"""One plain sentence per claim, generated from its numbers alone, so that it flips when they flip.

Each function returns (confirmed, sentence); a control that is missing is passed as None and the sentence says what
the verdict rests on without it.
"""

from __future__ import annotations

import itertools
import math

Verdict = tuple[bool, str]


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def gradient_verdict(
    trained: tuple[float, float], initial: tuple[float, float], curves: tuple[float, float] | None
) -> Verdict:
    """`trained`, `initial`: the score-function and leave-one-out-baseline variances as multiples of the pathwise
    one; `curves`: the final validation −ELBO of the pathwise and the baseline run trained for the same time."""
    confirmed = min(*trained, *initial) > 1
    if confirmed:
        text = (
            f"confirmed: pathwise gradients have {_times(trained[0])} less variance than score-function ones and "
            f"{_times(trained[1])} less than with a leave-one-out baseline after training "
            f"({_times(initial[0])} and {_times(initial[1])} at initialisation)"
        )
    else:
        text = (
            f"not confirmed: the score-function estimators' variance is {trained[0]:.3g}x and {trained[1]:.3g}x the "
            f"pathwise one after training ({initial[0]:.3g}x and {initial[1]:.3g}x at initialisation), not all above 1x"
        )
    if curves is None:
        return confirmed, text + "; no score-function run to compare learning curves with"
    pathwise, baseline = curves
    ahead = "ahead of" if pathwise < baseline else "not ahead of"
    return confirmed, text + (
        f"; in the same time the pathwise run reaches a validation −ELBO of {pathwise:.2f} nats, {ahead} the "
        f"baseline run's {baseline:.2f}"
    )


def continuity_verdict(
    vae: tuple[float, float],
    ae: tuple[float, float] | None,
    mixture: float | None,
    paths: int = 200,
    draws: int = 1000,
) -> Verdict:
    """`vae`, `ae`: (share of path points off the manifold, share of prior draws off it) for `paths` paths between
    prior samples and `draws` prior draws; `mixture`: the off-manifold share for the autoencoder decoding its fitted
    mixture's samples. The VAE must do better by more than two standard errors of the difference (paths counted as
    the independent units, since the points along one path are not): a smaller gap is noise, and says so."""
    if ae is None:
        return False, (
            f"not shown: {vae[0]:.0%} of the points on the VAE's prior paths lie off the data manifold, but without "
            "an autoencoder run there is no control to compare with"
        )
    path_noise = 2 * math.sqrt((vae[0] * (1 - vae[0]) + ae[0] * (1 - ae[0])) / paths)
    hole_noise = 2 * math.sqrt((vae[1] * (1 - vae[1]) + ae[1] * (1 - ae[1])) / draws)
    confirmed = vae[0] < ae[0] - path_noise and vae[1] <= ae[1] + hole_noise
    verdict = "confirmed" if confirmed else "not confirmed"
    text = (
        f"{verdict}: {vae[0]:.0%} of the points on paths between the VAE's prior samples lie off the data manifold "
        f"against {ae[0]:.0%} for the autoencoder decoding N(0, I) samples, and {vae[1]:.0%} of prior samples fall "
        f"in holes against {ae[1]:.0%}"
    )
    if abs(vae[0] - ae[0]) <= path_noise:
        text += f" (a difference within two standard errors, {path_noise:.0%})"
    if mixture is not None:
        text += f" (the autoencoder with a mixture fitted to its codes: {mixture:.0%} off the manifold)"
    return confirmed, text


def generalization_verdict(vae: tuple[float, float], control: tuple[float, float] | None) -> Verdict:
    """(test − train NLL gap in nats, nearest-neighbour distance ratio train/test in features) for the VAE and the
    memorizing control. A ratio near 1 means samples sit as close to unseen images as to training ones."""
    gap, ratio = vae
    if control is None:
        confirmed = ratio >= 0.9
        verdict = "confirmed" if confirmed else "not confirmed"
        return confirmed, (
            f"{verdict}: the VAE's NLL gap is {gap:.2f} nats and its samples are {ratio:.2f}x as far from the nearest "
            "training image as from the nearest test image; no memorizing control to compare with"
        )
    control_gap, control_ratio = control
    confirmed = gap < control_gap and ratio > control_ratio
    verdict = "confirmed" if confirmed else "not confirmed"
    return confirmed, (
        f"{verdict}: the VAE's test NLL exceeds its training NLL by {gap:.2f} nats against {control_gap:.2f} for the "
        f"memorizing control, and its samples are {ratio:.2f}x as far from training images as from test images "
        f"against {control_ratio:.2f}x for the control"
    )


def kl_verdict(vae_aggregate: float, ae_aggregate: float | None, sweep: list[tuple[float, int]]) -> Verdict:
    """`vae_aggregate`, `ae_aggregate`: KL of the moment-matched aggregate posterior to N(0, I), nats; `sweep`:
    (β, active units) pairs. Confirmed when the KL keeps the VAE's codes nearer N(0, I) than the autoencoder's and
    raising β never adds active units (collapse at large β)."""
    parts, confirmed = [], True
    if ae_aggregate is None:
        parts.append(f"the VAE's aggregate posterior is {vae_aggregate:.2f} nats from N(0, I) (no autoencoder control)")
    else:
        closer = vae_aggregate < ae_aggregate
        confirmed &= closer
        parts.append(
            f"the VAE's aggregate posterior is {vae_aggregate:.2f} nats from N(0, I) against {ae_aggregate:.2f} for "
            "the autoencoder's codes"
        )
    ordered = sorted(sweep)
    if len(ordered) < 2:
        parts.append("no β sweep to show collapse")
    else:
        monotone = all(a[1] >= b[1] for a, b in itertools.pairwise(ordered))
        confirmed &= monotone and ordered[0][1] > ordered[-1][1]
        units = " → ".join(f"{n} at β={beta:g}" for beta, n in ordered)
        parts.append(f"active units go {units}")
    return confirmed, ("confirmed: " if confirmed else "not confirmed: ") + "; ".join(parts)
