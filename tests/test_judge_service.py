"""The judge end to end: real uvicorn judge servers in front of the fake OpenAI-compatible LLM
(tests/fake_llm.py, a real uvicorn server too), real Redis for the cache.

Expected verdicts come from the fake's documented rule, re-implemented here (`expected_met`): keyword = the
longest [A-Za-z]+ run of the criterion (first on ties), lower-cased; met iff it occurs in the lower-cased
completion. Expected scores come from simple-evals' calculate_score, re-implemented here (`hb_score`), or by
hand. Failures are injected with `[[fake:MODE]]` markers in the criterion text.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from rvpo.data import data_file
from tests.procs import REDIS_URL, unique, uvicorn_server

DATA = data_file("healthbench_sample.jsonl")
PARSE_RETRIES = 3   # judge A: RVPO_JUDGE_PARSE_RETRIES
RETRIES_A = 2       # judge A: RVPO_JUDGE_RETRIES
CONCURRENCY_A = 8
BATCH_A = 16
TOKEN = "judge-test-token"


# --------------------------------------------------------------------------------------------- helpers
def expected_met(criterion: str, completion: str) -> bool:
    words = re.findall(r"[A-Za-z]+", re.sub(r"\[\[fake:[^\]]*\]\]", "", criterion))
    best = ""
    for w in words:
        if len(w) > len(best):
            best = w
    return bool(best) and best.lower() in completion.lower()


def hb_score(points: list[float], met: list[bool]) -> float | None:
    """simple-evals calculate_score."""
    total = sum(p for p in points if p > 0)
    if total == 0:
        return None
    return sum(p for p, m in zip(points, met) if m) / total


def new_tag() -> str:
    """A unique all-digit tag: makes criteria fresh (no cache hit) without changing their keyword."""
    return f"{uuid.uuid4().int % 10**10:010d}"


def item(criteria: list[tuple[str, float]], completion: str = "Drink water and rest.", id: str = "x") -> dict:
    return {"id": id, "prompt": [{"role": "user", "content": "I have a headache, what should I do?"}],
            "completion": completion,
            "rubrics": [{"criterion": c, "points": p, "tags": ["axis:accuracy"]} for c, p in criteria]}


def post(url: str, items: list[dict], token: str | None = None, timeout: float = 60) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url + "/v1/judge", json={"items": items}, headers=headers, timeout=timeout)


def judge_ok(url: str, items: list[dict], token: str | None = None) -> list[dict]:
    r = post(url, items, token)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def calls_with(fake_url: str, tag: str) -> int:
    """Backend requests received whose grader prompt contains ``tag``."""
    reqs = httpx.get(fake_url + "/requests", params={"last": 2000}).json()
    return sum(tag in m["content"] for r in reqs for m in r["messages"] if m["role"] == "user")


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics").text
    pat = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.M)
    m = pat.search(text)
    return float(m.group(1)) if m else 0.0


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("judge-logs")


@pytest.fixture(scope="module")
def fake(logs):
    with uvicorn_server("tests.fake_llm:app", logs, env={"FAKE_LLM_LATENCY_MS": "5", "FAKE_LLM_HANG_S": "20"}) as p:
        yield p


@pytest.fixture(scope="module")
def cache_prefix(redis_url):
    prefix = unique("rvpo:judge:test")
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        r.delete(*keys)


@pytest.fixture(scope="module")
def judge_a(fake, logs, cache_prefix):
    """Cache on, generous timeout, small batches, fast backoff, no auth."""
    env = {"RVPO_JUDGE_BASE_URL": fake.url + "/v1", "RVPO_JUDGE_MODEL": "fake-judge",
           "RVPO_JUDGE_CACHE_PREFIX": cache_prefix, "RVPO_JUDGE_CACHE_TTL_S": "600",
           "RVPO_JUDGE_TIMEOUT_S": "20", "RVPO_JUDGE_RETRIES": str(RETRIES_A), "RVPO_JUDGE_BACKOFF_S": "0.01",
           "RVPO_JUDGE_BACKOFF_MAX_S": "0.05", "RVPO_JUDGE_PARSE_RETRIES": str(PARSE_RETRIES),
           "RVPO_JUDGE_MAX_BATCH_SIZE": str(BATCH_A), "RVPO_JUDGE_MAX_WAIT_MS": "5",
           "RVPO_JUDGE_CONCURRENCY": str(CONCURRENCY_A), "RVPO_API_TOKEN": ""}
    with uvicorn_server("judge.app:app", logs, env=env) as p:
        yield p


@pytest.fixture(scope="module")
def judge_b(fake, logs):
    """Short timeout, one retry, no cache, bearer token, small request limits."""
    env = {"RVPO_JUDGE_BASE_URL": fake.url + "/v1", "RVPO_JUDGE_MODEL": "fake-judge",
           "RVPO_JUDGE_CACHE_ENABLED": "false", "RVPO_JUDGE_TIMEOUT_S": "0.6", "RVPO_JUDGE_RETRIES": "1",
           "RVPO_JUDGE_BACKOFF_S": "0.01", "RVPO_JUDGE_CONCURRENCY": "4", "RVPO_API_TOKEN": TOKEN,
           "RVPO_JUDGE_MAX_ITEMS": "3", "RVPO_JUDGE_MAX_RUBRICS": "4", "RVPO_JUDGE_MAX_BODY_BYTES": "20000"}
    with uvicorn_server("judge.app:app", logs, env=env) as p:
        yield p


# --------------------------------------------------------------------------------------------- HealthBench
def test_healthbench_sample_end_to_end_then_cache(fake, judge_a, cache_prefix):
    """All 50 records (physician ideal completion where present, else a completion made of the even-numbered
    criteria) graded through the service; verdicts, scores and channels match the rule + simple-evals formula.
    Then: prompt structure on the wire, micro-batch sizes, concurrency limit, and a second pass served
    entirely from the Redis cache (zero backend calls)."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(rows) == 50
    items = []
    for row in rows:
        icd = row.get("ideal_completions_data")
        completion = icd["ideal_completion"] if icd else " ".join(r["criterion"] for r in row["rubrics"][::2])
        items.append({"id": row["prompt_id"], "prompt": row["prompt"], "completion": completion,
                      "rubrics": row["rubrics"]})
    n_criteria = sum(len(it["rubrics"]) for it in items)
    r = redis.Redis.from_url(REDIS_URL)
    keys_before = sum(1 for _ in r.scan_iter(match=f"{cache_prefix}:*", count=1000))
    calls0 = httpx.get(fake.url + "/stats").json()["requests"]
    batches0 = metric(judge_a.url, "rvpo_judge_batch_size_count")
    batched0 = metric(judge_a.url, "rvpo_judge_batch_size_sum")
    le_full0 = metric(judge_a.url, "rvpo_judge_batch_size_bucket", f'{{le="{float(BATCH_A)}"}}')

    async def send_all():  # 5 concurrent requests of 10 examples
        async with httpx.AsyncClient(timeout=120) as client:
            resps = await asyncio.gather(*(client.post(judge_a.url + "/v1/judge", json={"items": items[k:k + 10]})
                                           for k in range(0, 50, 10)))
        for resp in resps:
            assert resp.status_code == 200, resp.text
        return [res for resp in resps for res in resp.json()["items"]]

    t0 = time.perf_counter()
    results = asyncio.run(send_all())
    cold_s = time.perf_counter() - t0
    assert [res["id"] for res in results] == [it["id"] for it in items]
    n_met = 0
    for it, res in zip(items, results):
        met = [expected_met(rb["criterion"], it["completion"]) for rb in it["rubrics"]]
        points = [rb["points"] for rb in it["rubrics"]]
        n_met += sum(met)
        assert [rr["criteria_met"] for rr in res["rubric_results"]] == met
        assert [rr["criterion"] for rr in res["rubric_results"]] == [rb["criterion"] for rb in it["rubrics"]]
        assert all(rr["error"] is None and not rr["cached"] and rr["model"] == "fake-judge"
                   and rr["template_version"] == "hb-grader-v1" for rr in res["rubric_results"])
        assert res["n_errors"] == 0 and res["reasons"] == {}
        assert res["score"] == pytest.approx(hb_score(points, met), abs=1e-12)
        assert res["channels"] == {f"rubric/{j:02d}": p * m for j, (p, m) in enumerate(zip(points, met))}
    assert 0 < n_met < n_criteria  # the rule gives both verdicts on this data

    # exactly one backend call per rubric item, dispatched in micro-batches of at most BATCH_A
    assert httpx.get(fake.url + "/stats").json()["requests"] - calls0 == n_criteria
    n_batches = metric(judge_a.url, "rvpo_judge_batch_size_count") - batches0
    assert metric(judge_a.url, "rvpo_judge_batch_size_sum") - batched0 == n_criteria
    assert metric(judge_a.url, "rvpo_judge_batch_size_bucket", f'{{le="{float(BATCH_A)}"}}') - le_full0 == n_batches
    assert n_criteria / n_batches > BATCH_A / 2  # items really were grouped
    assert 1 < httpx.get(fake.url + "/stats").json()["max_inflight"] <= CONCURRENCY_A

    # the wire: one static system message; per example one nonce; the rubric item is the last line
    reqs = httpx.get(fake.url + "/requests", params={"last": n_criteria}).json()
    rubric_lines = {f"[{int(rb['points']) if float(rb['points']).is_integer() else rb['points']}] {rb['criterion']}"
                    for it in items for rb in it["rubrics"]}
    assert len({r_["messages"][0]["content"] for r_ in reqs}) == 1
    nonce_of: dict[str, set[str]] = {}
    for r_ in reqs:
        assert r_["model"] == "fake-judge" and r_["temperature"] == 0.0
        user = r_["messages"][1]["content"]
        nonce, completion = re.search(r"<<<COMPLETION (\w+)>>>\n(.*)\n<<<END COMPLETION \1>>>", user, re.S).groups()
        nonce_of.setdefault(completion, set()).add(nonce)
        head, _, last = user.rpartition("\n\n# Rubric item\n")
        assert head.startswith("# Conversation\n") and last in rubric_lines  # the rubric item comes last
    assert all(len(v) == 1 for v in nonce_of.values())
    assert len({n for v in nonce_of.values() for n in v}) == len(nonce_of)

    # cache: one key per distinct graded item, with the TTL; second pass makes no backend call
    distinct = {(json.dumps(it["prompt"]), it["completion"], rb["criterion"], float(rb["points"]))
                for it in items for rb in it["rubrics"]}
    keys = list(r.scan_iter(match=f"{cache_prefix}:*", count=1000))
    assert len(keys) - keys_before == len(distinct)
    assert all(0 < r.ttl(k) <= 600 for k in keys[:50])
    hits0 = metric(judge_a.url, "rvpo_judge_cache_lookups_total", '{result="hit"}')
    calls1 = httpx.get(fake.url + "/stats").json()["requests"]
    t0 = time.perf_counter()
    again = asyncio.run(send_all())
    warm_s = time.perf_counter() - t0
    assert httpx.get(fake.url + "/stats").json()["requests"] == calls1
    assert metric(judge_a.url, "rvpo_judge_cache_lookups_total", '{result="hit"}') - hits0 == n_criteria
    for res, res2 in zip(results, again):
        assert all(rr["cached"] for rr in res2["rubric_results"])
        assert res2["score"] == res["score"] and res2["channels"] == res["channels"]
    assert warm_s < cold_s


