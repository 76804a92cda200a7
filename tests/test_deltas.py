"""The paired statistics behind "significant drop": an exact sign test on the items that changed, and
an interval that does not collapse on few items (known values)."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from orchestrator.evaluation.deltas import Delta, describe, paired_delta, sign_test_p, tango_interval


def _items(lost: int, gained: int = 0, total: int = 50) -> tuple[dict[str, float], dict[str, float]]:
    """Full precision right on every item but the `gained` ones; the level wrong on the first `lost`."""
    full = {f"i{n:02d}": 0.0 if n >= total - gained else 1.0 for n in range(total)}
    level = {k: (0.0 if n < lost else 1.0) for n, k in enumerate(full)}
    return full, level


def test_one_item_lost_is_never_significant() -> None:
    d = paired_delta({"a": 1.0}, {"a": 0.0})
    assert d is not None and (d.delta, d.lost, d.gained, d.p) == (-1.0, 1, 0, 1.0)
    assert not d.significant_drop
    assert d.high > 0.5, "the interval of one item reaches far past zero: it was [-1, -1], 'significant'"


def test_four_of_fifty_lost_is_not_significant_and_ten_is() -> None:
    four = paired_delta(*_items(4))
    assert four is not None and four.delta == -0.08 and four.p == pytest.approx(0.125)  # 2 * 0.5**4
    assert not four.significant_drop and four.low < 0 < four.high
    ten = paired_delta(*_items(10))
    assert ten is not None and ten.p == pytest.approx(2 * 0.5**10) and ten.significant_drop
    assert -0.36 < ten.low < ten.high < -0.05


def test_ties_and_gains_weigh_against_a_drop() -> None:
    same = paired_delta(*_items(0))
    assert same is not None and (same.delta, same.lost, same.gained, same.p) == (0.0, 0, 0, 1.0)
    assert same.low < 0 < same.high, "50 ties still leave room either way"
    mixed = paired_delta(*_items(10, gained=6))  # 10 lost, 6 gained: a net of 4
    assert mixed is not None and (mixed.lost, mixed.gained) == (10, 6)
    assert mixed.p == pytest.approx(binomtest(10, 16, 0.5).pvalue) and not mixed.significant_drop
    gained = paired_delta(*_items(0, gained=12))
    assert gained is not None and gained.delta > 0 and gained.p < 0.01 and not gained.significant_drop


def test_scores_between_zero_and_one_use_the_sign_test_and_a_bootstrap() -> None:
    full = {f"d{n}": 0.8 for n in range(30)}
    level = {k: 0.8 - (0.1 if n < 12 else 0.0) for n, k in enumerate(full)}  # 12 documents' F1 fell by 0.1
    d = paired_delta(full, level)
    assert d is not None and d.interval == "bootstrap" and (d.lost, d.gained) == (12, 0)
    assert d.p == pytest.approx(2 * 0.5**12) and d.significant_drop
    assert d.delta == pytest.approx(-0.04) and d.low < d.delta < d.high <= 0
    assert paired_delta(full, level) == d, "seeded: the same answers give the same interval"


def test_the_level_of_significance_is_the_recipes() -> None:
    six = paired_delta(*_items(6))  # p = 0.03125
    assert six is not None and six.significant_drop
    strict = paired_delta(*_items(6), alpha=0.01)
    assert strict is not None and not strict.significant_drop and strict.alpha == 0.01


def test_tangos_interval_agrees_with_a_known_example_and_with_the_exact_test() -> None:
    """Agresti's presidential-approval survey (1,600 people asked twice: 150 approve only the first time,
    86 only the second): a difference of -0.04 whose large-sample interval is (-0.0587, -0.0213); the
    score interval is within a thousandth and a half of it at this size. On few items it excludes zero
    where the exact test rejects: 5 of 50 lost (p = 0.0625) no, 6 of 50 (p = 0.031) yes."""
    low, high = tango_interval(150, 86, 1600)
    assert low == pytest.approx(-0.0587, abs=1.5e-3) and high == pytest.approx(-0.0213, abs=1.5e-3)
    assert tango_interval(5, 0, 50)[1] > 0 > tango_interval(6, 0, 50)[1]
    assert tango_interval(0, 0, 4) == pytest.approx((-0.699, 0.699), abs=1e-3), "none changed: still a width"
    assert sign_test_p(150, 86) == pytest.approx(binomtest(150, 236, 0.5).pvalue)


def test_a_delta_reads_back_from_report_json_and_says_how_it_was_made() -> None:
    d = paired_delta(*_items(10))
    assert d is not None and Delta.from_dict(d.as_dict()) == d
    assert describe(d) == "-0.20 [-0.35, -0.08], 10 lost / 0 gained of 50, p=0.00195"
