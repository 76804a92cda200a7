"""How far a level's score moved from full precision, and whether the move is more than chance.

A level and full precision answer the same items, so the comparison is paired: per item, the level's
score minus full precision's. Items both got equally right (or wrong) say nothing about the change;
only the discordant ones do. Whether the level lost more items than it gained is an exact sign test on
those items (two-sided, binomial with p = 1/2): for 0/1 scores that is the exact McNemar test. It
needs no large-sample assumption, so it stays honest on the few dozen items a benchmark slice has:
4 of 50 items lost and none gained gives p = 0.125, not significant; 10 of 50, p = 0.002. One item
never is (p = 1).

The interval is for reading, the p-value decides. For 0/1 scores it is Newcombe's hybrid score
interval for a difference of paired proportions (his method 10: Wilson intervals of both marginal
rates, combined with the pairs' correlation), which does not collapse to a point on few items. For
scores between 0 and 1 (an lm-eval F1), a seeded percentile bootstrap over items.
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
    interval: str = "newcombe"  # "newcombe" (0/1 scores) or "bootstrap"

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


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_interval(both: int, only_full: int, only_level: int, neither: int,
                      confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Newcombe (1998) method 10 for (level rate - full precision rate) over paired 0/1 items."""
    from scipy.stats import norm

    n = both + only_full + only_level + neither
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    p_full, p_level = (both + only_full) / n, (both + only_level) / n
    l_full, u_full = _wilson(both + only_full, n, z)
    l_level, u_level = _wilson(both + only_level, n, z)
    margins = (both + only_full) * (only_level + neither) * (both + only_level) * (only_full + neither)
    phi = (both * neither - only_full * only_level) / math.sqrt(margins) if margins else 0.0
    down = math.sqrt(max(0.0, (p_level - l_level) ** 2 - 2 * phi * (p_level - l_level) * (u_full - p_full)
                         + (u_full - p_full) ** 2))
    up = math.sqrt(max(0.0, (u_level - p_level) ** 2 - 2 * phi * (u_level - p_level) * (p_full - l_full)
                       + (p_full - l_full) ** 2))
    diff = p_level - p_full
    return max(-1.0, diff - down), min(1.0, diff + up)


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
        both, neither = int(((a == 1) & (b == 1)).sum()), int(((a == 0) & (b == 0)).sum())
        low, high = newcombe_interval(both, lost, gained, neither, confidence)
    else:
        low, high = _bootstrap(diffs, confidence, seed)
    return Delta(float(diffs.mean()), low, high, len(keys), lost, gained, sign_test_p(lost, gained), alpha,
                 "newcombe" if binary else "bootstrap")


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
            f"changed gives p < {alpha:g} and more were lost than gained; 95% interval: Newcombe's paired "
            f"score interval (0/1 scores) or a percentile bootstrap over items (other scores)")