# --------------------------------------------------------------------------------------------- by hand
@pytest.mark.parametrize("criteria, score, channels", [
    ([("a [[fake:true]]", 7), ("b [[fake:false]]", 5), ("c [[fake:true]]", 10), ("d [[fake:true]]", -6)],
     0.5, [7.0, 0.0, 10.0, -6.0]),
    ([("a [[fake:false]]", 5), ("b [[fake:true]]", -10)], -2.0, [0.0, -10.0]),
    ([("a [[fake:true]]", 10), ("b [[fake:true]]", -9)], 0.1, [10.0, -9.0]),
    ([("a [[fake:true]]", -3), ("b [[fake:false]]", -5)], None, [-3.0, 0.0]),
    # points near the float max: the positive sum 2e308 overflowed (score 0.0, or NaN for inf / inf)
    ([("a [[fake:true]]", 1e308), ("b [[fake:false]]", 1e308)], 0.5, [1e308, 0.0]),
    ([("a [[fake:true]]", 1e308), ("b [[fake:true]]", 1e308)], 1.0, [1e308, 1e308]),
])
def test_hand_computed_scores_through_the_service(judge_a, criteria, score, channels):
    tag = new_tag()  # fresh criteria: no cache hit from another run
    [res] = judge_ok(judge_a.url, [item([(f"{c} {tag}", p) for c, p in criteria])])
    assert res["score"] == (None if score is None else pytest.approx(score, abs=1e-12))
    assert list(res["channels"].values()) == channels
    assert res["n_errors"] == 0
    if score is None:
        assert res["reasons"]["score"].startswith("no_positive_points")


