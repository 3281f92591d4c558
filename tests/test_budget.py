"""One time budget, nested (issue 14): the ``X-RVPO-Budget-S`` header (services/common/budget.py) through real
judge and rules processes in front of the fake LLM (tests/fake_llm.py, ``[[fake:hang]]`` / ``[[fake:prose]]``
markers), the worker's task body against a real judge (in this process, real Redis), the local backend on a tiny
model, and the settings that keep the budgets nested.

Expected verdicts come from the fake's documented rule (tests/fake_llm.py ``rule_verdict``); expected times from
the settings below: each backend attempt 0.8 s, 3 retries after 0.5, 1, 2 s of backoff, 3 re-asks - a hung
criterion would keep the judge 6.7 s without a budget.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import uuid

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from judge.settings import JudgeSettings
from services.common.budget import BUDGET_HEADER, parse_budget
from services.rules.settings import RulesSettings
from services.worker.settings import WorkerSettings
from tests.fake_llm import rule_verdict
from tests.procs import REDIS_URL, unique, uvicorn_server

LATENCY_S = 0.15          # the fake's answer time
DEFAULT_BUDGET_S = 1.5    # RVPO_JUDGE_BUDGET_S of the judge under test
MAX_BUDGET_S = 3.0        # RVPO_JUDGE_MAX_BUDGET_S
JUDGE_ENV = {"RVPO_JUDGE_MODEL": "fake-judge", "RVPO_JUDGE_CACHE_ENABLED": "false", "RVPO_JUDGE_TIMEOUT_S": "0.8",
             "RVPO_JUDGE_RETRIES": "3", "RVPO_JUDGE_BACKOFF_S": "0.5", "RVPO_JUDGE_PARSE_RETRIES": "3",
             "RVPO_JUDGE_BUDGET_S": str(DEFAULT_BUDGET_S), "RVPO_JUDGE_MAX_BUDGET_S": str(MAX_BUDGET_S),
             "RVPO_API_TOKEN": ""}
SLACK_S = 1.0             # loopback + a loaded 2-core box: how late an answer may come after its budget
COMPLETION = "Drink water, rest in a dark room, and see a doctor if the headache lasts."
CRITERIA = [("Advises drinking water", 5), ("Mentions rest", 3), ("Recommends a doctor", 4),
            ("Suggests ibuprofen", 2), ("Asks about fever", 2), ("Mentions darkness of the room", 1),
            ("Recommends opioids", -8), ("Explains dehydration", 2)]
HUNG_SLOT = 3


def judge_item(hang_slot: int | None = HUNG_SLOT, marker: str = "[[fake:hang]]") -> tuple[dict, str]:
    """An item of the eight criteria above, each tagged with a fresh all-digit tag; ``hang_slot`` carries
    ``marker``. Returns the item and the tag."""
    tag = f"{uuid.uuid4().int % 10**10:010d}"
    rubrics = [{"criterion": f"{c} {tag}" + (f" {marker}" if j == hang_slot else ""), "points": p}
               for j, (c, p) in enumerate(CRITERIA)]
    return {"id": "b", "prompt": [{"role": "user", "content": "I have a headache"}], "completion": COMPLETION,
            "rubrics": rubrics}, tag


def null_verdict_counts(judge_url: str) -> dict[str, float]:
    """``rvpo_judge_null_verdicts_total`` by reason, read from the judge's ``/metrics``."""
    text = httpx.get(judge_url + "/metrics", timeout=10).text
    return {s.labels["reason"]: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "rvpo_judge_null_verdicts_total"}


def requests_with(fake_url: str, text: str) -> int:
    reqs = httpx.get(fake_url + "/requests", params={"last": 2000}, timeout=10).json()
    return sum(text in m["content"] for r in reqs for m in r["messages"] if m["role"] == "user")


def post(url: str, body: dict, budget: str | None, timeout: float = 30) -> tuple[httpx.Response, float]:
    headers = {BUDGET_HEADER: budget} if budget is not None else {}
    t0 = time.monotonic()
    resp = httpx.post(url, json=body, headers=headers, timeout=timeout)
    return resp, time.monotonic() - t0


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("budget-logs")


@pytest.fixture(scope="module")
def fake(logs):
    env = {"FAKE_LLM_LATENCY_MS": str(LATENCY_S * 1000), "FAKE_LLM_HANG_S": "30"}
    with uvicorn_server("tests.fake_llm:app", logs, env=env) as p:
        yield p


@pytest.fixture(scope="module")
def judge(fake, logs):
    with uvicorn_server("judge.app:app", logs, env={**JUDGE_ENV, "RVPO_JUDGE_BASE_URL": fake.url + "/v1"}) as p:
        yield p


