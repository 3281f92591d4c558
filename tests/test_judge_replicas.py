"""The judge in front of several grader replicas: real uvicorn judge servers, three fake LLM processes
(tests/fake_llm.py), one that is too slow (every answer after the judge's timeout) and one URL where nothing
listens.

Expected verdicts come from the fake's documented rule (keyword of the criterion in the completion, re-implemented
in tests/test_judge_service.py::expected_met). What is checked: no criterion is lost when replicas fail or time
out (failover within the same retry budget), all criteria of one example are answered by one replica, the
per-replica Prometheus counters match what each replica received, the retry budget is shared across replicas,
and the conversation-first layout on the wire."""

from __future__ import annotations

import asyncio
import collections
import re

import httpx
import pytest

from tests.procs import free_port, uvicorn_server
from tests.replicas import fake_replicas
from tests.test_judge_service import calls_with, expected_met, metric, new_tag

TIMEOUT_S = 0.5
RETRIES_B = 2
WORDS = ["water", "rest", "fever", "doctor", "ibuprofen", "sleep", "fluids", "hospital", "dizzy", "nausea"]


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return tmp_path_factory.mktemp("replica-logs")


@pytest.fixture(scope="module")
def live(logs):
    with fake_replicas(3, logs, {"FAKE_LLM_LATENCY_MS": "5"}) as procs:
        yield procs


@pytest.fixture(scope="module")
def slow(logs):
    with fake_replicas(1, logs, {"FAKE_LLM_LATENCY_MS": str(int(TIMEOUT_S * 1000 * 6))}) as procs:
        yield procs[0]


def judge_env(urls: list[str], **extra: str) -> dict[str, str]:
    return {"RVPO_JUDGE_BASE_URLS": ",".join(urls), "RVPO_JUDGE_MODEL": "fake-judge",
            "RVPO_JUDGE_CACHE_ENABLED": "false", "RVPO_JUDGE_BACKOFF_S": "0.01", "RVPO_JUDGE_BACKOFF_MAX_S": "0.05",
            "RVPO_JUDGE_PARSE_RETRIES": "1", "RVPO_API_TOKEN": "", **extra}


@pytest.fixture(scope="module")
def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="module")
def judge_a(live, slow, dead_url, logs):
    """Sticky routing over 3 live replicas, a dead URL and a slow one; 4 attempts per criterion."""
    urls = [p.url + "/v1" for p in live] + [dead_url, slow.url + "/v1"]
    env = judge_env(urls, RVPO_JUDGE_TIMEOUT_S=str(TIMEOUT_S), RVPO_JUDGE_RETRIES="3",
                    RVPO_JUDGE_REPLICA_COOLDOWN_S="60", RVPO_JUDGE_REPLICA_FAILURES="2")
    with uvicorn_server("judge.app:app", logs, env=env) as p:
        yield p


@pytest.fixture(scope="module")
def judge_b(live, logs):
    """Sticky routing over the 3 live replicas, conversation-first prompts, 3 attempts per criterion."""
    env = judge_env([p.url + "/v1" for p in live], RVPO_JUDGE_RETRIES=str(RETRIES_B),
                    RVPO_JUDGE_PROMPT_LAYOUT="conversation_first", RVPO_JUDGE_TIMEOUT_S="20")
    with uvicorn_server("judge.app:app", logs, env=env) as p:
        yield p


def examples(tag: str, n: int, per: int) -> list[dict]:
    """n examples with distinct prompts and completions; criterion j of example i names WORDS[(i + j) % 10]."""
    out = []
    for i in range(n):
        completion = f"Example {tag}-{i}: {WORDS[i % 10]} and {WORDS[(i + 3) % 10]}."
        out.append({"id": f"{tag}-{i}", "prompt": [{"role": "user", "content": f"Question {i} of run {tag}?"}],
                    "completion": completion,
                    "rubrics": [{"criterion": f"Mentions {WORDS[(i + j) % 10]}", "points": 1 + j}
                                for j in range(per)]})
    return out


def grade(url: str, items: list[dict], chunk: int) -> list[dict]:
    async def send():
        async with httpx.AsyncClient(timeout=120) as client:
            resps = await asyncio.gather(*(client.post(url + "/v1/judge", json={"items": items[k:k + chunk]})
                                           for k in range(0, len(items), chunk)))
        for r in resps:
            assert r.status_code == 200, r.text
        return [res for r in resps for res in r.json()["items"]]
    return asyncio.run(send())


def answered_by(fakes, tag: str) -> dict[str, collections.Counter]:
    """completion -> Counter(fake url -> requests carrying it), over the requests that contain ``tag``."""
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for fake in fakes:
        for body in httpx.get(fake.url + "/requests", params={"last": 2000}).json():
            text = body["messages"][-1]["content"]
            if tag in text:
                completion = re.search(r"<<<COMPLETION (\w+)>>>\n(.*)\n<<<END COMPLETION \1>>>", text, re.S)[2]
                seen[completion][fake.url] += 1
    return seen


