"""The Celery task: score one item with one reward source (judge or rules) over HTTP, write the result once.

One task per item per source (never per rubric criterion, no chords). The task

1. returns at once if its result field already exists (a re-delivered task changes nothing); otherwise counts
   the attempt and loads the item and the job deadline (one Lua script; returns if the job expired);
3. calls the service with a timeout of ``min(RVPO_WORKER_JUDGE_TIMEOUT_S | RVPO_WORKER_RULES_TIMEOUT_S, time to deadline)``,
   retrying (tenacity) only connection failures and 502/503/504, forwarding ``RVPO_API_TOKEN``;
4. writes the channels with HSETNX under ``<index>:<source>``; any failure (timeout, HTTP error, bad answer,
   soft time limit, deadline passed) becomes NaN (``None``) channels with a reason, never an exception
   that would be retried forever.
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
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from services.gateway.store import CLAIM_LUA, JobKeys, null_result, result_field
from services.worker.celery_app import celery_app
from services.worker.channels import JUDGE, RULES, source_channels

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)
SETTINGS = celery_app.rvpo_settings
TASK_NAME = "rvpo.score"

_clients: dict[str, Any] = {}


def _client(kind: str):
    """Per-process Redis / httpx clients (created lazily after the prefork fork)."""
    key = f"{kind}:{os.getpid()}"
    if key not in _clients:
        if kind == "redis":
            _clients[key] = redis.Redis.from_url(SETTINGS.redis_url, socket_timeout=10, socket_connect_timeout=5)
        else:
            headers = {"Authorization": f"Bearer {SETTINGS.api_token}"} if SETTINGS.api_token else {}
            _clients[key] = httpx.Client(headers=headers, limits=httpx.Limits(max_keepalive_connections=4))
    return _clients[key]


def _claim_script(r):
    key = f"claim:{os.getpid()}"
    if key not in _clients:
        _clients[key] = r.register_script(CLAIM_LUA)
    return _clients[key]


class ServiceError(Exception):
    """A reward service call failed; ``reason`` is the wire reason (``<prefix>: details``)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError)):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (502, 503, 504)


def _post(url: str, payload: dict, timeout_s: float, source: str) -> dict:
    """POST with bounded retries inside ``timeout_s``; returns the first response item or raises ServiceError."""
    start = time.monotonic()
    client = _client("http")

    def once() -> httpx.Response:
        left = timeout_s - (time.monotonic() - start)
        if left <= 0:
            raise httpx.ReadTimeout("no time left before the deadline")
        resp = client.post(url, json=payload, timeout=httpx.Timeout(left, connect=min(left, 5.0)))
        resp.raise_for_status()
        return resp

    try:
        resp = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(SETTINGS.worker_http_max_retries + 1) | stop_after_delay(timeout_s),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )(once)
    except httpx.TimeoutException as exc:
        raise ServiceError(f"{source}_timeout: no answer from {url} within {timeout_s:.3g} s ({type(exc).__name__})")
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


def call_judge(item: dict, timeout_s: float) -> dict:
    """Grade one item's rubric with the judge service (``POST /v1/judge``); returns the result record."""
    payload = {"items": [{"id": item["id"], "prompt": _prompt_messages(item["prompt"]),
                          "completion": _completion_text(item["completion"]), "rubrics": item["rubrics"]}]}
    answer = _post(SETTINGS.judge_service_url.rstrip("/") + "/v1/judge", payload, timeout_s, JUDGE)
    channels, reasons = _channels_from(answer, source_channels(JUDGE, len(item["rubrics"])), JUDGE)
    rubric_results = [{k: v for k, v in r.items() if k != "raw"} for r in answer.get("rubric_results") or []]
    detail = {"score": answer.get("score"), "n_errors": answer.get("n_errors"), "rubric_results": rubric_results}
    return {"ok": True, "source": JUDGE, "channels": channels, "reasons": reasons, "detail": detail, "error": None}


def call_rules(item: dict, timeout_s: float) -> dict:
    """Check one item's tool calls with the rules service (``POST /v1/rules/score``); returns the result record."""
    body = {k: item[k] for k in ("id", "completion", "tools", "ground_truth", "mode", "format", "options")
            if item.get(k) is not None}
    answer = _post(SETTINGS.rules_service_url.rstrip("/") + "/v1/rules/score", {"items": [body]}, timeout_s, RULES)
    channels, reasons = _channels_from(answer, source_channels(RULES, 0), RULES)
    detail = {k: answer.get(k) for k in ("valid", "error_type", "error", "format", "calls")}
    return {"ok": True, "source": RULES, "channels": channels, "reasons": reasons, "detail": detail, "error": None}


@celery_app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def score(self, job_id: str, index: int, source: str) -> dict:
    """Score item ``index`` of job ``job_id`` with ``source`` ("judge" | "rules") and store the result once.

    Returns ``{"field", "written", "ok"}`` (``written`` False when another delivery got there first).
    Never raises for service failures: they become NaN channels with reasons.
    """
    r = _client("redis")
    k = JobKeys.of(SETTINGS.key_prefix, job_id)
    field = result_field(index, source)
    claim = _claim_script(r)(keys=[k.res, k.attempts, k.items, k.meta], args=[field, index])
    if claim is None:
        return {"field": field, "written": False, "ok": None, "skipped": "already scored"}
    if not claim:
        return {"field": field, "written": False, "ok": None, "skipped": "job not found (expired?)"}
    attempt, raw_item, deadline, deadline_s, expires_at = claim
    item = json.loads(raw_item)
    n_rubrics = len(item.get("rubrics") or [])
    started = time.monotonic()
    limit = SETTINGS.worker_judge_timeout_s if source == JUDGE else SETTINGS.worker_rules_timeout_s
    left = float(deadline) - time.time()
    try:
        if left <= 0:
            raise ServiceError(f"deadline_exceeded: task started after the job deadline of {float(deadline_s):g} s")
        result = (call_judge if source == JUDGE else call_rules)(item, min(limit, left))
    except ServiceError as exc:
        result = null_result(source, n_rubrics, exc.reason)
    except SoftTimeLimitExceeded:
        result = null_result(source, n_rubrics,
                             f"worker_timeout: task exceeded the soft time limit of {SETTINGS.task_soft_time_limit_s:g} s")
    result.update(worker=f"{socket.gethostname()}:{os.getpid()}", attempt=int(attempt),
                  elapsed_s=round(time.monotonic() - started, 4), finished_at=time.time())
    pipe = r.pipeline(transaction=False)
    pipe.hsetnx(k.res, field, json.dumps(result))
    pipe.expireat(k.res, int(expires_at))
    written = bool(pipe.execute()[0])
    log.info("job %s item %d %s: ok=%s written=%s attempt=%s", job_id, index, source, result["ok"], written, attempt)
    return {"field": field, "written": written, "ok": result["ok"]}