# ------------------------------------------------------------------------------------------------ the header
def test_parse_budget_clamps_and_refuses_non_numbers():
    assert parse_budget(None, 7.0, 10.0) == (7.0, "default")
    assert parse_budget(None, 70.0, 10.0) == (10.0, "default")
    assert parse_budget("2.5", 7.0, 10.0) == (2.5, "header")
    assert parse_budget(" 3 ", 7.0, 10.0) == (3.0, "header")
    assert parse_budget("1e9", 7.0, 10.0) == (10.0, "clamped")
    assert parse_budget("-4", 7.0, 10.0) == (0.0, "clamped")
    for bad in ("nan", "inf", "-Infinity", "soon", "", "1,5"):
        with pytest.raises(ValueError):
            parse_budget(bad, 7.0, 10.0)


# ------------------------------------------------------------------------------------------------ the judge
def test_one_hung_criterion_is_null_alone_and_the_answer_comes_within_the_budget(fake, judge):
    body, tag = judge_item()
    resp, elapsed = post(judge.url + "/v1/judge", {"items": [body]}, "2")
    assert resp.status_code == 200, resp.text
    assert resp.headers[BUDGET_HEADER] == "2"
    # 0.8 s attempt, 0.5 s backoff, an attempt cut at the deadline: it used the budget, and answered in time
    assert 2.0 - 0.2 <= elapsed < 2.0 + SLACK_S
    [res] = resp.json()["items"]
    for j, (rr, r) in enumerate(zip(res["rubric_results"], body["rubrics"])):
        if j == HUNG_SLOT:
            assert rr["criteria_met"] is None
            assert rr["error"].startswith("judge_budget_exceeded: ") and "X-RVPO-Budget-S) of 2 s" in rr["error"]
            assert res["reasons"][f"rubric/{j:02d}"] == rr["error"]
        else:  # the siblings keep the verdicts the grader gave
            assert rr["criteria_met"] is rule_verdict(r["criterion"], COMPLETION), rr
    assert res["n_errors"] == 1 and set(res["reasons"]) == {f"rubric/{HUNG_SLOT:02d}"}
    # the backend attempts were cut to the budget: 0.8 s + 0.5 s backoff + the rest of 2 s, not 1 + 3 retries
    assert 1 <= requests_with(fake.url, f"Suggests ibuprofen {tag}") < 4


def test_a_larger_header_is_clamped_and_no_header_gets_the_default_budget(judge):
    for header, granted, how in (("100", MAX_BUDGET_S, "clamped"), (None, DEFAULT_BUDGET_S, "default budget")):
        body, _ = judge_item()
        resp, elapsed = post(judge.url + "/v1/judge", {"items": [body]}, header)
        assert resp.status_code == 200, resp.text
        assert float(resp.headers[BUDGET_HEADER]) == granted
        assert elapsed < granted + SLACK_S, (header, elapsed)  # (not 6.7 s: 1 + 3 retries, then judge_timeout)
        error = resp.json()["items"][0]["rubric_results"][HUNG_SLOT]["error"]
        assert error.startswith("judge_budget_exceeded: ") and how in error and f"of {granted:g} s" in error


@pytest.mark.parametrize("header", ["0", "-5", "0.001"])
def test_a_budget_of_zero_gives_every_criterion_a_null_with_its_reason_at_once(fake, judge, header):
    body, tag = judge_item(hang_slot=None)
    before = null_verdict_counts(judge.url)
    resp, elapsed = post(judge.url + "/v1/judge", {"items": [body]}, header)
    assert resp.status_code == 200, resp.text
    assert elapsed < SLACK_S
    [res] = resp.json()["items"]
    assert [rr["criteria_met"] for rr in res["rubric_results"]] == [None] * len(CRITERIA)
    assert all(res["reasons"][f"rubric/{j:02d}"].startswith("judge_budget_exceeded: ") for j in range(len(CRITERIA)))
    assert res["score"] is None and res["reasons"]["score"].startswith("all_null")
    if header != "0.001":  # nothing was even asked
        assert requests_with(fake.url, tag) == 0
    # the operator sees it on /metrics: one more null verdict of class judge_budget_exceeded per criterion
    after = null_verdict_counts(judge.url)
    assert after.get("judge_budget_exceeded", 0) - before.get("judge_budget_exceeded", 0) == len(CRITERIA)
    assert {k: v - before.get(k, 0) for k, v in after.items() if k != "judge_budget_exceeded"} == \
        {k: 0 for k in after if k != "judge_budget_exceeded"}