def test_no_criterion_lost_and_every_example_on_one_replica(live, slow, dead_url, judge_a):
    tag = new_tag()
    items = examples(tag, 40, 4)
    before = {p.url: httpx.get(p.url + "/stats").json()["requests"] for p in live}
    sent0 = {p.url: metric(judge_a.url, "rvpo_judge_replica_requests_total", f'{{replica="{p.url}/v1"}}')
             for p in live}
    results = grade(judge_a.url, items, chunk=8)
    for it, res in zip(items, results):
        assert res["n_errors"] == 0, res["reasons"]  # failed / timed-out replicas: retried elsewhere, never lost
        assert [rr["criteria_met"] for rr in res["rubric_results"]] == [
            expected_met(r["criterion"], it["completion"]) for r in it["rubrics"]]
    # each criterion answered exactly once by a live replica, all of one example by the same one
    seen = answered_by(live, tag)
    assert set(seen) == {it["completion"] for it in items}
    for it in items:
        assert len(seen[it["completion"]]) == 1 and sum(seen[it["completion"]].values()) == 4, seen[it["completion"]]
    per_replica = collections.Counter(url for c in seen.values() for url in c.elements())
    assert len(per_replica) == 3  # the examples spread over every live replica
    # the judge's per-replica counters match what each live replica received
    for p in live:
        got = httpx.get(p.url + "/stats").json()["requests"] - before[p.url]
        sent = metric(judge_a.url, "rvpo_judge_replica_requests_total", f'{{replica="{p.url}/v1"}}') - sent0[p.url]
        assert got == sent == per_replica[p.url]
        assert metric(judge_a.url, "rvpo_judge_replica_inflight", f'{{replica="{p.url}/v1"}}') == 0
    # the dead and the slow replica were tried, failed, and are cooling down
    dead_errors = metric(judge_a.url, "rvpo_judge_replica_errors_total", f'{{reason="transport",replica="{dead_url}"}}')
    slow_errors = metric(judge_a.url, "rvpo_judge_replica_errors_total",
                         f'{{reason="timeout",replica="{slow.url}/v1"}}')
    assert dead_errors >= 2 and slow_errors >= 2
    assert metric(judge_a.url, "rvpo_judge_replica_up", f'{{replica="{dead_url}"}}') == 0
    assert metric(judge_a.url, "rvpo_judge_replica_up", f'{{replica="{slow.url}/v1"}}') == 0
    assert metric(judge_a.url, "rvpo_judge_replica_up", f'{{replica="{live[0].url}/v1"}}') == 1
    assert metric(judge_a.url, "rvpo_judge_routing_decisions_total", '{kind="failover"}') >= 1
    ready = httpx.get(judge_a.url + "/readyz").json()
    assert ready["status"] == "ok" and "(4/5 grader replicas ok" in ready["detail"]
    assert dead_url in ready["detail"]


def test_one_retry_budget_across_replicas_and_the_conversation_first_layout(live, judge_b):
    tag = new_tag()
    item = {"id": "x", "prompt": [{"role": "user", "content": f"My head hurts ({tag}). What should I do?"}],
            "completion": "Drink water and rest.",
            "rubrics": [{"criterion": f"Says water {tag}", "points": 5},
                        {"criterion": f"Recommends surgery {tag}", "points": 3},
                        {"criterion": f"Always fails {tag} [[fake:503]]", "points": 2}]}
    [res] = grade(judge_b.url, [item], chunk=1)
    assert [rr["criteria_met"] for rr in res["rubric_results"]] == [True, False, None]
    assert res["reasons"]["rubric/02"].startswith("judge_http_error: HTTP 503")  # null with a reason, never 0
    assert res["channels"]["rubric/02"] is None and res["score"] == pytest.approx(5 / 8)
    assert all(rr["template_version"] == "hb-grader-v1-cf" for rr in res["rubric_results"])
    # 1 + RETRIES attempts in all, each on a different replica (failover, not 3 attempts per replica)
    per_fake = [calls_with(p.url, f"Always fails {tag}") for p in live]
    assert sorted(per_fake) == [1] * (1 + RETRIES_B)
    # the two good criteria: one replica; the wire: one user message, conversation first, rubric item last
    good = [p for p in live if calls_with(p.url, f"Says water {tag}")]
    assert len(good) == 1 and calls_with(good[0].url, f"Recommends surgery {tag}") == 1
    [body] = [b for b in httpx.get(good[0].url + "/requests", params={"last": 50}).json()
              if f"Says water {tag}" in b["messages"][-1]["content"]]
    assert [m["role"] for m in body["messages"]] == ["user"]
    text = body["messages"][0]["content"]
    assert text.startswith(f"# Conversation\nuser: My head hurts ({tag})")
    assert text.index("<<<END COMPLETION") < text.index("You are a grader") < text.index("# Rubric item")
    assert text.endswith(f"# Rubric item\n[5] Says water {tag}")
