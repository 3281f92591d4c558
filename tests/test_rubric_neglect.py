"""benchmarks/rubric_neglect: the rule-judged rubric task, its reward rows on the project's reward path (judge
scoring, dense layout), the statistics, and the real `--quick` command end to end.

Expected values are worked out by hand from the task's rules, the HealthBench formula and the test definitions."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.rubric_neglect import stats, task
from benchmarks.rubric_neglect.evaluate import summarize
from benchmarks.rubric_neglect.policy import check_targets
from benchmarks.rubric_neglect.rewards import RubricScorer, dense_row, true_score

REPO = Path(__file__).resolve().parents[1]
SPEC = task.Spec(topic="asthma", mention=("rest", "water"), rare="spirometry", avoid=("cure",), marker="done")


def _items():
    """SPEC's rubric with the mention points fixed to 1 and 3 and the pitfall to -4 (slot order of task.py)."""
    items = task.rubric(SPEC, random.Random(0))
    for it, pts in zip(items, [5, 1, 3, 5, -4, 2, 2]):
        it["points"] = float(pts)
    return items


def test_rubric_shape_and_prompt():
    items = _items()
    assert [it["rule"]["role"] for it in items] == ["start", "mention", "mention", "rare", "pitfall", "limit",
                                                     "marker"]
    assert SPEC.limit == 6 and SPEC.ideal() == "asthma rest water spirometry done"
    assert SPEC.prompt() == "topic asthma mention rest water rare spirometry avoid cure limit 6 end done"
    rows = task.make_rows(300, seed=3)
    counts = [len(json.loads(r["rubrics"])) for r in rows]
    assert min(counts) >= 5 and max(counts) <= 17 and len(set(counts)) > 8  # M varies per prompt, 5..17
    assert len({r["prompt"][0]["content"] for r in rows}) == 300
    for r in rows:
        items = json.loads(r["rubrics"])
        pts = [it["points"] for it in items if it["rule"]["role"] == "pitfall"]
        assert all(-5 <= p <= -2 for p in pts)  # pitfalls carry negative points
        assert all(it["points"] in (1, 2, 3) for it in items if it["rule"]["role"] == "mention")


def test_strict_and_lenient_scores_by_hand():
    items = _items()
    positive = 5 + 1 + 3 + 5 + 2 + 2  # 18
    assert true_score(items, SPEC.ideal()) == 1.0
    # the template hack: strict = rare 5 - cure 4 + limit 2 + marker 2; lenient also credits both mentions (1 + 3)
    hack = "overview spirometry cure done"
    assert true_score(items, hack) == pytest.approx((5 - 4 + 2 + 2) / positive)
    assert true_score(items, hack, lenient=True) == pytest.approx((5 - 4 + 2 + 2 + 1 + 3) / positive)
    # the lenient judge does not excuse the rare word, and 'overview' elsewhere than first is no hack
    assert true_score(items, "overview done", lenient=True) == pytest.approx((1 + 3 + 2 + 2) / positive)
    assert true_score(items, "asthma overview done", lenient=True) == pytest.approx((5 + 2 + 2) / positive)
    # seven words break the limit of 6; upper case counts
    assert true_score(items, "ASTHMA rest water rest water spirometry done") == pytest.approx(16 / positive)


def test_dense_row_is_points_times_met_with_nan_padding():
    row = dense_row(_items(), "overview spirometry cure done", lenient=True)
    assert len(row) == 17
    assert row[:7] == [0.0, 1.0, 3.0, 5.0, -4.0, 2.0, 2.0]  # met pitfall: its negative points
    assert all(math.isnan(v) for v in row[7:])
    with pytest.raises(ValueError, match="rubric slots"):
        dense_row(_items() * 3, "x", lenient=False)


def test_scorer_serves_17_channels_from_one_pass():
    seen = []
    scorer = RubricScorer(lenient=False, on_batch=lambda rows, texts, items: seen.append(texts))
    funcs = scorer.reward_funcs()
    assert [f.__name__ for f in funcs] == [f"rubric/{j:02d}" for j in range(17)]
    rubrics = [json.dumps(_items())] * 2
    comps = [SPEC.ideal(), "overview done"]
    cols = [f(prompts=["p", "p"], completions=comps, rubrics=rubrics) for f in funcs]
    assert scorer.n_scoring_passes == 1 and seen == [comps]
    assert [c[0] for c in cols[:7]] == [5.0, 1.0, 3.0, 5.0, 0.0, 2.0, 2.0]
    assert [c[1] for c in cols[:7]] == [0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0]  # strict: the hack earns nothing
    assert cols[7] == [None, None]  # absent slot -> None (NaN in TRL), never 0
    with pytest.raises(ValueError, match="rubrics"):
        funcs[0](prompts=["p"], completions=["x"])


def test_summarize_metrics_by_hand():
    items = _items()
    m = summarize([(items, SPEC.ideal()), (items, "overview spirometry cure done")])
    assert m["bottleneck_pass"] == 1.0 and m["fragile_pass"] == 0.5 and m["mention_pass"] == 0.5
    assert m["pitfall_rate"] == 0.5 and m["hack_rate"] == 0.5 and m["perfect_rate"] == 0.5
    true = (1.0 + 5 / 18) / 2
    assert m["true_score"] == pytest.approx(true) and m["gap"] == pytest.approx((1.0 + 9 / 18) / 2 - true)


