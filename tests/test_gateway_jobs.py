"""Job semantics with the real stack: a retried submission yields one job (Idempotency-Key), and the job status
and source states tell all scored / some unscored / none scored apart, with the reasons counted.

Expected values: by hand from the inputs — a call that matches its ground truth scores every rule channel; an
item without ground truth has the five ground-truth channels null with ``no_ground_truth`` (docs/contracts.md);
the fake LLM answers a criterion carrying ``[[fake:400]]`` with HTTP 400, which the judge does not retry
(docs/judge.md), so that verdict is null.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest

from services.gateway.client import GatewayClient
from tests.gateway_fixtures import running_stack

DOC = {"name": "area", "parameters": {"type": "dict", "required": ["b"], "properties": {"b": {"type": "integer"}}}}
SCORED = {"id": "a", "prompt": "Area for b=1?", "completion": "[area(b=1)]", "tools": [DOC],
          "ground_truth": [{"area": {"b": [1]}}]}
NO_GT = {"id": "b", "prompt": "Area for b=1?", "completion": "[area(b=1)]", "tools": [DOC]}
PROMPT = [{"role": "user", "content": "I have a fever."}]
COMPLETION = "Drink water and rest."


def hb(item_id: str, *criteria: str) -> dict:
    return {"id": item_id, "prompt": PROMPT, "completion": COMPLETION,
            "rubrics": [{"criterion": c, "points": 5} for c in criteria]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url):
    with running_stack(tmp_path_factory.mktemp("jobs-logs"), gateway_env={"RVPO_JOB_DEADLINE_S": "60"}) as s:
        yield s


def metric(stack, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", httpx.get(stack.urls["gateway"] + "/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def job_ids(stack) -> set[str]:
    keys = stack.redis().keys(f"{stack.prefix}:job:*:meta")
    return {k.decode().split(":job:")[1].rsplit(":", 1)[0] for k in keys}


class SlowFirstAnswer:
    """A TCP proxy in front of the gateway: the first connection's request goes through at once (the gateway
    stores the job), its answer is held back for ``hold_s`` (the client's read timeout fires meanwhile) and then
    dropped; later connections pass straight through."""

    def __init__(self, upstream: str, hold_s: float):
        self.upstream = httpx.URL(upstream)
        self.hold_s, self.connections = hold_s, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            n, self.connections = self.connections, self.connections + 1
            up = socket.create_connection((self.upstream.host, self.upstream.port))
            threading.Thread(target=self._pipe, args=(conn, up, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, conn, self.hold_s if n == 0 else None), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, hold_s: float | None) -> None:
        try:
            while data := src.recv(65536):
                if hold_s:  # hold the answer, then drop the connection
                    time.sleep(hold_s)
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def close(self) -> None:
        self.server.close()


def test_retried_submit_after_a_read_timeout_yields_one_job(stack):
    proxy = SlowFirstAnswer(stack.urls["gateway"], hold_s=3.0)
    jobs_before, replays_before, ids_before = (metric(stack, "rvpo_gateway_jobs_total"),
                                               metric(stack, "rvpo_gateway_idempotent_replays_total"), job_ids(stack))
    client = GatewayClient(proxy.url, token="", timeout_s=1.0)
    t0 = time.monotonic()
    job = client.submit([SCORED, NO_GT])
    assert 1.0 <= time.monotonic() - t0 < 3.0  # the first answer timed out, the retry got the job
    assert client.requests == 2 and proxy.connections == 2
    assert job_ids(stack) - ids_before == {job["job_id"]}  # one job stored, not two
    assert metric(stack, "rvpo_gateway_jobs_total") - jobs_before == 1
    assert metric(stack, "rvpo_gateway_idempotent_replays_total") - replays_before == 1
    done = client.wait(job["job_id"], timeout_s=30, poll_s=5)
    assert done["status"] == "done" and done["n_results"] == 2
    assert all(s["attempts"] == 1 for it in done["items"] for s in it["sources"].values())  # each task ran once
    client.close()
    proxy.close()


def test_idempotency_key_replays_the_same_body_and_refuses_another(stack):
    gw = stack.urls["gateway"] + "/v1/score"
    key = {"Idempotency-Key": "batch-0001"}
    first = httpx.post(gw, json={"items": [SCORED]}, headers=key, timeout=30)
    again = httpx.post(gw, json={"items": [SCORED]}, headers=key, timeout=30)
    assert first.status_code in (200, 202) and again.status_code in (200, 202)
    assert again.json()["job_id"] == first.json()["job_id"] and again.headers["Idempotent-Replayed"] == "true"
    other = httpx.post(gw, json={"items": [NO_GT]}, headers=key, timeout=30)
    assert other.status_code == 409 and first.json()["job_id"] in other.json()["detail"]
    # without a key (or with a fresh one) every submission is a job of its own
    a = httpx.post(gw, json={"items": [SCORED]}, timeout=30).json()["job_id"]
    b = httpx.post(gw, json={"items": [SCORED]}, timeout=30).json()["job_id"]
    assert len({a, b, first.json()["job_id"]}) == 3


def test_idempotency_key_compares_the_request_not_its_bytes(stack):
    """The same items and deadline as other JSON bytes (key order, whitespace, 5 for the float 5.0, an explicit
    default and null) are the same request: the same job, not a 409 (the digest was of the raw body). Another
    deadline or another completion is another request: 409."""
    gw = stack.urls["gateway"] + "/v1/score"
    key = {"Idempotency-Key": "canon-0001", "Content-Type": "application/json"}
    item = hb("c", "Advises rest")
    compact = json.dumps({"items": [item]}, separators=(",", ":"))
    reordered = {"items": [{"rubrics": [{"points": 5.0, "criterion": "Advises rest", "tags": []}],
                            "completion": COMPLETION, "group_id": None, "mode": "auto", "prompt": PROMPT,
                            "id": "c"}]}
    spaced = json.dumps(reordered, indent=3, sort_keys=False, ensure_ascii=True)
    assert compact.encode() != spaced.encode()
    first = httpx.post(gw, content=compact, headers=key, params={"deadline_s": 30}, timeout=30)
    assert first.status_code in (200, 202), first.text
    again = httpx.post(gw, content=spaced, headers=key, params={"deadline_s": 30.0}, timeout=30)
    assert again.status_code in (200, 202), again.text
    assert again.json()["job_id"] == first.json()["job_id"] and again.headers["Idempotent-Replayed"] == "true"
    for params, body in (({"deadline_s": 20}, compact),
                         ({"deadline_s": 30}, compact.replace(COMPLETION, "Take ibuprofen."))):
        other = httpx.post(gw, content=body, headers=key, params=params, timeout=30)
        assert other.status_code == 409 and first.json()["job_id"] in other.json()["detail"], other.text


def score(stack, items: list[dict]) -> dict:
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", params={"wait": 30}, json={"items": items}, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_all_scored_is_done_and_not_applicable_channels_do_not_count_against_it(stack):
    job = score(stack, [SCORED, NO_GT])
    assert job["status"] == "done"
    # 9 rule channels of the scored call; without ground truth 4 schema channels scored, 5 not applicable
    assert job["counts"] == {"scored": 13, "unscored": 0, "not_applicable": 5, "pending": 0}
    assert job["reasons"] == {"no_ground_truth": 5}
    assert [it["sources"]["rules"]["state"] for it in job["items"]] == ["ok", "ok"]


def test_some_unscored_is_partial_with_the_source_partial(stack):
    job = score(stack, [SCORED, hb("c", "Rest or water", "Advises rest [[fake:400]]")])
    assert job["status"] == "partial"
    judge = job["items"][1]["sources"]["judge"]
    assert judge["state"] == "partial" and judge["error"].startswith("1 of 2 channels unscored: judge_http_error")
    assert job["counts"] == {"scored": 9 + 1, "unscored": 1, "not_applicable": 0, "pending": 0}
    assert job["reasons"] == {"judge_http_error": 1}
    # "water", the criterion's longest word, is in the completion: met, 5 points
    assert job["items"][1]["channels"] == {"rubric/00": 5.0, "rubric/01": None}


def test_none_scored_is_failed_and_the_source_is_not_ok(stack):
    """Every criterion's grader call fails: the judge answered (HTTP 200) but with no verdict at all, so its
    source is `error` and the job `failed`, never `done`."""
    job = score(stack, [hb("d", "Advises water [[fake:400]]", "Advises rest [[fake:400]]"),
                        hb("e", "Mentions fever [[fake:400]]")])
    assert job["status"] == "failed"
    assert [it["sources"]["judge"]["state"] for it in job["items"]] == ["error", "error"]
    assert job["counts"] == {"scored": 0, "unscored": 3, "not_applicable": 0, "pending": 0}
    assert job["reasons"] == {"judge_http_error": 3}
    dense = httpx.get(f"{stack.urls['gateway']}/v1/jobs/{job['job_id']}/rewards").json()
    assert dense["status"] == "failed" and all(v is None for row in dense["rewards"] for v in row)
