"""The Celery task: score one item with one reward source (judge or rules) over HTTP, write the result once.

One task per item per source (never per rubric criterion, no chords), published by the gateway by name
(``rvpo.score``, services/common/jobs.py). The task

1. claims its (item, source) (services/common/jobs.py ``JobTasks.claim``: one Lua script): returns at once if
   the result already exists (a re-delivered task changes nothing) or the job expired; otherwise counts the
   attempt and loads the item and the job deadline;
2. calls the service within ``W = min(RVPO_WORKER_JUDGE_TIMEOUT_S | RVPO_WORKER_RULES_TIMEOUT_S, time to
   deadline)``: it sends the service the budget ``W - RVPO_WORKER_BUDGET_MARGIN_S`` (header ``X-RVPO-Budget-S``;
   the judge then nulls only the criteria it cannot grade in time, keeping the others) and stops waiting at
   ``W - margin / 2``; it retries only what services/common/httpclient.py ``SERVICE_CALL`` retries (connection
   failures, 502/503/504), each retry with the budget left, forwarding ``RVPO_API_TOKEN``;
3. writes the result record (contracts.results) with HSETNX under ``<index>:<source>``. Any failure — timeout,
   HTTP error, bad answer, soft time limit, deadline passed, or any other exception — becomes null channels
   with a reason, written at once: never an exception that leaves the job waiting for its deadline.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

import httpx
import redis
from celery.exceptions import SoftTimeLimitExceeded

from contracts.channels import JUDGE, RULES, source_channels
from contracts.results import null_result, result_record
from services.common.budget import BUDGET_HEADER
from services.common.httpclient import SERVICE_CALL, make_client
from services.common.jobs import TASK_NAME, Claim, JobTasks, result_field
from services.worker.celery_app import celery_app

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)
SETTINGS = celery_app.rvpo_settings

_clients: dict[str, Any] = {}


def _client(kind: str):
    """Per-process job access / httpx client (created lazily after the prefork fork)."""
    key = f"{kind}:{os.getpid()}:{SETTINGS.key_prefix}"
    if key not in _clients:
        if kind == "jobs":
            r = redis.Redis.from_url(SETTINGS.redis_url, socket_timeout=10, socket_connect_timeout=5)
            _clients[key] = JobTasks(r, SETTINGS.key_prefix)
        else:
            _clients[key] = make_client(token=SETTINGS.api_token)
    return _clients[key]


class ServiceError(Exception):
    """A reward service call failed; ``reason`` is the wire reason (``<prefix>: details``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _post(url: str, payload: dict, window_s: float, source: str) -> dict:
    """POST with bounded retries inside ``window_s`` seconds; returns the first response item or raises
    ServiceError.

    Every attempt sends the service its budget, the window's time left minus ``RVPO_WORKER_BUDGET_MARGIN_S``
    (header ``X-RVPO-Budget-S``), and waits for the answer until half the margin is left (the backstop, for a
    service that does not keep its budget)."""
    start = time.monotonic()
    client = _client("http")
    margin = SETTINGS.worker_budget_margin_s

    def once() -> httpx.Response:
        budget = window_s - (time.monotonic() - start) - margin
        if budget <= 0:
            raise httpx.ReadTimeout("no time left before the deadline")
        wait = budget + margin / 2
        return client.post(url, json=payload, headers={BUDGET_HEADER: f"{budget:.3f}"},
                           timeout=httpx.Timeout(wait, connect=min(wait, 5.0)))

    policy = SERVICE_CALL.with_(attempts=SETTINGS.worker_http_max_retries + 1, within_s=window_s - margin)
    try:
        resp = policy.call(once)
    except httpx.TimeoutException as exc:
        raise ServiceError(f"{source}_timeout: no answer from {url} within {window_s - margin / 2:.3g} s "
                           f"(budget sent {window_s - margin:.3g} s; {type(exc).__name__})")
    except httpx.HTTPStatusError as exc:
        raise ServiceError(f"{source}_http_{exc.response.status_code}: {exc.response.text[:300]}")
    except httpx.HTTPError as exc:
        raise ServiceError(f"{source}_unreachable: {url}: {type(exc).__name__}: {exc}")
    try:
        items = resp.json()["items"]
        if len(items) != 1:
            raise ValueError(f"expected 1 item, got {len(items)}")
        return items[0]
    except (ValueError, KeyError, TypeError) as exc:
        raise ServiceError(f"{source}_bad_response: {type(exc).__name__}: {exc}")


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    content = completion.get("content") or ""
    calls = completion.get("tool_calls") or []
    return content + ("\n" + json.dumps(calls) if calls else "")


def _prompt_messages(prompt: Any) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _channels_from(answer: dict, names: list[str], source: str) -> tuple[dict, dict]:
    """Copy the service's channels for ``names``; a channel it left out is NaN with a reason."""
    got, got_reasons = answer.get("channels") or {}, answer.get("reasons") or {}
    channels, reasons = {}, {}
    for name in names:
        value = got.get(name)
        channels[name] = float(value) if value is not None else None
        if value is None:
            reasons[name] = got_reasons.get(name) or f"{source}_missing_channel: service returned no {name}"
        elif name in got_reasons:
            reasons[name] = got_reasons[name]
    return channels, reasons


def call_judge(item: dict, window_s: float) -> dict:
    """Grade one item's rubric with the judge service (``POST /v1/judge``); returns the result record."""
    payload = {"items": [{"id": item["id"], "prompt": _prompt_messages(item["prompt"]),
                          "completion": _completion_text(item["completion"]), "rubrics": item["rubrics"]}]}
    answer = _post(SETTINGS.judge_service_url.rstrip("/") + "/v1/judge", payload, window_s, JUDGE)
    channels, reasons = _channels_from(answer, source_channels(JUDGE, len(item["rubrics"])), JUDGE)
    rubric_results = [{k: v for k, v in r.items() if k != "raw"} for r in answer.get("rubric_results") or []]
    detail = {"score": answer.get("score"), "n_errors": answer.get("n_errors"), "rubric_results": rubric_results}
    return result_record(JUDGE, channels, reasons, detail)


def call_rules(item: dict, window_s: float) -> dict:
    """Check one item's tool calls with the rules service (``POST /v1/rules/score``); returns the result record."""
    body = {k: item[k] for k in ("id", "completion", "tools", "ground_truth", "mode", "format", "options")
            if item.get(k) is not None}
    answer = _post(SETTINGS.rules_service_url.rstrip("/") + "/v1/rules/score", {"items": [body]}, window_s, RULES)
    channels, reasons = _channels_from(answer, source_channels(RULES, 0), RULES)
    detail = {k: answer.get(k) for k in ("valid", "error_type", "error", "format", "calls")}
    return result_record(RULES, channels, reasons, detail)


def _score(claim: Claim, source: str) -> dict:
    """The result record for a claimed task: the service's answer, or null channels with the reason it failed."""
    n_rubrics = len(claim.item.get("rubrics") or [])
    limit = SETTINGS.worker_judge_timeout_s if source == JUDGE else SETTINGS.worker_rules_timeout_s
    left = claim.deadline - time.time()
    try:
        if left <= 0:
            raise ServiceError(f"deadline_exceeded: task started after the job deadline of {claim.deadline_s:g} s")
        if left <= SETTINGS.worker_budget_margin_s:
            raise ServiceError(f"deadline_exceeded: task started {left:.3g} s before the job deadline of "
                               f"{claim.deadline_s:g} s, within RVPO_WORKER_BUDGET_MARGIN_S")
        return (call_judge if source == JUDGE else call_rules)(claim.item, min(limit, left))
    except ServiceError as exc:
        return null_result(source, n_rubrics, exc.reason)
    except SoftTimeLimitExceeded:
        return null_result(source, n_rubrics, "worker_timeout: task exceeded the soft time limit of "
                                              f"{SETTINGS.task_soft_time_limit_s:g} s")
    except Exception as exc:  # noqa: BLE001 - anything else is this task's failure, with a reason, now
        log.exception("task for %s failed", source)
        return null_result(source, n_rubrics, f"worker_error: {type(exc).__name__}: {str(exc)[:300]}")


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def score(self, job_id: str, index: int, source: str) -> dict:
    """Score item ``index`` of job ``job_id`` with ``source`` ("judge" | "rules") and store the result once.

    Returns ``{"field", "written", "ok"}`` (``written`` False when another delivery got there first). Never
    raises once the task is claimed: a failure becomes null channels with a reason.
    """
    jobs: JobTasks = _client("jobs")
    field = result_field(index, source)
    claim = jobs.claim(job_id, index, source)
    if isinstance(claim, str):
        return {"field": field, "written": False, "ok": None, "skipped": claim}
    started = time.monotonic()
    result = _score(claim, source)
    run = {"worker": f"{socket.gethostname()}:{os.getpid()}", "attempt": claim.attempt,
           "elapsed_s": round(time.monotonic() - started, 4), "finished_at": time.time()}
    try:
        written = jobs.write(job_id, index, source, {**result, **run}, claim.expires_at)
    except (ValueError, TypeError) as exc:  # an answer JSON cannot hold: its reason is written instead
        result = null_result(source, len(claim.item.get("rubrics") or []),
                             f"worker_error: unstorable {source} answer: {type(exc).__name__}: {str(exc)[:200]}")
        written = jobs.write(job_id, index, source, {**result, **run}, claim.expires_at)
    log.info("job %s item %d %s: ok=%s written=%s attempt=%s", job_id, index, source, result["ok"], written,
             claim.attempt)
    return {"field": field, "written": written, "ok": result["ok"]}