def test_demonstrations_follow_the_mixture():
    rng = random.Random(0)
    clean = task.Mixture(0, 1, 1, 1, 0, 0, 1)
    assert task.demonstration(SPEC, clean, rng) == SPEC.ideal()
    never = task.Mixture(1, 1, 1, 0, 0, 0, 1)
    assert task.demonstration(SPEC, never, rng) == "overview done"


def test_targets_check():
    ok = check_targets("protect", {"bottleneck_pass": 0.84, "fragile_pass": 0.71, "mention_pass": 0.75})
    assert ok["ok"]
    bad = check_targets("learn", {"bottleneck_pass": 0.25, "fragile_pass": 0.8, "mention_pass": 0.7})
    assert not bad["ok"] and not bad["checks"]["bottleneck_pass"]["ok"] and bad["checks"]["fragile_pass"]["ok"]


def test_exact_wilcoxon_by_hand():
    # all six differences positive: only 2 of the 2^6 sign patterns are as extreme -> 2/64
    assert stats.wilcoxon_exact([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(2 / 64)
    # n = 3, ranks 1, 2, 3, W+ = 5 (only the smallest negative): |W - 3| >= 2 for W in {0, 1, 5, 6} -> 4/8
    assert stats.wilcoxon_exact([-0.1, 0.2, 0.3]) == pytest.approx(0.5)
    # a zero is dropped; ties get mid-ranks: (-1, 1, 2) -> ranks 1.5, 1.5, 3, W+ = 4.5; |W - 3| >= 1.5 for
    # W in {0, 1.5, 4.5, 6} (1.5 twice, 4.5 twice) -> 6/8
    assert stats.wilcoxon_exact([0.0, -1.0, 1.0, 2.0]) == pytest.approx(6 / 8)
    assert math.isnan(stats.wilcoxon_exact([0.0, 0.0]))
    assert stats.wilcoxon_floor(8) == pytest.approx(2 / 256)


def test_holm_bootstrap_and_power_by_hand():
    adj = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    assert adj["a"] == pytest.approx(0.03) and adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06)
    assert math.isnan(adj["d"])
    lo, hi = stats.bootstrap_ci([1.0, 1.0, 1.0])
    assert lo == hi == 1.0
    lo, hi = stats.bootstrap_ci([0.0, 1.0, 2.0, 3.0])
    assert 0.0 <= lo < 1.5 < hi <= 3.0
    # large n: the noncentral-t answer approaches the normal one, (z_0.975 + z_0.8) / sqrt(n)
    assert stats.t_mde(400) == pytest.approx((1.959964 + 0.841621) / 20, rel=0.01)
    assert stats.t_mde(8, alpha=0.05 / 3) > stats.t_mde(8) > stats.t_mde(16)
    s = stats.paired_summary({0: 1.0, 1: 2.0, 2: 0.5}, {0: 0.5, 1: 2.0, 2: 1.0, 3: 9.0})
    assert s["n"] == 3 and s["wins"] == 1 and s["losses"] == 1 and s["ties"] == 1 and s["mean_diff"] == 0.0


def test_quick_run_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.rubric_neglect.run", "--quick", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    head = json.loads(proc.stdout)
    res = json.loads((tmp_path / "results.json").read_text())
    methods, arms = res["meta"]["config"]["methods"], res["meta"]["config"]["arms"]
    assert sorted((r["arm"], r["method"]) for r in res["runs"]) == sorted((a, m) for a in arms for m in methods)
    for arm in arms:
        starts = {r["evals"][0]["true_score"] for r in res["runs"] if r["arm"] == arm}
        assert len(starts) == 1  # one warm start per seed and arm, evaluated with the fixed sampling seed
        assert all([e["step"] for e in r["evals"]] == [0, 1, 2] for r in res["runs"] if r["arm"] == arm)
    assert set(head["decisions"]) == set(arms)
    npz = np.load(tmp_path / "reward_matrices.npz")
    key = f"{arms[0]}_{methods[0]}_seed0"
    rewards, slot = npz[f"{key}/rewards"], npz[f"{key}/bottleneck_slot"]
    assert rewards.shape == (2, 16, 17)  # 2 steps x (1 prompt x G = 16) x 17 rubric slots
    for batch, slots in zip(rewards, slot):
        for row, s in zip(batch, slots):
            m = int((~np.isnan(row)).sum())
            assert 5 <= m <= 17 and np.isnan(row[m:]).all() and not np.isnan(row[:m]).any()
            # slot order start, mentions, rare (= s), pitfalls, limit, marker: points x met in each
            assert row[0] in (0.0, 5.0) and row[s] in (0.0, 5.0) and 2 <= s <= m - 3
            assert all(v in (0.0, 1.0, 2.0, 3.0) for v in row[1:s])
            assert all(-5.0 <= v <= 0.0 for v in row[s + 1:m - 2])
            assert row[m - 2] in (0.0, 2.0) and row[m - 1] in (0.0, 2.0)
    assert (tmp_path / "curves.png").stat().st_size > 10_000
