"""The demo's one-line verdicts (rvpo/demo/verdicts.py) on hand-made stage summaries."""

from __future__ import annotations

import math

from rvpo.demo.verdicts import bfcl_rows, bfcl_verdict, healthbench_verdict, training_verdict


def bfcl_variant(accuracy: float, n: int, errors: dict, channels: dict, unscored: int = 0) -> dict:
    return {"accuracy": accuracy, "n": n, "unscored": unscored, "by_category": {}, "error_types": errors,
            "channel_means": channels, "unscored_reasons": {}}


SUMMARY = {
    "ground_truth": bfcl_variant(1.0, 3, {}, {"rules/format": 1.0, "rules/arg_values": 1.0}),
    "faulty:wrong_func_name": bfcl_variant(0.0, 2, {"simple_function_checker:wrong_func_name": 2},
                                           {"rules/function_name": 0.0, "rules/arg_values": 0.5,
                                            "rules/toolrl_correctness": -1.0}),
    "faulty:wrong_value": bfcl_variant(0.0, 1, {"value_error:others": 1}, {"rules/arg_values": 0.5}),
}


def test_bfcl_verdict_counts_accepted_and_caught_by_error_type():
    ok, line = bfcl_verdict(SUMMARY)
    assert ok
    assert line == ("BFCL: 3/3 valid calls accepted, 3/3 faulty calls caught "
                    "(by error type: wrong_func_name 2, value_error:others 1)")
    missed = {**SUMMARY, "faulty:wrong_value": bfcl_variant(1.0, 1, {}, {"rules/arg_values": 1.0})}
    ok, line = bfcl_verdict(missed)
    assert not ok and "2/3 faulty calls caught" in line
    rows = bfcl_rows(SUMMARY)  # lowest [0, 1] channels first; ToolRL's [-3, 3] channel left out
    assert rows[1] == ("wrong func name", "0/2", "wrong_func_name", "function_name 0.00\narg_values 0.50")
    assert rows[0][3] == "all 1.00"


def hb_variant(score: float, n: int, nulls: int, verdicts: int, reasons: dict | None = None) -> dict:
    return {"score": score, "score_bootstrap_std": 0.01, "n_samples": n, "null_verdicts": nulls,
            "verdicts": verdicts, "null_reasons": reasons or {}}


def test_healthbench_verdict_says_whether_truncation_lowered_the_score():
    ok, line = healthbench_verdict({"ideal": hb_variant(0.4, 5, 0, 50), "truncated": hb_variant(0.2, 5, 1, 50)},
                                   "keyword stand-in")
    assert ok and "ideal answers 0.40, the same truncated to a third 0.20, over 5 conversations" in line
    assert "1/100 verdicts null — truncating lowers the score, as it should" in line
    ok, line = healthbench_verdict({"ideal": hb_variant(0.0, 5, 0, 50), "truncated": hb_variant(0.0, 5, 0, 50)}, "x")
    assert ok and "did NOT lower the score" in line
    dead = {"ideal": hb_variant(math.nan, 0, 50, 50, {"judge_transport_error": 50}),
            "truncated": hb_variant(math.nan, 0, 50, 50, {"judge_transport_error": 50})}
    ok, line = healthbench_verdict(dead, "x")
    assert not ok and "100/100 verdicts null (judge_transport_error x100)" in line


def held_out(mean: float, easy: float, bottleneck: float) -> dict:
    out = {f"pass/rules/{c}": easy for c in ("format", "function_name")}
    return {**out, "pass/rules/arg_values": bottleneck, "pass/all": bottleneck, "mean_reward": mean, "n": 8}


def test_training_verdict_reports_held_out_before_and_after():
    summary = {"steps": 40, "stopped": None,
               "held_out": {"prompts": 2, "samples_per_prompt": 4, "before": held_out(0.45, 0.5, 0.1),
                            "after": held_out(0.56, 0.6, 0.3)}}
    ok, line = training_verdict(summary)
    assert ok and line == ("RVPO, 40 steps, on 2 held-out prompts x 4 samples: mean reward 0.45 -> 0.56 (up), "
                           "easy channels' pass rate 0.50 -> 0.60, bottleneck arg_values 0.10 -> 0.30")
    summary["held_out"]["after"] = held_out(0.40, 0.6, 0.0)
    summary["held_out"]["before"] = held_out(0.45, 0.5, 0.0)
    ok, line = training_verdict(summary)
    assert not ok and "(NOT up)" in line and "the bottleneck cannot move at this size" in line
    ok, line = training_verdict({"steps": 1, "stopped": "2 reward batches in a row unscored", "held_out": {}})
    assert not ok and "stopped after 1 steps: 2 reward batches in a row unscored" in line


def test_the_demo_grader_is_the_users_llm_else_the_labelled_stand_in(tmp_path, monkeypatch):
    import httpx
    from rich.console import Console

    from rvpo.demo import run

    console = Console(file=open(tmp_path / "out.txt", "w"), width=200)
    monkeypatch.delenv("RVPO_JUDGE_BASE_URL", raising=False)
    grader = run._grader(tmp_path, console)
    try:
        assert not grader.meaningful and grader.label == "keyword stand-in, not a medical judgement"
        url = grader.env["RVPO_JUDGE_BASE_URL"]
        assert httpx.get(url + "/models", timeout=10).json()["data"][0]["id"] == grader.env["RVPO_JUDGE_MODEL"]
    finally:
        grader.proc.stop()
    console.file.flush()
    assert "KEYWORD STAND-IN" in (tmp_path / "out.txt").read_text()
    monkeypatch.setenv("RVPO_JUDGE_BASE_URL", "http://my-vllm:8000/v1")
    monkeypatch.setenv("RVPO_JUDGE_MODEL", "my-grader")
    mine = run._grader(tmp_path, console)
    assert mine.meaningful and mine.env == {} and mine.label == "your LLM my-grader at http://my-vllm:8000/v1"
    monkeypatch.delenv("RVPO_JUDGE_BASE_URL")
    monkeypatch.setattr(run, "REPO", tmp_path)  # no tests/ (an installed wheel): the untrained local model
    local = run._grader(tmp_path, console)
    assert not local.meaningful and local.max_conversations == 4
    assert local.env["RVPO_JUDGE_BACKEND"] == "local" and "meaningless" in local.label