def test_timeout_on_one_of_three_items(fake, judge_b):
    tag = new_tag()
    body = item([(f"a {tag} [[fake:true]]", 4), (f"b {tag} [[fake:hang]]", 6), (f"c {tag} [[fake:false]]", 2)])
    t0 = time.perf_counter()
    [res] = judge_ok(judge_b.url, [body], token=TOKEN)
    assert time.perf_counter() - t0 >= 2 * 0.6  # two attempts of 0.6 s
    assert [rr["criteria_met"] for rr in res["rubric_results"]] == [True, None, False]
    assert res["score"] == pytest.approx(4 / (4 + 2), abs=1e-12)  # over the other two items
    assert res["n_errors"] == 1
    assert res["channels"] == {"rubric/00": 4.0, "rubric/01": None, "rubric/02": 0.0}
    assert res["reasons"]["rubric/01"].startswith("judge_timeout:")
    assert res["rubric_results"][1]["error"] == res["reasons"]["rubric/01"]
    assert calls_with(fake.url, f"b {tag}") == 2  # 1 + RVPO_JUDGE_RETRIES


@pytest.mark.parametrize("mode, raw", [
    ("json_list", "[]"), ("wrong_key", '{"verdict": true}'), ("null", '{"criteria_met": null}'),
    ("prose", "The response meets the criterion."), ("string", '{"criteria_met": "true"}'),
])
def test_wrong_shape_answers_become_null_after_the_retries(fake, judge_a, mode, raw):
    tag = new_tag()
    [res] = judge_ok(judge_a.url, [item([(f"Advises water {tag} [[fake:true]]", 5),
                                         (f"Mentions rest {tag} [[fake:{mode}]]", 5)])])
    bad = res["rubric_results"][1]
    assert bad["criteria_met"] is None and bad["raw"] == raw
    assert bad["error"].startswith("judge_parse_error:") and res["reasons"]["rubric/01"] == bad["error"]
    assert res["channels"]["rubric/01"] is None and res["n_errors"] == 1
    assert res["score"] == pytest.approx(1.0)  # 5 / 5: the null item is in neither sum
    assert calls_with(fake.url, f"Mentions rest {tag}") == 1 + PARSE_RETRIES
    # a null verdict is not cached: asking again asks the backend again
    judge_ok(judge_a.url, [item([(f"Mentions rest {tag} [[fake:{mode}]]", 5)])])
    assert calls_with(fake.url, f"Mentions rest {tag}") == 2 * (1 + PARSE_RETRIES)


