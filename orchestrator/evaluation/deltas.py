"""How far a level's task score moved from full precision, and whether the move is more than chance.

A level and full precision answer the same items, so their difference is paired: per item, the level's
score minus full precision's. The interval comes from a bootstrap over items (resampling which items
were asked), the usual choice when a benchmark is a few dozen items and the scores are 0/1. A drop is
called significant only when the whole interval lies below zero: "three points worse at Q4" on 50
items is often one answer, and a table should not make a headline of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Delta:
    delta: float  # mean over the shared items of (level - full precision)
    low: float
    high: float
    items: int

    @property
    def significant_drop(self) -> bool:
        return self.high < 0

    def as_dict(self) -> dict[str, float]:
        return {"delta": self.delta, "low": self.low, "high": self.high, "items": self.items}


def paired_delta(full: Mapping[str, float], level: Mapping[str, float], *, resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE, seed: int = 0) -> Delta | None:
    """The level's change over the items both were scored on; None when they share none."""
    keys = sorted(full.keys() & level.keys())
    if not keys:
        return None
    diffs = np.array([float(level[k]) - float(full[k]) for k in keys])
    # Seeded: the same answers give the same interval, so a report is reproducible.
    picks = np.random.default_rng(seed).integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Delta(float(diffs.mean()), float(low), float(high), len(keys))


def scores(answers: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """Per item 1.0 (right) or 0.0, from a level's recorded answers."""
    return {k: 1.0 if a.get("correct") else 0.0 for k, a in answers.items()}


def describe(d: Delta) -> str:
    return f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"
