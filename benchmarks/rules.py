"""Rules-service throughput on one core, over the BFCL sample in rvpo/data/ (prints JSON).

"checks": parse + BFCL AST check (``services.rules.channels.bfcl_check``) of the ground-truth call and of a
wrong-value mutation of it, rendered as Python-call text and as Hermes text; tool docs are normalized once per
record (they are shared by the rollouts of a group). "score_item": the full library entry point (all nine
channels + ToolRL) from a validated ``RulesItem`` and from a plain dict (pydantic validation included).
Target: >= 20,000 checks/s. Rates are per second of this process's CPU time (the machine may be shared) and
per second of wall time, each the best of ``--repeats`` rounds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.rules import RulesItem, score_item  # noqa: E402
from services.rules.bfcl import normalize_tools  # noqa: E402
from services.rules.channels import bfcl_check  # noqa: E402
from services.rules.render import calls_from_ground_truth, render  # noqa: E402

TARGET = 20_000


def load_records() -> list[dict]:
    records = []
    for cat in ("simple_python", "multiple", "parallel"):
        qs = (ROOT / f"rvpo/data/bfcl_{cat}_sample.jsonl").read_text().splitlines()
        answers = (ROOT / f"rvpo/data/bfcl_{cat}_possible_answer.jsonl").read_text().splitlines()
        for q_line, a_line in zip(qs, answers):
            q, a = json.loads(q_line), json.loads(a_line)
            assert q["id"] == a["id"]
            records.append({"id": q["id"], "tools": q["function"], "ground_truth": a["ground_truth"]})
    return records


def wrong_value(calls: list[dict]) -> list[dict]:
    """The first argument of the first call changed to a value no possible answer allows."""
    out = copy.deepcopy(calls)
    args = out[0]["arguments"]
    if args:
        k = next(iter(args))
        args[k] = "__wrong__" if isinstance(args[k], str) else 987654321
    return out


def build_cases(records: list[dict]) -> dict[str, list]:
    cases: dict[str, list] = {"python": [], "hermes": []}
    for r in records:
        docs = normalize_tools(r["tools"])
        gt = [next(iter(c.items())) for c in r["ground_truth"]]
        ref = calls_from_ground_truth(r["ground_truth"])
        for fmt in cases:
            for calls in (ref, wrong_value(ref)):
                cases[fmt].append((render(calls, fmt), docs, gt, r, fmt))
    return cases


def rate(fn, items: list, min_seconds: float, repeats: int) -> dict[str, float]:
    """Items per second of CPU time (``time.process_time``: only while this process runs, so other processes
    on a shared machine do not count against it) and per second of wall time; best of ``repeats`` rounds."""
    best_cpu = best_wall = 0.0
    for _ in range(repeats):
        n, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
        while True:
            for it in items:
                fn(it)
            n += len(items)
            cpu = time.process_time() - cpu0
            if cpu >= min_seconds:
                break
        best_cpu = max(best_cpu, n / cpu)
        best_wall = max(best_wall, n / (time.perf_counter() - wall0))
    return {"cpu": best_cpu, "wall": best_wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timed round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed one)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})

    records = load_records()
    cases = build_cases(records)
    # sanity: the references are valid and the mutations are not (otherwise the benchmark measures nothing)
    for fmt, items in cases.items():
        verdicts = [bfcl_check(c, d, g, fmt=f)[0] for c, d, g, _, f in items]
        assert all(verdicts[0::2]) and not any(verdicts[1::2]), fmt

    checks = {}
    for fmt, items in cases.items():
        checks[fmt] = rate(lambda it: bfcl_check(it[0], it[1], it[2], fmt="auto"), items, args.seconds, args.repeats)
    both = cases["python"] + cases["hermes"]
    checks["all"] = rate(lambda it: bfcl_check(it[0], it[1], it[2], fmt="auto"), both, args.seconds, args.repeats)

    dict_items = [
        {"id": r["id"], "completion": c, "tools": r["tools"], "ground_truth": r["ground_truth"], "format": f}
        for c, _, _, r, f in both
    ]
    model_items = [RulesItem.model_validate(d) for d in dict_items]
    full = {
        "from_rules_item": rate(score_item, model_items, args.seconds, args.repeats),
        "from_dict": rate(score_item, dict_items, args.seconds, args.repeats),
    }
    out = {
        "benchmark": "rules",
        "n_records": len(records),
        "n_completions": len(both),
        "checks_per_cpu_s": {k: round(v["cpu"]) for k, v in checks.items()},
        "checks_per_wall_s": {k: round(v["wall"]) for k, v in checks.items()},
        "score_item_per_cpu_s": {k: round(v["cpu"]) for k, v in full.items()},
        "score_item_per_wall_s": {k: round(v["wall"]) for k, v in full.items()},
        "target_checks_per_s": TARGET,
        "meets_target": checks["all"]["cpu"] >= TARGET,
        "cores": 1,
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
