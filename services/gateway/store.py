"""The job store in Redis: one job = its items, its deadline and one result per (item, source).

Key layout (``P`` = ``RVPO_KEY_PREFIX``; every key expires at ``expires_at`` = submission + ``RVPO_JOB_TTL_S``)::

    P:job:<id>:meta      hash  created_at, deadline, deadline_s, expires_at, plan (JSON), final (terminal status)
    P:job:<id>:items     hash  <index> -> item JSON (what the worker sends to the judge / rules service)
    P:job:<id>:res       hash  <index>:<source> -> result JSON, written with HSETNX (first write wins)
    P:job:<id>:attempts  hash  <index>:<source> -> number of times a worker started that task

Results are written once under deterministic fields, so a re-delivered task, a late task after the deadline and
the gateway's own deadline fill-in can race freely: whichever HSETNX lands first is the answer, forever.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from services.worker.channels import JUDGE, RULES, source_channels

TERMINAL = ("done", "partial", "failed")


@dataclass(frozen=True)
class JobKeys:
    """Redis keys of one job."""

    meta: str
    items: str
    res: str
    attempts: str

    @classmethod
    def of(cls, prefix: str, job_id: str) -> "JobKeys":
        base = f"{prefix}:job:{job_id}"
        return cls(meta=f"{base}:meta", items=f"{base}:items", res=f"{base}:res", attempts=f"{base}:attempts")

    def all(self) -> tuple[str, ...]:
        return (self.meta, self.items, self.res, self.attempts)


def result_field(index: int, source: str) -> str:
    """Deterministic hash field of the result of item ``index`` from ``source``."""
    return f"{index}:{source}"


def item_sources(item: dict[str, Any]) -> list[str]:
    """Reward sources an item needs: the judge when it has rubrics, the rules service when it has tools."""
    sources = []
    if item.get("rubrics"):
        sources.append(JUDGE)
    if item.get("tools") is not None:
        sources.append(RULES)
    return sources


def null_result(source: str, n_rubrics: int, reason: str, **extra: Any) -> dict[str, Any]:
    """A result in which every channel of ``source`` is NaN (``None``) with ``reason``; ``ok`` is False."""
    names = source_channels(source, n_rubrics)
    return {"ok": False, "source": source, "channels": {n: None for n in names},
            "reasons": {n: reason for n in names}, "detail": None, "error": reason, **extra}


#: Worker side, one round trip: unless the result field exists, count the attempt and return
#: ``[attempt, item JSON, deadline, deadline_s, expires_at]``; ``false`` when already scored; ``{}`` when the job
#: is gone (expired). KEYS = res, attempts, items, meta; ARGV = field, index.
CLAIM_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return false end
local item = redis.call('HGET', KEYS[3], ARGV[2])
local meta = redis.call('HMGET', KEYS[4], 'deadline', 'deadline_s', 'expires_at')
if not item or not meta[1] then return {} end
local attempt = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('EXPIREAT', KEYS[2], meta[3])
return {attempt, item, meta[1], meta[2], meta[3]}
"""


def job_status(n_expected: int, results: dict[str, dict], started: bool, expired: bool) -> str:
    """Status of a job from its results (see docs/gateway.md).

    done: every (item, source) result came back from its service; partial: the deadline passed or a service
    failed, and at least one result came back; failed: none came back; running/queued otherwise.
    """
    complete = len(results) >= n_expected
    if complete or expired:
        n_ok = sum(1 for r in results.values() if r.get("ok"))
        if n_ok == n_expected:
            return "done"
        return "partial" if n_ok else "failed"
    return "running" if started or results else "queued"


class JobStore:
    """Async access to jobs in Redis, used by the gateway (the worker writes results with plain redis-py)."""

    def __init__(self, redis, prefix: str, ttl_s: int):
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def keys(self, job_id: str) -> JobKeys:
        return JobKeys.of(self.prefix, job_id)

    async def create(self, job_id: str, items: list[dict[str, Any]], deadline_s: float) -> dict[str, Any]:
        """Store a job's items and plan; returns the plan ``[{id, group_id, n_rubrics, sources}, ...]``."""
        k = self.keys(job_id)
        now = time.time()
        plan = [{"id": it["id"], "group_id": it.get("group_id"), "n_rubrics": len(it.get("rubrics") or []),
                 "sources": item_sources(it)} for it in items]
        meta = {"created_at": now, "deadline": now + deadline_s, "deadline_s": deadline_s,
                "expires_at": int(now + self.ttl_s), "plan": json.dumps(plan)}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(k.meta, mapping=meta)
        pipe.hset(k.items, mapping={str(i): json.dumps(it) for i, it in enumerate(items)})
        for key in (k.meta, k.items):
            pipe.expireat(key, meta["expires_at"])
        await pipe.execute()
        return {**meta, "plan": plan}

    async def load(self, job_id: str) -> dict[str, Any] | None:
        """The job's meta, plan, results and attempt counts, or None when it does not exist (or expired).

        Once the deadline has passed, missing results are filled in with NaN + ``deadline_exceeded`` (HSETNX, so
        a result that lands at the same moment wins or loses atomically) and the status is frozen.
        """
        k = self.keys(job_id)
        meta, res, attempts = await self._read(k)
        if not meta:
            return None
        plan = json.loads(meta["plan"])
        deadline = float(meta["deadline"])
        expected = [(i, s) for i, p in enumerate(plan) for s in p["sources"]]
        if meta.get("final") is None:
            expired = time.time() >= deadline
            if expired and len(res) < len(expected):
                await self._fill_missing(k, plan, expected, res, float(meta["deadline_s"]), int(meta["expires_at"]))
                meta, res, attempts = await self._read(k)
            status = job_status(len(expected), res, bool(attempts), expired)
            if status in TERMINAL:
                await self.redis.hsetnx(k.meta, "final", status)
                meta["final"] = (await self.redis.hget(k.meta, "final")).decode()
        status = meta.get("final") or job_status(len(expected), res, bool(attempts), False)
        return {"job_id": job_id, "status": status, "created_at": float(meta["created_at"]), "deadline": deadline,
                "plan": plan, "results": res, "attempts": attempts, "n_expected": len(expected)}

    async def n_results(self, job_id: str) -> int:
        """How many (item, source) results are in (one cheap HLEN, for polling)."""
        return int(await self.redis.hlen(self.keys(job_id).res))

    async def _read(self, k: JobKeys) -> tuple[dict[str, str], dict[str, dict], dict[str, int]]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.meta)
        pipe.hgetall(k.res)
        pipe.hgetall(k.attempts)
        meta_raw, res_raw, att_raw = await pipe.execute()
        meta = {a.decode(): b.decode() for a, b in meta_raw.items()}
        res = {a.decode(): json.loads(b) for a, b in res_raw.items()}
        attempts = {a.decode(): int(b) for a, b in att_raw.items()}
        return meta, res, attempts

    async def _fill_missing(self, k: JobKeys, plan: list[dict], expected: list[tuple[int, str]],
                            res: dict[str, dict], deadline_s: float, expires_at: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for i, source in expected:
            field = result_field(i, source)
            if field not in res:
                reason = f"deadline_exceeded: no {source} result within the job deadline of {deadline_s:g} s"
                pipe.hsetnx(k.res, field, json.dumps(null_result(source, plan[i]["n_rubrics"], reason,
                                                                 worker="gateway")))
        pipe.expireat(k.res, expires_at)
        await pipe.execute()
