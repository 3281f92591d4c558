"""HealthBench scoring (judge.scoring) against values computed by hand and from the published formulas of
openai/simple-evals healthbench_eval.py (calculate_score, grade_sample, _compute_clipped_stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contracts.channels import rubric_channel
from judge.scoring import (aggregate, bootstrap_std, clipped_mean, example_metrics, example_score, healthbench_report,
                           reward_channels)


def test_hand_computed_example_scores():
    # (7 + 10 - 6) / (7 + 5 + 10) = 11 / 22
    assert example_score([7, 5, 10, -6], [True, False, True, True]) == pytest.approx(0.5, abs=1e-15)
    # +5 not met, -10 met: -10 / 5, not clipped
    assert example_score([5, -10], [False, True]) == pytest.approx(-2.0, abs=1e-15)
    # +10 and -9 both met: points used exactly as given, never flipped: 1 / 10
    assert example_score([10, -9], [True, True]) == pytest.approx(0.1, abs=1e-15)
    # only negative items: no positive points -> None (simple-evals returns None)
    assert example_score([-3, -5], [True, False]) is None
    assert example_score([], []) is None


def test_null_verdicts_are_left_out_not_counted_as_unmet():
    # the 10-point item has no verdict: 4 / (4 + 2), not 4 / 16
    assert example_score([4, 10, 2], [True, None, False]) == pytest.approx(4 / 6, abs=1e-15)
    # a null negative item does not subtract
    assert example_score([4, -6], [True, None]) == pytest.approx(1.0)
    # every positive item null -> None
    assert example_score([4, -6], [None, True]) is None
    with pytest.raises(ValueError):
        example_score([1, 2], [True])


def test_reward_channels_are_points_times_met_and_null_for_null():
    ch = reward_channels([7, 5, 10, -6, 3], [True, False, True, True, None])
    assert ch == {"rubric/00": 7.0, "rubric/01": 0.0, "rubric/02": 10.0, "rubric/03": -6.0, "rubric/04": None}
    assert rubric_channel(3) == "rubric/03" and rubric_channel(12) == "rubric/12" and rubric_channel(100) == "rubric/100"
    # an unmet negative criterion is +0.0, never -0.0 (which JSON would carry as "-0.0")
    unmet = reward_channels([-6, -2.5], [False, False])
    assert all(v == 0.0 and math.copysign(1.0, v) == 1.0 for v in unmet.values())


def test_example_metrics_follow_grade_sample():
    rubrics = [
        {"points": 5, "tags": ["axis:accuracy", "level:example"]},
        {"points": 3, "tags": ["axis:completeness", "level:example"]},
        {"points": -4, "tags": ["axis:accuracy", "level:example"]},
        {"points": -2, "tags": ["axis:communication_quality"]},  # tag with only negative points: omitted
    ]
    met = [True, False, True, True]
    m = example_metrics(rubrics, met, ["theme:hedging", "physician_agreed_category:x"])
    overall = (5 - 4 - 2) / 8
    assert m["overall_score"] == pytest.approx(overall)
    assert m["theme:hedging"] == pytest.approx(overall)
    assert m["physician_agreed_category:x"] == pytest.approx(overall)
    assert m["axis:accuracy"] == pytest.approx((5 - 4) / 5)
    assert m["axis:completeness"] == pytest.approx(0.0)
    assert m["level:example"] == pytest.approx((5 - 4) / 8)
    assert "axis:communication_quality" not in m


def test_clipped_mean():
    assert clipped_mean([0.2, 0.4]) == pytest.approx(0.3)
    assert clipped_mean([-2.0, 0.5]) == 0.0  # mean -0.75 clipped
    assert clipped_mean([1.5, 1.0]) == 1.0
    with pytest.raises(ValueError):
        clipped_mean([])


def test_bootstrap_std_matches_the_exact_resampling_distribution():
    # values {0, 1}: a resample of size 2 has mean 0, 0.5, 1 with prob 1/4, 1/2, 1/4 -> std sqrt(1/8)
    # 1000 resamples: the sample std has a standard error of about 0.354 / sqrt(2000) ~ 0.008
    assert bootstrap_std([0.0, 1.0], rng=1) == pytest.approx(math.sqrt(1 / 8), abs=0.03)
    # values {-1, 1}: means -1, 0, 1 are clipped to 0, 0, 1 -> Bernoulli(1/4): std sqrt(3/16)
    assert bootstrap_std([-1.0, 1.0], rng=2) == pytest.approx(math.sqrt(3 / 16), abs=0.03)
    assert bootstrap_std([0.3, 0.3, 0.3], rng=3) == pytest.approx(0.0, abs=1e-12)
    # large n: ~ sigma / sqrt(n) for a mean far from the clip bounds
    vals = np.random.default_rng(0).uniform(0.2, 0.8, size=400)
    assert bootstrap_std(vals, rng=4) == pytest.approx(np.std(vals) / math.sqrt(400), rel=0.15)


def test_aggregate_and_report():
    per_example = [
        {"overall_score": 0.5, "theme:hedging": 0.5, "axis:accuracy": 1.0},
        {"overall_score": -0.5, "theme:hedging": -0.5, "axis:accuracy": 0.0, "axis:completeness": 0.25},
        {"overall_score": 1.0, "theme:global_health": 1.0},
    ]
    agg = aggregate(per_example, rng=0)
    assert agg["score"] == pytest.approx(1.0 / 3)  # (0.5 - 0.5 + 1) / 3, inside [0, 1]
    assert agg["score:n_samples"] == 3
    assert agg["theme:hedging"] == 0.0  # mean 0 -> clipped 0
    assert agg["axis:accuracy"] == pytest.approx(0.5)
    assert agg["axis:completeness:n_samples"] == 1 and agg["axis:completeness:bootstrap_std"] == 0.0

    examples = [
        {"rubrics": [{"points": 5, "tags": ["axis:accuracy"]}, {"points": 5, "tags": ["axis:completeness"]}],
         "met": [True, False], "example_tags": ["theme:hedging"]},
        {"rubrics": [{"points": 4, "tags": ["axis:accuracy"]}, {"points": -4, "tags": ["axis:accuracy"]}],
         "met": [True, True], "example_tags": ["theme:global_health"]},
    ]
    rep = healthbench_report(examples, rng=0)
    assert rep["score"] == pytest.approx((0.5 + 0.0) / 2)
    assert rep["n_samples"] == 2
    assert rep["axes"]["accuracy"]["mean"] == pytest.approx((1.0 + 0.0) / 2)
    assert rep["axes"]["completeness"]["mean"] == 0.0
    assert set(rep["themes"]) == {"hedging", "global_health"}
    assert rep["themes"]["hedging"]["mean"] == pytest.approx(0.5)


@pytest.mark.parametrize("points, met, score", [
    ([1e308, 1e308], [True, False], 0.5),           # possible = 2e308 overflowed to inf: the score was 0.0
    ([1e308, 1e308], [True, True], 1.0),            # inf / inf = NaN
    ([1e308, 1e308, -1e308], [True, True, True], 0.5),   # (1e308 + 1e308 - 1e308) / 2e308
    ([1.7e308, 1.7e308, 1.7e308], [True, False, None], 0.5),
    ([1e16, 1.0, -1e16], [True, True, True], 1 / (1e16 + 1)),  # cancelling points (plain float sum: 0)
    ([5e-324, 5e-324], [True, False], 0.5),          # subnormal points
])
def test_example_score_does_not_overflow_or_cancel(points, met, score):
    """Any finite points are valid rubric points; the score is the exact ratio of the two sums (by hand)."""
    assert example_score(points, met) == pytest.approx(score, rel=1e-12)
    overall = example_metrics([{"points": p, "tags": ["axis:a"]} for p in points], met)
    assert overall == pytest.approx({"overall_score": score, "axis:a": score}, rel=1e-12)


def test_example_score_below_the_float_range_is_the_most_negative_float():
    """A met -1e300 next to a +1e-300 item: -1e600 has no float; the score is -max (clipped means count it as 0
    like the exact value), never -inf (not JSON) and never None (the 1e-300 item is a positive item)."""
    import sys
    assert example_score([1e-300, -1e300], [True, True]) == -sys.float_info.max
    assert example_score([1e-300, -1e300], [False, False]) == 0.0
    assert clipped_mean([example_score([1e-300, -1e300], [True, True]), 1.0]) == 0.0
