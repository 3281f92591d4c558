"""Gateway end to end with real parts: fake LLM -> judge, rules, gateway, a prefork Celery worker, real Redis.

Expected values come from (a) the judge and rules services answering the same items directly, and (b) by hand:
the fake LLM's published rule (criterion keyword in the completion) times the criterion's points for rubric
channels, simple-evals' per-example score, and obvious BFCL verdicts (the right call vs a wrong function).
"""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest

from tests.fake_llm import keyword, rule_verdict
from tests.gateway_fixtures import (bfcl_item, bfcl_rows, correct_call_text, healthbench_item, read_jsonl,
                                    running_stack)

TOKEN = "test-token-gw"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RULE_CHANNELS = ["rules/format", "rules/function_name", "rules/required_args", "rules/no_unexpected_args",
                 "rules/arg_types", "rules/arg_values", "rules/call_count", "rules/toolrl_format",
                 "rules/toolrl_correctness"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url):
    gateway_env = {"RVPO_GATEWAY_MAX_ITEMS": "40", "RVPO_GATEWAY_MAX_BODY_BYTES": str(400_000),
                   "RVPO_JOB_DEADLINE_S": "60"}
    with running_stack(tmp_path_factory.mktemp("gw-logs"), token=TOKEN, gateway_env=gateway_env) as s:
        yield s


def hb_completion(row: dict) -> str:
    """A completion that mentions the keyword of every other rubric criterion (the fake LLM's rule)."""
    words = [keyword(r["criterion"]) for j, r in enumerate(row["rubrics"]) if j % 2 == 0]
    return "Here is my advice. " + " ".join(w for w in words if w) + "."


def batch() -> tuple[list[dict], dict]:
    """3 BFCL items (right call / wrong function name, simple / parallel), 3 HealthBench items, one with both."""
    simple, parallel = bfcl_rows("simple_python", 2), bfcl_rows("parallel", 1)
    items = [bfcl_item(simple[0], correct_call_text(simple[0]["ground_truth"])),
             bfcl_item(simple[1], "[no_such_function(x=1)]"),
             bfcl_item(parallel[0], correct_call_text(parallel[0]["ground_truth"]))]
    hb = read_jsonl("healthbench_sample.jsonl")[:3]
    items += [healthbench_item(r, hb_completion(r)) for r in hb]
    # one item with both sources: a HealthBench rubric and a tool call
    both = dict(items[0], id="both", rubrics=hb[0]["rubrics"][:2])
    items.append(both)
    return items, {"hb": hb}


def direct(url: str, path: str, items: list[dict]) -> list[dict]:
    resp = httpx.post(url + path, json={"items": items}, headers=AUTH, timeout=60)
    resp.raise_for_status()
    return resp.json()["items"]


