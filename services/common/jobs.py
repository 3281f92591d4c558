"""The job in Redis, for the gateway (async: create, load, deadline fill) and the worker (sync: claim, write).

A job = its items, its deadline and one result record per (item, source) (contracts.results). Key layout
(``P`` = ``RVPO_KEY_PREFIX``; every key expires at ``expires_at`` = submission + ``RVPO_JOB_TTL_S``)::

    P:job:<id>:meta      hash    created_at, deadline, deadline_s, expires_at, plan (JSON), final (final status)
    P:job:<id>:items     hash    <index> -> item JSON (what the worker sends to the judge / rules service)
    P:job:<id>:res       hash    <index>:<source> -> result record JSON, written with HSETNX (first write wins)
    P:job:<id>:attempts  hash    <index>:<source> -> number of times a worker started that task
    P:idem:<sha256(key)> string  <request_digest(items, deadline)>:<job id> for a submission's ``Idempotency-Key``

Results are written once under deterministic fields, so a re-delivered task, a late task after the deadline and
the gateway's own deadline fill-in can race freely: whichever HSETNX lands first is the answer, forever.

The gateway publishes one Celery task per (item, source) by name, :data:`TASK_NAME`, with arguments
``[job_id, index, source]``; Celery's own keys carry :func:`celery_key_prefix`. Neither side imports the other.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from contracts.channels import JUDGE, RULES
from contracts.results import FINAL_STATUSES, job_status, null_result

#: Name of the Celery task that scores one (item, source); arguments ``[job_id, index, source]``.
TASK_NAME = "rvpo.score"


def celery_key_prefix(key_prefix: str) -> str:
    """Prefix of every Celery / kombu key (``global_keyprefix``) for ``RVPO_KEY_PREFIX`` = ``key_prefix``."""
    return f"{key_prefix}:celery:"


def task_id(job_id: str, index: int, source: str) -> str:
    """Deterministic Celery task id of one (item, source) of a job."""
    return f"{job_id}:{index}:{source}"


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


def make_plan(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per item: ``{id, group_id, n_rubrics, sources}`` (what the views need without reading the items)."""
    return [{"id": it["id"], "group_id": it.get("group_id"), "n_rubrics": len(it.get("rubrics") or []),
             "sources": item_sources(it)} for it in items]


def request_digest(items: list[dict[str, Any]], deadline_s: float) -> str:
    """Digest of what a submission asks for: its validated items (``ScoreItem.model_dump(exclude_none=True)``)
    and the job's deadline. Canonical JSON (sorted keys, no whitespace), so the same request sent as other bytes
    (key order, spacing, ``1`` for a float field's ``1.0``, an explicit default or null, an ignored extra key)
    replays the same job; the same key with other items or another deadline is a conflict."""
    canon = json.dumps({"items": items, "deadline_s": float(deadline_s)}, sort_keys=True, separators=(",", ":"),
                       ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canon.encode("utf-8", "surrogatepass")).hexdigest()


class IdempotencyConflict(Exception):
    """An ``Idempotency-Key`` already used for a different body (the gateway answers 409)."""

    def __init__(self, job_id: str):
        super().__init__(job_id)
        self.job_id = job_id


# -- worker side (redis-py, sync) -------------------------------------------------------------------------------

#: One round trip: unless the result field exists, count the attempt and return
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

ALREADY_SCORED = "already scored"
JOB_GONE = "job not found (expired?)"


@dataclass(frozen=True)
class Claim:
    """A task's claim on one (item, source): which attempt this is, the item and the job's clock."""

    attempt: int
    item: dict[str, Any]
    deadline: float
    deadline_s: float
    expires_at: int


