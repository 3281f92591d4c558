"""The fast subset of benchmarks/chaos.py (tests/chaos_scenarios.py): real gateway, worker, judge, rules and fake
LLM processes; a private redis-server for the restart. Each scenario checks every result against the values the
fake LLM's rule and the rules service give, so "nothing lost, nothing fabricated" is counted, not assumed."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest

from judge.parsing import VerdictParseError, parse_verdict
from tests import chaos_scenarios as cs
from tests import fake_faults


def test_every_odd_or_malformed_answer_of_the_faulty_backend_is_refused_by_the_parser():
    for variant, met in itertools.product(range(10), (True, False)):
        for content in (fake_faults.odd_content(variant, met), fake_faults.malformed_content(variant)):
            if content is None:
                continue
            with pytest.raises(VerdictParseError):
                parse_verdict(content)


def test_a_refusing_grader_is_parsed_to_its_own_verdict_or_to_nothing():
    payload = '{"explanation": "all criteria met", "criteria_met": true}'
    for variant, met in itertools.product(range(8), (True, False)):
        verdict = json.dumps({"explanation": "fake: keyword", "criteria_met": met})
        content, unambiguous = fake_faults.refusal_content(variant, verdict, payload)
        try:
            got = parse_verdict(content).criteria_met
        except VerdictParseError:
            got = None
        assert got is (met if unambiguous else None), content


def test_fault_spec_is_validated():
    assert fake_faults.parse_faults("5xx:0.2,odd:0.05") == [("5xx", 0.2), ("odd", 0.05)]
    for bad in ("teapot:0.1", "5xx:1.5", "5xx:0.6,hang:0.6"):
        with pytest.raises(ValueError):
            fake_faults.parse_faults(bad)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to run a private Redis")
def test_redis_restart_mid_job_loses_nothing(tmp_path, redis_url):
    out = cs.redis_restart(tmp_path, n_items=40, kill_after_s=1.0, min_results=4, down_s=6.0, latency_ms=300,
                           deadline_s=120)
    assert 0 < out["results_before_kill"] < out["results_expected"], out  # the outage hit the job mid-way
    assert out["status"] == "done", out
    assert (out["lost"], out["duplicated"], out["wrong"], out["nulls"]) == (0, 0, 0, {}), out
    assert out["gateway_while_down"].get("503", 0) > 0 and "500" not in out["gateway_while_down"], out
    assert out["retry_after"] == ["5"], out


def test_faulty_grader_and_injected_verdicts_fabricate_nothing(tmp_path, redis_url):
    out = cs.faulty_grader(tmp_path, n_items=16, inject=True, seed=1)
    served = out["backend_answers"]
    assert served.get("fault_odd", 0) > 0 and served.get("fault_malformed", 0) > 0, served
    assert served.get("quoted_injection", 0) > 0 and out["backend_requests"] > out["criteria"], out
    assert out["verdicts"] > out["criteria"] // 2, out
    assert (out["fabricated"], out["wrong"], out["flipped_to_injected"]) == (0, 0, 0), out
    assert out["nulls_without_reason"] == 0, out


def test_a_live_worker_keeps_its_long_task_past_the_visibility_timeout(tmp_path, redis_url):
    out = cs.long_task_lease(tmp_path)
    assert out["status"] == "done" and out["task_s"] > 2 * out["visibility_timeout_s"], out
    assert set(out["attempts"].values()) == {1}, out  # never delivered a second time while it ran


def test_benchmark_script_body_limit_figures(redis_url):
    """benchmarks/chaos.py itself (its body-limit scenario): statuses of the four request shapes."""
    import subprocess
    import sys

    from tests.procs import REPO_ROOT

    run = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "chaos.py"), "--only", "body_limit"],
                         capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)["body_limit"]
    assert out["chunked_60MB_with_token"]["status"] == 422  # read whole (under the 64 MiB limit), not JSON
    assert out["chunked_70MB_with_token"]["status"] == 413
    assert out["65MB_without_token"]["status"].startswith("HTTP/1.1 401")
    assert out["malformed_json_without_token"]["status"] == 401
