"""One plain sentence per claim, generated from its evidence and numbers alone, so that it flips when they flip.

Every claim is judged by one rule (`vaekit.analysis.why.evidence`): its interval must lie wholly on the claimed side
of the null. The sentence states the evidence, then what the report shows beside it, which does not decide. A claim
whose control is missing has no evidence: its sentence says "not shown" and what is missing.
"""

from __future__ import annotations

from vaekit.analysis.why.evidence import Evidence


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def gradient_verdict(evidence: Evidence, plain: float, initial: float, curves: tuple[float, float] | None) -> str:
    """`plain`: the score-function variance without a baseline over the pathwise one; `initial`: the evidence's
    ratio at initialisation; `curves`: the final validation −ELBO of the pathwise and the score-function run."""
    text = (
        f"{evidence.sentence()}; without the baseline the score-function variance is {_times(plain)} the pathwise "
        f"one, and at initialisation the baseline's ratio is {_times(initial)}"
    )
    if curves is None:
        return text + "; no score-function run to compare learning curves with"
    pathwise, baseline = curves
    ahead = "ahead of" if pathwise < baseline else "not ahead of"
    return text + (
        f"; in the same time the pathwise run reaches a validation −ELBO of {pathwise:.2f} nats, {ahead} the "
        f"score-function run's {baseline:.2f} (one seed each: a learning curve, not evidence)"
    )


def continuity_verdict(evidence: Evidence | None, vae: float, shares: dict[str, float], floor: float) -> str:
    """`vae`: the VAE's share of inner path points off the manifold; `shares`: every other sampler's; `floor`: the
    share of real held-out images the measure puts off the manifold."""
    others = "; ".join(f"{name}: {share:.0%}" for name, share in shares.items())
    context = (
        f"{vae:.0%} of the inner points of paths between the VAE's prior samples lie off the data manifold, where "
        f"{floor:.0%} of real held-out images do" + (f" ({others})" if others else "")
    )
    if evidence is None:
        return f"not shown: {context}, but without an autoencoder run there is no control to compare with"
    return f"{evidence.sentence()}. {context[0].upper()}{context[1:]}"


def generalization_verdict(evidence: Evidence | None, gap: float, copying: tuple[float, float, float]) -> str:
    """`gap`: the VAE's test − train NLL; `copying`: the copying audit's (share of samples nearer a training image
    than held-out images are, with its interval): 0.5 for samples as near the training set as unseen images."""
    share, low, high = copying
    audit = (
        f"against the whole training set, its samples are farther from their nearest training image than a held-out "
        f"image is from its own in {share:.0%} of pairs ({low:.0%} to {high:.0%}; 50% when samples sit as near the "
        "training set as unseen images do, below when they copy it)"
    )
    if evidence is None:
        return (
            f"not shown: the VAE's test NLL exceeds its training NLL by {gap:.2f} nats, but without a memorizing run "
            f"there is no control to compare with; {audit}"
        )
    return f"{evidence.sentence()}; {audit}"


def kl_verdict(evidence: Evidence | None, closed_form: float, monte_carlo: tuple[float, float, float]) -> str:
    """`closed_form`: the VAE's mean KL per image in closed form; `monte_carlo`: its Monte Carlo estimate with the
    interval, which the closed form should fall in."""
    estimate, low, high = monte_carlo
    inside = "inside" if low <= closed_form <= high else "outside"
    check = (
        f"the closed-form KL, {closed_form:.2f} nats per image, lies {inside} its Monte Carlo estimate's interval "
        f"({estimate:.2f}, {low:.2f} to {high:.2f})"
    )
    if evidence is None:
        return f"not shown: without an autoencoder run there are no codes without a KL to compare with; {check}"
    return f"{evidence.sentence()}; {check}"
