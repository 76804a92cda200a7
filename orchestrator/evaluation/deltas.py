"""How far a level's score moved from full precision, and whether the move is more than chance.

A level and full precision answer the same items, so the comparison is paired: per item, the level's
score minus full precision's. Items both got equally right (or wrong) say nothing about the change;
only the discordant ones do. Whether the level lost more items than it gained is an exact sign test on
those items (two-sided, binomial with p = 1/2): for 0/1 scores that is the exact McNemar test. It
needs no large-sample assumption, so it stays honest on the few dozen items a benchmark slice has:
4 of 50 items lost and none gained gives p = 0.125, not significant; 10 of 50, p = 0.002. One item
never is (p = 1).

The interval is for reading, the p-value decides. For 0/1 scores it is Tango's score interval for a
difference of paired proportions, continuity-corrected so that it excludes zero about when the exact
test rejects; it keeps a width on few items and when nothing changed (a percentile bootstrap collapsed
to [-1, -1] on one item). For scores between 0 and 1 (an lm-eval F1), a seeded percentile bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05  # the recipe's lathe.eval.significance_level, unless it says otherwise
CONFIDENCE = 0.95
RESAMPLES = 2000
SIGN_TEST = "exact sign test (McNemar for 0/1 scores)"


@dataclass(frozen=True)
class Delta:
    delta: float  # mean over the shared items of (level - full precision)
    low: float  # the 95% interval of that mean
    high: float
    items: int  # items both were scored on
    lost: int = 0  # items the level scored lower on
    gained: int = 0  # items it scored higher on
    p: float = 1.0  # the exact sign test's two-sided p-value over lost vs gained
    alpha: float = ALPHA
    interval: str = "tango"  # "tango" (0/1 scores) or "bootstrap"

    @property
    def significant_drop(self) -> bool:
        return self.delta < 0 and self.lost > self.gained and self.p < self.alpha

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> Delta:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        return cls(**known)  # type: ignore[arg-type]


def sign_test_p(lost: int, gained: int) -> float:
    """Two-sided exact binomial p-value of `lost` against `gained` under "either way is as likely"."""
    from scipy.stats import binomtest

    n = lost + gained
    return 1.0 if n == 0 else float(binomtest(lost, n, 0.5, alternative="two-sided").pvalue)


def tango_interval(lost: int, gained: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Tango's (1998) score interval for (level rate - full precision rate) over n paired 0/1 items, of
    which `lost` went 1 -> 0 and `gained` 0 -> 1: every difference the score test at this confidence does
    not reject. Unlike a Wald interval (or Newcombe's hybrid, which is zero-wide when no item changed at
    a rate of 1/2) it keeps its width on few items and no changes: 4 items, none changed, +/-0.70."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    z = float(norm.ppf(1 - (1 - confidence) / 2))
    b, c = lost, gained  # in Tango's terms the difference is (b - c) / n: ours is its negative

    def score(d: float) -> float:
        a_, b_, c_ = 2 * n, -b - c + (2 * n - b + c) * d, -c * d * (1 - d)
        p21 = (math.sqrt(max(0.0, b_ * b_ - 4 * a_ * c_)) - b_) / (2 * a_)
        # With the continuity correction (one item), which keeps the interval in step with the exact
        # test: 4 of 50 lost then includes zero (p = 0.125), 6 of 50 does not (p = 0.031).
        gap = b - c - n * d
        return math.copysign(max(0.0, abs(gap) - 1), gap) / math.sqrt(max(1e-300, n * (2 * p21 + d * (1 - d))))

    estimate = (b - c) / n
    edge = 1 - 1e-12
    low = -edge if score(-edge) < z else brentq(lambda d: score(d) - z, -edge, estimate)
    high = edge if score(edge) > -z else brentq(lambda d: score(d) + z, estimate, edge)
    return -high, -low


def _bootstrap(diffs: np.ndarray, confidence: float, seed: int) -> tuple[float, float]:
    # Seeded: the same answers give the same interval, so a report is reproducible.
    picks = np.random.default_rng(seed).integers(0, len(diffs), size=(RESAMPLES, len(diffs)))
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(diffs[picks].mean(axis=1), [tail, 1.0 - tail])
    return float(low), float(high)


def paired_delta(full: Mapping[str, float], level: Mapping[str, float], *, alpha: float = ALPHA,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Delta | None:
    """The level's change over the items both were scored on; None when they share none."""
    keys = sorted(full.keys() & level.keys())
    if not keys:
        return None
    a = np.array([float(full[k]) for k in keys])
    b = np.array([float(level[k]) for k in keys])
    diffs = b - a
    lost, gained = int((diffs < 0).sum()), int((diffs > 0).sum())
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    if binary:
        low, high = tango_interval(lost, gained, len(keys), confidence)
    else:
        low, high = _bootstrap(diffs, confidence, seed)
    return Delta(float(diffs.mean()), low, high, len(keys), lost, gained, sign_test_p(lost, gained), alpha,
                 "tango" if binary else "bootstrap")


def scores(answers: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """Per item 1.0 (right) or 0.0, from a level's recorded answers."""
    return {k: 1.0 if a.get("correct") else 0.0 for k, a in answers.items()}


def describe(d: Delta, short: bool = False) -> str:
    """'-0.08 [-0.19, +0.01], 4 lost / 0 gained of 50, p=0.125'; short: '-0.08 [-0.19, +0.01] p=0.125'."""
    if short:
        return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}] p={d.p:.2g}"
    return (f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}], {d.lost} lost / {d.gained} gained of {d.items}, "
            f"p={d.p:.3g}")


def method(alpha: float = ALPHA) -> str:
    """How a delta was computed, for a report's reader."""
    return (f"paired over the items both were scored on; significant when the {SIGN_TEST} on the items that "
            f"changed gives p < {alpha:g} and more were lost than gained; 95% interval: Tango's paired score "
            f"interval, continuity-corrected (0/1 scores), or a percentile bootstrap over items (other scores)")