@pytest.mark.parametrize("header", ["nan", "inf", "soon", ""])
def test_a_budget_that_is_not_a_number_is_a_422_naming_the_header(judge, header):
    body, _ = judge_item(hang_slot=None)
    resp, _ = post(judge.url + "/v1/judge", {"items": [body]}, header)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["header", BUDGET_HEADER]


def test_re_asks_after_unparseable_answers_stop_at_the_budget(fake, judge):
    """Every answer is prose (no verdict): 1 + 3 re-asks x 0.15 s would end with a parse error after 0.6 s; a
    0.5 s budget ends the re-asks first."""
    body, tag = judge_item(hang_slot=0, marker="[[fake:prose]]")
    resp, elapsed = post(judge.url + "/v1/judge", {"items": [body]}, "0.5")
    assert resp.status_code == 200 and elapsed < 0.5 + SLACK_S
    rr = resp.json()["items"][0]["rubric_results"][0]
    assert rr["criteria_met"] is None and rr["error"].startswith("judge_budget_exceeded: "), rr
    assert rr["raw"] == "The response meets the criterion."  # the last answer is kept
    assert 1 <= requests_with(fake.url, f"Advises drinking water {tag}") < 4


# ------------------------------------------------------------------------------------------------ rules
def test_the_rules_service_honours_its_budget(logs):
    triangle = {"name": "area", "description": "", "parameters": {
        "type": "dict", "properties": {"base": {"type": "integer"}}, "required": ["base"]}}
    items = [{"id": f"r{i}", "completion": "[area(base=10)]", "tools": [triangle],
              "ground_truth": [{"area": {"base": [10]}}]} for i in range(3)]
    with uvicorn_server("services.rules.app:app", logs, env={"RVPO_API_TOKEN": "", "RVPO_RULES_BUDGET_S": "7",
                                                             "RVPO_RULES_MAX_BUDGET_S": "9"}) as rules:
        url = rules.url + "/v1/rules/score"
        resp, _ = post(url, {"items": items}, "5")
        assert resp.status_code == 200 and resp.headers[BUDGET_HEADER] == "5"
        assert [o["channels"]["rules/arg_values"] for o in resp.json()["items"]] == [1.0, 1.0, 1.0]
        assert post(url, {"items": items}, None)[0].headers[BUDGET_HEADER] == "7"
        assert post(url, {"items": items}, "60")[0].headers[BUDGET_HEADER] == "9"
        resp, elapsed = post(url, {"items": items}, "0")
        assert resp.status_code == 200 and elapsed < SLACK_S
        for out in resp.json()["items"]:
            assert out["error_type"] == "rules:budget_exceeded" and not out["valid"]
            assert all(v is None for v in out["channels"].values())
            assert all(r.startswith("rules_budget_exceeded: ") for r in out["reasons"].values())
        resp, _ = post(url, {"items": items}, "later")
        assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["header", BUDGET_HEADER]


# ------------------------------------------------------------------------------------------------ the worker
@pytest.fixture()
def worker_tasks(monkeypatch, judge, redis_url):
    """The task body in this process against the real judge: 3 s per judge call, a 1 s margin."""
    from services.common.jobs import JobStore
    from services.worker import tasks

    settings = WorkerSettings(key_prefix=unique("t-budget"), judge_service_url=judge.url,
                              worker_judge_timeout_s=3.0, worker_rules_timeout_s=3.0, worker_budget_margin_s=1.0,
                              task_soft_time_limit_s=10, task_time_limit_s=12)
    monkeypatch.setattr(tasks, "SETTINGS", settings)
    monkeypatch.setattr(tasks, "_clients", {})

    def run(item: dict, deadline_s: float) -> tuple[dict, float]:
        async def create() -> None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(REDIS_URL)
            await JobStore(client, settings.key_prefix, 60).create("job1", [item], deadline_s)
            await client.aclose()

        asyncio.run(create())
        t0 = time.monotonic()
        tasks.score.run("job1", 0, "judge")
        raw = redis.Redis.from_url(REDIS_URL).hget(f"{settings.key_prefix}:job:job1:res", "0:judge")
        return json.loads(raw), time.monotonic() - t0

    yield run
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{settings.key_prefix}:*"))
    if keys:
        r.delete(*keys)


def sent_budget(reason: str) -> float:
    """The budget the judge was given, as its reason states it."""
    return float(re.search(r"X-RVPO-Budget-S\) of ([0-9.]+) s", reason).group(1))


