"""benchmarks/constraint_neglect: the task generator, the metrics, the numeric study and the `--quick` smoke run
(the real command line, end to end: warm start, RVPOTrainer runs, evaluation, analysis, plots).

Expected values are derived by hand from the task definition, the channel definitions and the formulas."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rvpo.demo import tooltask as task
from benchmarks.constraint_neglect.analysis import paired_test
from benchmarks.constraint_neglect.evaluate import score_rows, summarize
from benchmarks.constraint_neglect.taylor import softmin_weights_np, taylor_side, zscores

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def split():
    functions = task.load_functions(8)
    train, evaluation = task.make_splits(functions, 6, 3, low=10, high=99, seed=0)
    return functions, train, evaluation


def test_functions_follow_the_selection_rule(split):
    functions, _, _ = split
    assert len(functions) == 8 and len({f.name for f in functions}) == 8
    for f in functions:
        props = f.doc["parameters"]["properties"]
        assert set(f.params) == set(f.doc["parameters"]["required"]) and 1 <= len(f.params) <= 3
        assert all(props[p]["type"] == "integer" for p in f.params)
    assert functions[0].name == "calculate_triangle_area"  # first qualifying line of the BFCL sample


def test_prompts_carry_the_ground_truth_values(split):
    functions, train, evaluation = split
    assert len(train) == 8 * 6 and len(evaluation) == 8 * 3
    for row in train + evaluation:
        shown = json.loads(row["prompt"][0]["content"].split("Inputs: ", 1)[1])
        truth = json.loads(row["ground_truth"])
        assert truth == [{row["function"]: {p: [v] for p, v in shown.items()}}]
        assert all(10 <= v <= 99 for v in shown.values())
    seen = {(r["function"], tuple(r["values"])) for r in train}
    assert not seen & {(r["function"], tuple(r["values"])) for r in evaluation}  # held-out tuples are new


def test_clean_demonstrations_pass_every_channel_and_wrong_values_only_the_bottleneck(split):
    functions, train, _ = split
    clean = task.sft_pairs(train, functions, 16, seed=1, p_wrong_value=0.0, defects={})
    wrong = task.sft_pairs(train, functions, 16, seed=1, p_wrong_value=1.0, defects={})
    rows = train[:16]
    s_clean = summarize(score_rows(rows, [[c] for _, c in clean]))
    s_wrong = summarize(score_rows(rows, [[c] for _, c in wrong]))
    for ch in task.CHANNELS:
        assert s_clean[f"pass/{ch}"] == 1.0
    for ch in task.EASY_CHANNELS:
        assert s_wrong[f"pass/{ch}"] == 1.0
    assert s_wrong[f"pass/{task.BOTTLENECK}"] == 0.0 and s_wrong["pass/all"] == 0.0


def test_defect_rates_of_the_demonstrations(split):
    functions, train, _ = split
    fn = functions[0]
    rng = random.Random(3)
    n = 4000
    demos = [task.demonstration(fn, (40, 28), functions, rng, p_wrong_value=0.5) for _ in range(n)]
    # both values right and written as integers: (1 - 0.5)^2 (a wrong value is drawn != the right one), times no
    # dropped argument and no value turned into a string
    both = sum('"base": 40' in d and '"height": 28' in d for d in demos) / n
    assert both == pytest.approx(0.25 * (1 - task.DEFECTS["missing_arg"]) * (1 - task.DEFECTS["string_value"]),
                                 abs=0.03)
    assert sum(d.count("<tool_call>") == 2 for d in demos) / n == pytest.approx(task.DEFECTS["two_calls"], abs=0.015)
    assert sum('"verbose": true' in d for d in demos) / n == pytest.approx(task.DEFECTS["extra_arg"], abs=0.015)


def test_summarize_pass_rates_by_hand():
    one = {c: 1.0 for c in task.CHANNELS}
    half = dict(one, **{task.BOTTLENECK: 0.5})
    unscored = dict(one, **{"rules/format": math.nan})
    s = summarize([one, half, unscored, one])
    assert s["bottleneck_pass"] == 0.75            # 0.5 is not a pass
    assert s["pass/rules/format"] == 0.75           # NaN is not a pass ...
    assert s["nan/rules/format"] == 1 and s["mean/rules/format"] == 1.0  # ... and is left out of the mean
    assert s["pass/all"] == 0.5
    assert s["mean_reward"] == pytest.approx((1 + (6 + 0.5) / 7 + 1 + 1) / 4)


def test_zscores_taylor_and_weights_by_hand():
    r = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])  # two groups of G = 2
    z = zscores(r, 2)
    # group 1: channel 0 is (0, 1): mean 1/2, Bessel std 1/sqrt(2) -> -/+ 0.5 / (0.70711 + 1e-4); channel 1 constant
    assert z[:2, 0] == pytest.approx([-0.5 / (2 ** -0.5 + 1e-4), 0.5 / (2 ** -0.5 + 1e-4)])
    assert z[:2, 1] == pytest.approx([0.0, 0.0])
    zz = np.array([[1.0, -1.0]])
    assert taylor_side(zz, 0.5) == pytest.approx([0.0 - 0.25 * 1.0])  # mean 0, population var 1
    p = softmin_weights_np(zz, math.log(3))  # exp(-k z) = 1/3 and 3 -> weights 0.1 and 0.9
    assert p[0] == pytest.approx([0.1, 0.9])


def test_paired_test_by_hand():
    a = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9}
    b = {s: v - 0.1 * (s + 1) for s, v in a.items()}  # differences 0.1 .. 0.5, all positive
    t = paired_test(a, b)
    assert t["wins"] == 5 and t["mean_diff"] == pytest.approx(0.3)
    assert t["wilcoxon_p"] == pytest.approx(2 / 32)  # exact: both all-positive and all-negative sign patterns
    assert math.isnan(paired_test(a, a)["wilcoxon_p"])


def test_quick_run_end_to_end(tmp_path):
    out, md = tmp_path / "out", tmp_path / "RESULTS.md"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.constraint_neglect.run", "--quick", "--out", str(out),
                           "--markdown", str(md), "--work-dir", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    headline = json.loads(proc.stdout)
    assert set(headline["summary"]["bottleneck_final"]) == {"gdpo", "rvpo_k1"}
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 2 and res["meta"]["seeds"] == [0]
    for run in res["runs"]:
        assert [e["step"] for e in run["evals"]] == [0, 1, 2]
        assert run["train_log"]["step"] == [1, 2]  # the trainer's own log, stored as columns
        for e in run["evals"]:
            assert e["n"] == 8 * 1 * 2
            assert all(0.0 <= e[f"pass/{c}"] <= 1.0 for c in task.CHANNELS)
            assert e["pass/all"] <= min(e[f"pass/{c}"] for c in task.CHANNELS)
        assert run["train_log"]["rvpo/risk"] == [1.0, 1.0]
    # the warm start is shared: both methods start from the same policy, so the step-0 evaluations agree
    starts = [{k: v for k, v in r["evals"][0].items() if k != "eval_seconds"} for r in res["runs"]]
    assert starts[0] == starts[1]
    mats = np.load(out / "reward_matrices.npz")
    assert sorted(mats.files) == ["gdpo_seed0", "rvpo_k1_seed0"]
    assert mats["gdpo_seed0"].shape == (2, 2 * 4, 7)  # 2 batches, 2 prompts x 4 generations, 7 channels
    study = json.loads((out / "taylor.json").read_text())
    assert study["n_rows"] == 4 * 8
    assert study["taylor"]["max_abs_err"][0] < 1e-4  # k = 1e-3: the remainder is O(k^2)
    for png in ("curves.png", "taylor.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| gdpo |" in md.read_text() and "Wilcoxon" in md.read_text()
    mass = json.loads((out / "advantage_mass.json").read_text())
    assert sum(mass["group_counts"].values()) == 2 * 2 * 2  # 2 runs x 2 batches x 2 groups
    assert time.perf_counter() - t0 < 120

    # --reanalyze rebuilds the same summary from the per-run files, without training
    from benchmarks.constraint_neglect.run import reanalyze

    again = tmp_path / "again"
    reanalyze(tmp_path / "work", again, None)
    assert json.loads((again / "results.json").read_text())["summary"] == res["summary"]