def test_batch_end_to_end_matches_direct_services(stack):
    items, _ = batch()
    t0 = time.monotonic()
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", params={"wait": 60}, json={"items": items},
                      headers=AUTH, timeout=90)
    assert resp.status_code == 200, resp.text  # 200: finished within ?wait
    job = resp.json()
    assert job["status"] == "done", job
    assert time.monotonic() - t0 < 60
    assert job["n_items"] == len(items) and job["n_expected"] == 3 + 3 + 2 == job["n_results"]

    rules_items = [{k: it[k] for k in ("id", "completion", "tools", "ground_truth", "mode")} for it in items
                   if "tools" in it]
    rules_direct = {r["id"]: r for r in direct(stack.urls["rules"], "/v1/rules/score", rules_items)}
    judge_items = [{k: it[k] for k in ("id", "prompt", "completion", "rubrics")} for it in items if "rubrics" in it]
    judge_direct = {r["id"]: r for r in direct(stack.urls["judge"], "/v1/judge", judge_items)}

    by_id = {it["id"]: it for it in job["items"]}
    for item in items:
        got = by_id[item["id"]]
        expected_names = set()
        if "tools" in item:
            d = rules_direct[item["id"]]
            expected_names |= set(RULE_CHANNELS)
            for name in RULE_CHANNELS:
                assert got["channels"][name] == d["channels"][name], (item["id"], name)
            assert got["bfcl"]["valid"] == d["valid"] and got["bfcl"]["error_type"] == d["error_type"]
        if "rubrics" in item:
            d = judge_direct[item["id"]]
            assert got["healthbench_score"] == pytest.approx(d["score"])
            points = [r["points"] for r in item["rubrics"]]
            met = [rule_verdict(r["criterion"], item["completion"]) for r in item["rubrics"]]
            for j, (p, m) in enumerate(zip(points, met)):
                name = f"rubric/{j:02d}"
                expected_names.add(name)
                assert got["channels"][name] == d["channels"][name] == pytest.approx(p * m), (item["id"], name)
            # simple-evals calculate_score, by hand
            hand = sum(p for p, m in zip(points, met) if m) / sum(p for p in points if p > 0)
            assert got["healthbench_score"] == pytest.approx(hand)
        assert set(got["channels"]) == expected_names
        assert all(s["state"] == "ok" and s["attempts"] == 1 for s in got["sources"].values())

    # by hand: the right call passes every check, a wrong function name fails the name check
    assert by_id[items[0]["id"]]["bfcl"]["valid"] is True
    assert by_id[items[0]["id"]]["channels"]["rules/function_name"] == 1.0
    assert by_id[items[1]["id"]]["bfcl"]["valid"] is False
    assert by_id[items[1]["id"]]["channels"]["rules/function_name"] == 0.0
    assert by_id[items[2]["id"]]["channels"]["rules/call_count"] == 1.0  # parallel: every call present

    # the dense [N, K] form: rubric slots up to the batch max, then the rule channels, NaN padding with reasons
    dense = httpx.get(f"{stack.urls['gateway']}/v1/jobs/{job['job_id']}/rewards", headers=AUTH).json()
    m = max(len(it.get("rubrics", [])) for it in items)
    assert dense["channel_names"] == [f"rubric/{j:02d}" for j in range(m)] + RULE_CHANNELS
    assert dense["item_ids"] == [it["id"] for it in items]
    assert len(dense["rewards"]) == len(items) and all(len(r) == m + 9 for r in dense["rewards"])
    for row, why, item in zip(dense["rewards"], dense["reasons"], items):
        n = len(item.get("rubrics", []))
        for j in range(m):
            if j >= n:
                assert row[j] is None and why[j] == f"absent: prompt has only {n} rubric criteria"
            else:
                assert row[j] == by_id[item["id"]]["channels"][f"rubric/{j:02d}"]
        for k, name in enumerate(RULE_CHANNELS, start=m):
            if "tools" in item:
                assert row[k] == by_id[item["id"]]["channels"][name]
            else:
                assert row[k] is None and why[k] == "absent: item has no tools"


def test_auth_probes_and_unknown_job(stack):
    gw = stack.urls["gateway"]
    item = {"id": "a", "prompt": "hi", "completion": "x", "tools": [], "ground_truth": []}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert httpx.post(gw + "/v1/score", json={"items": [item]}, headers=headers).status_code == 401
        assert httpx.get(gw + "/v1/jobs/abc", headers=headers).status_code == 401
        assert httpx.get(gw + "/v1/jobs/abc/rewards", headers=headers).status_code == 401
    for probe in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(gw + probe).status_code == 200, probe
    assert "rvpo_gateway_jobs_total" in httpx.get(gw + "/metrics").text
    assert httpx.get(gw + "/v1/jobs/does-not-exist", headers=AUTH).status_code == 404
    assert httpx.get(gw + "/v1/jobs/does-not-exist/rewards", headers=AUTH).status_code == 404
    assert httpx.get(gw + "/openapi.json").status_code == 200


def test_limits_413(stack):
    gw = stack.urls["gateway"]
    item = {"prompt": "hi", "completion": "x", "tools": [], "ground_truth": []}
    too_many = [dict(item, id=str(i)) for i in range(41)]  # RVPO_GATEWAY_MAX_ITEMS=40
    resp = httpx.post(gw + "/v1/score", json={"items": too_many}, headers=AUTH)
    assert resp.status_code == 413 and resp.json()["detail"][0]["loc"] == ["body", "items"]
    big = [dict(item, id="big", completion="x" * 500_000)]  # RVPO_GATEWAY_MAX_BODY_BYTES=400000
    resp = httpx.post(gw + "/v1/score", json={"items": big}, headers=AUTH)
    assert resp.status_code == 413