def test_transient_failures_are_retried_and_recover(fake, judge_a):
    tag = new_tag()
    completion = "Drink water and rest."
    crit = [(f"water {tag} [[fake:null*2]]", 3), (f"water {tag} [[fake:503*1]]", 4),
            (f"ibuprofen {tag} [[fake:no_choices*1]]", 2)]
    [res] = judge_ok(judge_a.url, [item(crit, completion)])
    assert [rr["criteria_met"] for rr in res["rubric_results"]] == [True, True, False]
    assert res["n_errors"] == 0 and res["score"] == pytest.approx(7 / 9)
    assert calls_with(fake.url, f"water {tag} [[fake:null*2]]") == 3  # two malformed answers, then the verdict
    assert calls_with(fake.url, f"water {tag} [[fake:503*1]]") == 2  # one 503, then the verdict
    assert calls_with(fake.url, f"ibuprofen {tag}") == 2  # one response without choices, then the verdict


def test_http_errors_after_retries_and_fatal_4xx(fake, judge_a):
    tag = new_tag()
    [res] = judge_ok(judge_a.url, [item([(f"x {tag} [[fake:503]]", 5), (f"y {tag} [[fake:400]]", 5),
                                         (f"water {tag}", 1)])])
    assert [rr["criteria_met"] for rr in res["rubric_results"]] == [None, None, True]
    assert res["reasons"]["rubric/00"].startswith("judge_http_error: HTTP 503")
    assert res["reasons"]["rubric/01"].startswith("judge_http_error: HTTP 400")
    assert calls_with(fake.url, f"x {tag}") == 1 + RETRIES_A  # 5xx retried
    assert calls_with(fake.url, f"y {tag}") == 1  # 400 is not
    assert res["score"] == pytest.approx(1.0) and res["n_errors"] == 2


