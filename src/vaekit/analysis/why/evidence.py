"""The one rule every claim of `vaekit why` is judged by: a 95% bootstrap interval that lies wholly on the claimed
side of the null confirms it; an interval that reaches the null does not, whatever the point estimate says.

A claim's evidence is one number (a variance ratio, a difference of shares or of gaps) with its interval, the null it
is tested against, the side the claim puts it on, and what was resampled (`n` gradient draws, paths or images) over
how many training seeds. `report.json` holds these fields for each claim.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaekit.analysis.intervals import LEVEL


@dataclass(frozen=True)
class Evidence:
    """One claim's number, its interval and the null it must clear on the claimed side."""

    statistic: str  # what `estimate` is, in words
    estimate: float
    interval: tuple[float, float]  # LEVEL bootstrap percentile interval
    null: float  # the value the claim must be clear of
    side: str  # "above" or "below": where the interval must lie for the claim to hold
    n: int  # independent units resampled
    unit: str  # what they are: "gradient draws", "paths", "images"
    seeds: int = 1  # training seeds per arm

    def __post_init__(self) -> None:
        if self.side not in ("above", "below"):
            raise ValueError(f"side {self.side!r}: use 'above' or 'below'")

    @property
    def confirmed(self) -> bool:
        low, high = self.interval
        return low > self.null if self.side == "above" else high < self.null

    @property
    def verdict(self) -> str:
        return "confirmed" if self.confirmed else "not confirmed"

    def sentence(self) -> str:
        """`VERDICT: STATISTIC is E (95% interval L to H over N UNITS, S seed(s)); the claim needs it SIDE NULL`."""
        low, high = self.interval
        seeds = f"{self.seeds} training seed" + "s" * (self.seeds != 1)
        return (
            f"{self.verdict}: {self.statistic} is {_g(self.estimate)} ({LEVEL:.0%} interval {_g(low)} to {_g(high)} "
            f"over {self.n} {self.unit}, {seeds}); the claim needs the whole interval {self.side} {_g(self.null)}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "statistic": self.statistic, "estimate": self.estimate, "interval": list(self.interval),
            "null": self.null, "side": self.side, "n": self.n, "unit": self.unit, "seeds": self.seeds,
            "verdict": self.verdict,
        }  # fmt: skip


def _g(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