@pytest.mark.parametrize("mutate, loc, words", [
    (lambda it: it.pop("completion"), ["body", "items", 1, "completion"], "required"),
    (lambda it: it.update(rubrics=[{"criterion": "c", "points": "many"}]), ["body", "items", 1, "rubrics", 0, "points"],
     "number"),
    (lambda it: it.update(tools=None, ground_truth=None), ["body", "items", 1], "rubrics"),
    (lambda it: it.update(tools=None, rubrics=[{"criterion": "c", "points": 1}]), ["body", "items", 1], "tools"),
    (lambda it: it.update(mode="sequential"), ["body", "items", 1, "mode"], "simple"),
    (lambda it: it.update(id="0"), ["body", "items"], "repeats"),
])
def test_malformed_item_422_names_the_field(stack, mutate, loc, words):
    good = {"prompt": "hi", "completion": "x", "tools": [], "ground_truth": []}
    items = [dict(good, id="0"), dict(good, id="1")]
    mutate(items[1])
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", json={"items": items}, headers=AUTH)
    assert resp.status_code == 422, resp.text
    errors = resp.json()["detail"]
    assert any(e["loc"] == loc and words in e["msg"] for e in errors), errors


def test_backend_that_never_answers_gives_partial_within_deadline(stack):
    """Every rubric criterion of the HealthBench items carries the fake LLM's `hang` marker (no answer for 60 s,
    and the judge would keep retrying for >= 6.7 s); the BFCL item is scored normally. The job has a 3 s deadline:
    the worker gives the judge the time left less its 1 s margin, and the judge answers within it."""
    hb = read_jsonl("healthbench_sample.jsonl")[3:5]
    hang_items = []
    for r in hb:
        rubrics = [dict(c, criterion=c["criterion"] + " [[fake:hang]]") for c in r["rubrics"][:3]]
        hang_items.append(dict(healthbench_item(r, "some answer"), rubrics=rubrics))
    row = bfcl_rows("simple_python", 3)[2]
    items = [bfcl_item(row, correct_call_text(row["ground_truth"]))] + hang_items
    deadline_s = 3.0
    t0 = time.monotonic()
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", params={"deadline_s": deadline_s},
                      json={"items": items}, headers=AUTH, timeout=30)
    assert resp.status_code == 202 and resp.json()["status"] in ("queued", "running")
    job_id = resp.json()["job_id"]
    job = httpx.get(f"{stack.urls['gateway']}/v1/jobs/{job_id}", params={"wait": 20}, headers=AUTH,
                    timeout=30).json()
    elapsed = time.monotonic() - t0
    assert job["status"] == "partial", job
    assert elapsed < deadline_s + 2.0, elapsed
    bfcl, *hangs = job["items"]
    assert bfcl["sources"]["rules"]["state"] == "ok" and bfcl["channels"]["rules/function_name"] == 1.0
    for it in hangs:
        assert it["sources"]["judge"]["state"] == "error"
        assert it["healthbench_score"] is None
        assert set(it["channels"]) == {"rubric/00", "rubric/01", "rubric/02"}
        for name, value in it["channels"].items():
            assert value is None
            assert it["reasons"][name].split(":")[0] == "judge_budget_exceeded", it["reasons"]  # not the deadline
    dense = httpx.get(f"{stack.urls['gateway']}/v1/jobs/{job_id}/rewards", headers=AUTH).json()
    assert dense["status"] == "partial"
    assert all(v is None for row in dense["rewards"][1:] for v in row[:3])
    # frozen: asking again later gives the same answer
    assert httpx.get(f"{stack.urls['gateway']}/v1/jobs/{job_id}", headers=AUTH).json()["items"] == job["items"]
    assert not any(math.isnan(v) for row in dense["rewards"] for v in row if v is not None)


# ----------------------------------------------------------------------------------------------------------
# Poison inputs: every boundary answers 422 naming the field, never 202 then NaN, never a 500
# ----------------------------------------------------------------------------------------------------------
DOC = {"name": "area", "parameters": {"type": "dict", "required": ["b"], "properties": {"b": {"type": "integer"}}}}
GOOD = {"id": "ok", "prompt": [{"role": "user", "content": "Area for b=1?"}], "completion": "[area(b=1)]",
        "tools": [DOC], "ground_truth": [{"area": {"b": [1]}}]}
HB = {"id": "hb", "prompt": [{"role": "user", "content": "I have a fever."}], "completion": "Rest.",
      "rubrics": [{"criterion": "Advises rest", "points": 5}]}
BIG = 12345.678125  # written as 1e999 in the raw body (Python's JSON reads it as inf)