@pytest.mark.parametrize("deadline_s, expected", [(60.0, 3.0 - 1.0), (2.5, 2.5 - 1.0)])
def test_the_worker_sends_the_smaller_of_its_call_timeout_and_the_deadline_less_the_margin(worker_tasks,
                                                                                           deadline_s, expected):
    item, _ = judge_item()
    record, elapsed = worker_tasks(item, deadline_s)
    assert record["ok"] is True and elapsed < deadline_s
    hung = f"rubric/{HUNG_SLOT:02d}"
    assert record["channels"][hung] is None
    assert expected - 0.15 <= sent_budget(record["reasons"][hung]) <= expected
    for j, r in enumerate(item["rubrics"]):
        if j != HUNG_SLOT:
            want = r["points"] if rule_verdict(r["criterion"], COMPLETION) else 0.0
            assert record["channels"][f"rubric/{j:02d}"] == want


def test_the_worker_stops_waiting_half_a_margin_after_the_budget_it_sent(worker_tasks, judge):
    """A judge that does not answer at all (SIGSTOPped: it accepts the connection, then nothing): the worker's
    backstop ends the call at 3 - 1 / 2 = 2.5 s with a reason, the job's deadline still ahead."""
    item, _ = judge_item(hang_slot=None)
    os.kill(judge.popen.pid, signal.SIGSTOP)
    try:
        record, elapsed = worker_tasks(item, 60.0)
    finally:
        os.kill(judge.popen.pid, signal.SIGCONT)
    assert 2.5 - 0.1 <= elapsed < 2.5 + SLACK_S
    assert record["ok"] is False
    reason = record["reasons"]["rubric/00"]
    assert reason.startswith("judge_timeout: ") and "within 2.5 s (budget sent 2 s" in reason


# ------------------------------------------------------------------------------------------------ settings
def test_budgets_must_nest():
    with pytest.raises(ValueError, match="RVPO_JUDGE_TIMEOUT_S <= RVPO_JUDGE_BUDGET_S <= RVPO_JUDGE_MAX_BUDGET_S"):
        JudgeSettings(judge_timeout_s=200)
    with pytest.raises(ValueError, match="RVPO_JUDGE_TIMEOUT_S <= RVPO_JUDGE_BUDGET_S <= RVPO_JUDGE_MAX_BUDGET_S"):
        JudgeSettings(judge_budget_s=700)
    with pytest.raises(ValueError, match="RVPO_WORKER_BUDGET_MARGIN_S"):
        WorkerSettings(worker_budget_margin_s=30)
    with pytest.raises(ValueError, match="RVPO_WORKER_BUDGET_MARGIN_S"):
        WorkerSettings(worker_rules_timeout_s=1.5, worker_budget_margin_s=2)


def test_the_defaults_nest():
    """job deadline > hard > soft limit > the worker's judge call > the budget it sends > one judge attempt; a
    direct call's default budget fits under the worker's call too."""
    from services.gateway.settings import GatewaySettings

    w, j, r = WorkerSettings(), JudgeSettings(), RulesSettings()
    assert GatewaySettings().job_deadline_s > w.task_time_limit_s > w.task_soft_time_limit_s > w.worker_judge_timeout_s
    assert w.worker_judge_timeout_s - w.worker_budget_margin_s > j.judge_timeout_s
    assert j.judge_budget_s < w.worker_judge_timeout_s - w.worker_budget_margin_s
    assert r.rules_budget_s < w.worker_rules_timeout_s - w.worker_budget_margin_s


# ------------------------------------------------------------------------------------------------ local model
def test_the_local_backend_keeps_the_budget_per_batch(tiny_model_dir):
    from judge import prompt
    from judge.backends.base import GradeJob
    from judge.backends.local_hf import LocalHFBackend

    backend = LocalHFBackend(tiny_model_dir, device="cpu")
    conv = prompt.render_conversation([{"role": "user", "content": "Area of a triangle?"}], "It is 25.",
                                      prompt.new_nonce())
    messages = [prompt.grader_messages(conv, f"States the base {i}", 5, yes_no=True) for i in range(3)]
    past, future = time.monotonic() - 1.0, time.monotonic() + 60.0
    calls = backend.forward_calls
    outs = asyncio.run(backend.grade_batch([GradeJob(m, deadline=past) for m in messages]))
    assert backend.forward_calls == calls  # no pass at all for a batch whose deadline has passed
    assert all(o.criteria_met is None and o.error.startswith("judge_budget_exceeded: ") for o in outs)
    mixed = asyncio.run(backend.grade_batch([GradeJob(messages[0], deadline=past), GradeJob(messages[1], deadline=future),
                                             GradeJob(messages[2])]))
    alone = asyncio.run(backend.grade_batch([GradeJob(messages[1]), GradeJob(messages[2])]))
    assert backend.forward_calls == calls + 2  # one pass each for the two live batches
    assert mixed[0].error.startswith("judge_budget_exceeded: ")
    assert [(o.criteria_met, o.explanation) for o in mixed[1:]] == [(o.criteria_met, o.explanation) for o in alone]
