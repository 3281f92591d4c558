"""The demo's one-line verdicts: what each stage showed, in words a newcomer can check, from its summary.

Each function takes the summary the stage computed (rvpo.evaluation, rvpo.training) and returns
``(ok, line)``; ``ok`` False means the stage did not show what it should, and the demo fails.
"""

from __future__ import annotations

import math
from typing import Any

#: The rules channels' scales, in one line (ToolRL's two rewards are not in [0, 1]).
TOOLRL_SCALES = ("rules/* channels are 1 = satisfied, 0 = not (partial credit in between), except ToolRL's two "
                 "rewards: rules/toolrl_format is 0 or 1 (the <tool_call> layout) and rules/toolrl_correctness "
                 "is in [-3, 3] (function name + argument names + values, 1 each)")


def short_error(error_type: str) -> str:
    """A BFCL error type without the checker's name (``simple_function_checker:wrong_func_name`` ->
    ``wrong_func_name``); kinds such as ``type_error:simple`` stay whole."""
    head, _, tail = error_type.partition(":")
    return tail if tail and "checker" in head else error_type


def _count(share: float, n: int) -> int:
    return int(round(share * n)) if not math.isnan(share) else 0


def bfcl_verdict(summary: dict[str, Any]) -> tuple[bool, str]:
    """``BFCL: 100/100 valid calls accepted, 100/100 faulty caught (by error type: wrong_func_name 32, ...)``
    from :func:`rvpo.evaluation.bfcl_summary` of the demo's records (variant ``ground_truth`` and
    ``faulty:<kind>``). ok = every valid call accepted and every faulty one rejected, none unscored."""
    gt = summary.get("ground_truth", {"accuracy": math.nan, "n": 0, "unscored": 0})
    accepted = _count(gt["accuracy"], gt["n"])
    faulty = {v: s for v, s in summary.items() if v.startswith("faulty:")}
    n_faulty = sum(s["n"] for s in faulty.values())
    caught = sum(s["n"] - _count(s["accuracy"], s["n"]) - s["unscored"] for s in faulty.values())
    kinds: dict[str, int] = {}
    for s in faulty.values():
        for err, n in s["error_types"].items():
            kinds[short_error(err)] = kinds.get(short_error(err), 0) + n
    unscored = gt["unscored"] + sum(s["unscored"] for s in faulty.values())
    by_type = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))
    line = (f"BFCL: {accepted}/{gt['n']} valid calls accepted, {caught}/{n_faulty} faulty calls caught "
            f"(by error type: {by_type or 'none'})" + (f"; {unscored} unscored" if unscored else ""))
    return accepted == gt["n"] > 0 and caught == n_faulty > 0 and not unscored, line


def bfcl_rows(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """One row per variant for the demo's table: (variant, accepted / n, BFCL error types, the [0, 1] rules
    channels that fell below 1, lowest first, with their means), one entry per line."""
    rows = []
    for variant, s in summary.items():
        errors = "\n".join(short_error(e) for e in s["error_types"]) or "-"
        low = sorted((m, c) for c, m in s["channel_means"].items() if "toolrl" not in c and m < 1 - 1e-9)
        rows.append((variant.removeprefix("faulty:").replace("_", " "), f"{_count(s['accuracy'], s['n'])}/{s['n']}",
                     errors, "\n".join(f"{c.split('/')[-1]} {m:.2f}" for m, c in low[:3]) or "all 1.00"))
    return rows


def healthbench_verdict(summary: dict[str, Any], grader: str) -> tuple[bool, str]:
    """``HealthBench (grader: ...): ideal answers 0.43, truncated to a third 0.21, over 41 conversations; 0/978
    verdicts null — truncating lowers the score, as it should`` from :func:`rvpo.evaluation.healthbench_summary`.
    ok = at most half the verdicts null (a null verdict is never 'not met': with most null there is no score)."""
    ideal, trunc = summary.get("ideal"), summary.get("truncated")
    nulls = sum(s["null_verdicts"] for s in summary.values())
    total = sum(s["verdicts"] for s in summary.values())
    if not ideal or not trunc or nulls * 2 > total:
        reasons = {}
        for s in summary.values():
            for k, n in s.get("null_reasons", {}).items():
                reasons[k] = reasons.get(k, 0) + n
        why = ", ".join(f"{k} x{n}" for k, n in reasons.items()) or "no rows"
        return False, f"HealthBench (grader: {grader}): {nulls}/{total} verdicts null ({why}): nothing to score"
    order = ("truncating lowers the score, as it should" if ideal["score"] > trunc["score"]
             else "truncating did NOT lower the score: this grader cannot tell them apart")
    return True, (f"HealthBench (grader: {grader}): ideal answers {ideal['score']:.2f}, the same truncated to a "
                  f"third {trunc['score']:.2f}, over {ideal['n_samples']} conversations; {nulls}/{total} verdicts "
                  f"null — {order}")


def training_verdict(summary: dict[str, Any], bottleneck: str = "rules/arg_values") -> tuple[bool, str]:
    """``RVPO, 40 steps, on 32 held-out prompts x 4 samples: mean reward 0.58 -> 0.73, ...`` from
    :func:`rvpo.training.run_training`'s summary. ok = training ran to the end and the held-out mean reward
    went up."""
    if summary.get("stopped"):
        return False, f"RVPO training stopped after {summary['steps']} steps: {summary['stopped']}"
    ho = summary.get("held_out") or {}
    if not ho.get("after"):
        return True, f"RVPO training: {summary['steps']} steps (no held-out evaluation configured)"
    b, a = ho["before"], ho["after"]
    easy = [k for k in a if k.startswith("pass/rules/") and k != f"pass/{bottleneck}"]
    easy_b, easy_a = (sum(d[k] for k in easy) / len(easy) for d in (b, a)) if easy else (math.nan, math.nan)
    improved = a["mean_reward"] > b["mean_reward"]
    line = (f"RVPO, {summary['steps']} steps, on {ho['prompts']} held-out prompts x {ho['samples_per_prompt']} "
            f"samples: mean reward {b['mean_reward']:.2f} -> {a['mean_reward']:.2f}"
            f" ({'up' if improved else 'NOT up'}), easy channels' pass rate {easy_b:.2f} -> {easy_a:.2f}, "
            f"bottleneck {bottleneck.split('/')[-1]} {b[f'pass/{bottleneck}']:.2f} -> {a[f'pass/{bottleneck}']:.2f}")
    if max(a[f"pass/{bottleneck}"], b[f"pass/{bottleneck}"]) < 0.02:
        line += (" — the bottleneck cannot move at this size: in a warm start this short the tiny policy does not "
                 "learn to copy argument values, and RL cannot reinforce a right value it never samples (the "
                 "constraint-neglect benchmark's 45-minute run, with a larger warm start, takes it from 0.07 to 0.42)")
    return improved, line