def raw(body: dict) -> bytes:
    """JSON text as a careless client writes it: NaN / Infinity tokens, 1e999, \\ud800 escapes."""
    return json.dumps(body, allow_nan=True).replace(repr(BIG), "1e999").encode()


@pytest.mark.parametrize("item, loc, words", [
    (dict(HB, prompt=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]), ["prompt"],
     "last prompt message"),
    (dict(HB, prompt=[{"role": "user", "content": None}]), ["prompt"], "content is null"),
    (dict(HB, prompt=[{"role": "narrator", "content": "a"}]), ["prompt", "messages", 0, "role"], "user"),
    (dict(HB, rubrics=[{"criterion": "c", "points": math.nan}]), ["rubrics", 0, "points"], "finite"),
    (dict(HB, rubrics=[{"criterion": "c", "points": math.inf}]), ["rubrics", 0, "points"], "finite"),
    (dict(HB, rubrics=[{"criterion": "c", "points": -math.inf}]), ["rubrics", 0, "points"], "finite"),
    (dict(HB, rubrics=[{"criterion": "c", "points": BIG}]), ["rubrics", 0, "points"], "finite"),
    (dict(GOOD, ground_truth=[{"volume": {"b": [1]}}]), ["ground_truth"], "not among the tools"),
    (dict(GOOD, ground_truth=[{"area": {"b": [math.nan]}}]), ["ground_truth"], "not a finite number"),
    (dict(GOOD, tools=[dict(DOC, description=BIG)]), ["tools"], "not a finite number"),
    (dict(GOOD, completion="[area(b='\ud800')]"), ["completion", "text"], "unicode"),
    (dict(HB, rubrics=[{"criterion": "c\udfff", "points": 1}]), ["rubrics", 0, "criterion"], "unicode"),
    (dict(GOOD, completion={"role": "assistant", "content": None,
                            "tool_calls": [{"function": {"name": "area", "arguments": {"b": math.nan}}}]}),
     ["completion", "message", "tool_calls", 0], "not a finite number"),
])
def test_poison_items_are_422_at_submission(stack, item, loc, words):
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", content=raw({"items": [GOOD, dict(item, id="bad")]}),
                      headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    errors = resp.json()["detail"]  # parses: the echoed input carries no NaN / surrogate
    assert any(e["loc"] == ["body", "items", 1, *loc] and words.lower() in e["msg"].lower() for e in errors), errors


def test_documented_toolrl_response_option_is_accepted(stack):
    item = dict(GOOD, options={"toolrl_response": False})
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", params={"wait": 30}, json={"items": [item]},
                      headers=AUTH, timeout=60)
    assert resp.status_code == 200 and resp.json()["status"] == "done", resp.text


@pytest.mark.parametrize("service, path, item", [
    ("judge", "/v1/judge", {k: HB[k] for k in ("id", "prompt", "completion")} | {
        "rubrics": [{"criterion": "c", "points": math.nan}]}),
    ("judge", "/v1/judge", {**{k: HB[k] for k in ("id", "prompt", "rubrics")}, "completion": "x\ud800"}),
    ("rules", "/v1/rules/score", {k: GOOD[k] for k in ("id", "completion", "tools")} | {
        "ground_truth": [{"area": {"b": [math.inf]}}]}),
    ("rules", "/v1/rules/score", {k: GOOD[k] for k in ("id", "tools", "ground_truth")} | {"completion": "\ud800"}),
])
def test_services_answer_422_never_500_for_poison(stack, service, path, item):
    resp = httpx.post(stack.urls[service] + path, content=raw({"items": [item]}),
                      headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"][:3] == ["body", "items", 0]


def test_no_negative_zero_on_the_wire(stack):
    """An unmet negative-points criterion is worth 0 (points * met): `0.0`, never `-0.0`, in every answer."""
    item = dict(HB, rubrics=[{"criterion": "Recommends antibiotics", "points": -6}])  # keyword absent: not met
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", params={"wait": 30}, json={"items": [item]},
                      headers=AUTH, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["items"][0]["channels"]["rubric/00"] == 0.0
    assert "-0.0" not in resp.text
    direct = httpx.post(stack.urls["judge"] + "/v1/judge", json={"items": [item]}, headers=AUTH, timeout=30)
    assert direct.json()["items"][0]["channels"]["rubric/00"] == 0.0 and "-0.0" not in direct.text