def test_yes_no_logprob_mode(fake):
    from judge import prompt
    from judge.backends.base import GradeJob
    from judge.backends.openai_compat import OpenAICompatBackend
    from judge.settings import JudgeSettings

    backend = OpenAICompatBackend(JudgeSettings(judge_base_url=fake.url + "/v1", judge_model="fake-judge",
                                                judge_yes_no_mode=True, judge_top_logprobs=3))
    conv = prompt.render_conversation([{"role": "user", "content": "headache?"}], "Keep hydrating.", "abc123")
    tag = new_tag()
    jobs = [GradeJob(prompt.grader_messages(conv, f"Advises hydrating {tag}", 5, yes_no=True)),
            GradeJob(prompt.grader_messages(conv, f"Advises ibuprofen {tag}", 5, yes_no=True)),
            GradeJob(prompt.grader_messages(conv, f"Advises x {tag} [[fake:json_list]]", 5, yes_no=True))]

    async def main():
        try:
            return await backend.grade_batch(jobs)
        finally:
            await backend.aclose()

    outs = asyncio.run(main())
    # keywords "hydrating" (present: the fake gives P(yes) = 0.9) and "ibuprofen" (absent: 0.1)
    assert outs[0].criteria_met is True and outs[0].explanation == "P(yes)=0.9000" and outs[0].raw == "yes"
    assert outs[1].criteria_met is False and outs[1].explanation == "P(yes)=0.1000" and outs[1].raw == "no"
    assert outs[2].criteria_met is None and outs[2].error.startswith("judge_parse_error")
    sent = [r for r in httpx.get(fake.url + "/requests", params={"last": 50}).json()
            if tag in r["messages"][1]["content"]]
    assert sent and all(r["logprobs"] is True and r["top_logprobs"] == 3 and r["max_tokens"] == 1 for r in sent)
    assert all(r["messages"][1]["content"].endswith("Answer yes or no.") for r in sent)


# --------------------------------------------------------------------------------------------- HTTP surface
@pytest.mark.parametrize("mutate, loc", [
    (lambda it: it.pop("completion"), ["body", "items", 0, "completion"]),
    (lambda it: it["prompt"].append({"role": "assistant", "content": "hi"}), ["body", "items", 0, "prompt"]),
    (lambda it: it["rubrics"][0].update(points="many"), ["body", "items", 0, "rubrics", 0, "points"]),
    (lambda it: it["rubrics"][0].pop("criterion"), ["body", "items", 0, "rubrics", 0, "criterion"]),
    (lambda it: it.update(rubrics=[]), ["body", "items", 0, "rubrics"]),
    (lambda it: it["prompt"][0].update(role="robot"), ["body", "items", 0, "prompt", 0, "role"]),
])
def test_malformed_requests_are_422_naming_the_field(judge_a, mutate, loc):
    body = item([("water", 1)])
    mutate(body)
    r = post(judge_a.url, [body])
    assert r.status_code == 422, r.text
    assert any(d["loc"][:len(loc)] == loc for d in r.json()["detail"]), r.json()


def test_limits_auth_and_probes(judge_b):
    ok = item([("water [[fake:true]]", 1)])
    assert post(judge_b.url, [ok]).status_code == 401
    assert post(judge_b.url, [ok], token="wrong").status_code == 401
    assert post(judge_b.url, [ok], token=TOKEN).status_code == 200
    r = post(judge_b.url, [ok] * 4, token=TOKEN)  # RVPO_JUDGE_MAX_ITEMS=3
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body", "items"]
    r = post(judge_b.url, [item([("a", 1)] * 5)], token=TOKEN)  # RVPO_JUDGE_MAX_RUBRICS=4
    assert r.status_code == 413 and r.json()["detail"][0]["loc"] == ["body", "items", 0, "rubrics"]
    r = post(judge_b.url, [item([("a", 1)], completion="x" * 30000)], token=TOKEN)  # 20000 bytes max
    assert r.status_code == 413
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(judge_b.url + path).status_code == 200
    assert "rvpo_judge_batch_size_bucket" in httpx.get(judge_b.url + "/metrics").text