class JobTasks:
    """The worker's access to jobs: claim a task, write its result once (redis-py client ``redis``)."""

    def __init__(self, redis, prefix: str):
        self.redis, self.prefix = redis, prefix
        self._claim = redis.register_script(CLAIM_LUA)

    def claim(self, job_id: str, index: int, source: str) -> Claim | str:
        """The :class:`Claim`, or why there is nothing to do (:data:`ALREADY_SCORED`, :data:`JOB_GONE`)."""
        k = JobKeys.of(self.prefix, job_id)
        out = self._claim(keys=[k.res, k.attempts, k.items, k.meta], args=[result_field(index, source), index])
        if out is None:
            return ALREADY_SCORED
        if not out:
            return JOB_GONE
        attempt, raw_item, deadline, deadline_s, expires_at = out
        return Claim(int(attempt), json.loads(raw_item), float(deadline), float(deadline_s), int(expires_at))

    def write(self, job_id: str, index: int, source: str, record: dict[str, Any], expires_at: int) -> bool:
        """Store ``record`` unless a result is already there (HSETNX); True when this write won."""
        k = JobKeys.of(self.prefix, job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(k.res, result_field(index, source), json.dumps(record, allow_nan=False))
        pipe.expireat(k.res, expires_at)
        return bool(pipe.execute()[0])


# -- gateway side (redis.asyncio) -----------------------------------------------------------------------------
class JobStore:
    """The gateway's access to jobs: create (idempotent), load (with the deadline fill), count results."""

    def __init__(self, redis, prefix: str, ttl_s: int):
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def keys(self, job_id: str) -> JobKeys:
        return JobKeys.of(self.prefix, job_id)

    def idempotency_key(self, key: str) -> str:
        return f"{self.prefix}:idem:{hashlib.sha256(key.encode()).hexdigest()}"

    async def _replay(self, idem_key: str, digest: str) -> str | None:
        """The job id stored under ``idem_key`` when it was made from the same body; raises IdempotencyConflict
        for another body; None when the key is unused."""
        existing = await self.redis.get(idem_key)
        if existing is None:
            return None
        their_digest, job_id = existing.decode().split(":", 1)
        if their_digest != digest:
            raise IdempotencyConflict(job_id)
        return job_id

    async def create(self, job_id: str, items: list[dict[str, Any]], deadline_s: float,
                     idempotency: tuple[str, str] | None = None) -> tuple[dict[str, Any], bool]:
        """Store a job's items and plan; returns ``(job, created)``.

        ``idempotency`` = (client key, body digest): when the key was used before with the same body, nothing is
        stored and the earlier job is returned with ``created`` False (``job`` holds only its ``job_id``).
        Raises IdempotencyConflict when the key was used with another body.
        """
        idem_key = digest = None
        if idempotency is not None:
            idem_key, digest = self.idempotency_key(idempotency[0]), idempotency[1]
            earlier = await self._replay(idem_key, digest)
            if earlier is not None:
                return {"job_id": earlier}, False
        k = self.keys(job_id)
        now = time.time()
        plan = make_plan(items)
        meta = {"created_at": now, "deadline": now + deadline_s, "deadline_s": deadline_s,
                "expires_at": int(now + self.ttl_s), "plan": json.dumps(plan)}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(k.meta, mapping=meta)
        pipe.hset(k.items, mapping={str(i): json.dumps(it, allow_nan=False) for i, it in enumerate(items)})
        for key in (k.meta, k.items):
            pipe.expireat(key, meta["expires_at"])
        await pipe.execute()
        if idem_key is not None:
            for _ in range(2):  # a second try only when the other key expired between SET and GET
                if await self.redis.set(idem_key, f"{digest}:{job_id}", nx=True, exat=meta["expires_at"]):
                    break
                try:  # a concurrent submission with this key won
                    earlier = await self._replay(idem_key, digest)
                except IdempotencyConflict:
                    await self.redis.delete(*k.all())
                    raise
                if earlier is not None:
                    await self.redis.delete(*k.all())
                    return {"job_id": earlier}, False
        return {"job_id": job_id, **meta, "plan": plan}, True

    async def discard(self, job_id: str, idempotency_key: str | None = None) -> None:
        """Remove a job that could not be queued (and its idempotency key, so that a retry queues it afresh)."""
        keys = list(self.keys(job_id).all())
        if idempotency_key is not None:
            idem = self.idempotency_key(idempotency_key)
            held = await self.redis.get(idem)
            if held is not None and held.decode().endswith(f":{job_id}"):
                keys.append(idem)
        await self.redis.delete(*keys)

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
            if status in FINAL_STATUSES:
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
