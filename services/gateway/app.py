"""The scoring gateway: accepts batches, fans them out over Celery, serves job status and dense rewards.

Endpoints (bearer token when ``RVPO_API_TOKEN`` is set; probes and metrics never need it):

- ``POST /v1/score?wait=S`` (header ``Idempotency-Key``) — validate the items (contracts.gateway.ScoreItem:
  whatever a service would reject is a 422 naming the field), store the job in Redis
  (services/common/jobs.py), publish one task per item per source (services/gateway/publish.py); 202 with the
  job (200 when it reached a final status within ``S`` seconds). The same key with the same request within the
  job's TTL answers the same job again (header ``Idempotent-Replayed: true``), never a second one; the same key
  with other items or another deadline is a 409. "Same" compares the validated items and the deadline, not the
  bytes: key order, whitespace or ``1`` for ``1.0`` in a float field do not make another request.
- ``GET /v1/jobs/{job_id}?wait=S&detail=false`` — status and per-item reward vectors; 404 for an unknown job.
- ``GET /v1/jobs/{job_id}/rewards?wait=S&rubric_slots=K&rules=false`` — the dense ``[N, K]`` matrix.
- ``GET /livez``, ``GET /readyz`` (Redis reachable), ``GET /metrics``, ``/docs`` (OpenAPI).

While Redis (job store and broker) is unreachable, every endpoint that needs it answers 503 with
``Retry-After: 5`` (seconds); nothing is half-stored (a job whose tasks could not be queued is
deleted again).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

import anyio
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Response
from prometheus_client import Counter, Histogram

from contracts.gateway import DenseRewards, JobView, ScoreRequest
from contracts.results import FINAL_STATUSES
from services.common.http import (ERROR_RESPONSES, RETRY_AFTER, install_common, redis_ready, require_token,
                                  too_many_items)
from services.common.jobs import IdempotencyConflict, JobStore, request_digest
from services.gateway.publish import Publisher
from services.gateway.settings import GatewaySettings
from services.gateway.views import dense, job_view

settings = GatewaySettings()
publisher = Publisher(settings)

JOBS = Counter("rvpo_gateway_jobs_total", "Jobs submitted to the gateway")
ITEMS = Counter("rvpo_gateway_items_total", "Items submitted to the gateway")
REPLAYS = Counter("rvpo_gateway_idempotent_replays_total", "Submissions answered with an earlier job (same key)")
ENQUEUE_S = Histogram("rvpo_gateway_enqueue_seconds", "Time to store a job and publish its tasks")


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    app.state.store = JobStore(app.state.redis, settings.key_prefix, settings.job_ttl_s)
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = FastAPI(title="rvpo scoring gateway", version="0.1.0", lifespan=lifespan,
              description="REST -> Celery -> judge / rules services; rewards per item and as an [N, K] matrix.")
install_common(app, max_body_bytes=settings.gateway_max_body_bytes,
               ready_check=lambda: redis_ready(settings.redis_url), api_token=settings.api_token)
UNAVAILABLE = {503: {"description": "Redis (job store and broker) unreachable: retry after `Retry-After` seconds"}}
router = APIRouter(prefix="/v1", dependencies=[Depends(require_token(settings))],
                   responses={**{k: v for k, v in ERROR_RESPONSES.items() if k != 413}, **UNAVAILABLE})

WaitQuery = Query(0.0, ge=0, description="Seconds to wait for a final status (capped by RVPO_GATEWAY_MAX_WAIT_S).")
NOT_FOUND = {404: {"description": "unknown job (never submitted, or expired)"}}


async def _load(job_id: str, wait: float) -> dict:
    """Load a job, polling until it is final or ``wait`` seconds passed; 404 when it does not exist.

    Between full loads the poll is one HLEN (results so far); the job is read again when they are all in,
    at its deadline, or when ``wait`` is over.
    """
    store: JobStore = app.state.store
    until = time.monotonic() + min(wait, settings.gateway_max_wait_s)
    job = await store.load(job_id)
    if job is None:
        raise HTTPException(404, detail=f"unknown job {job_id!r} (never submitted, or expired)")
    pause = 0.01
    while job["status"] not in FINAL_STATUSES:
        left = until - time.monotonic()
        if left <= 0:
            break
        to_deadline = job["deadline"] - time.time()
        await asyncio.sleep(max(0.0, min(pause, left, to_deadline + 0.01)))
        pause = min(pause * 1.5, 0.1)
        if (await store.n_results(job_id) >= job["n_expected"] or time.time() >= job["deadline"]
                or time.monotonic() >= until):
            job = await store.load(job_id)
            if job is None:
                raise HTTPException(404, detail=f"job {job_id!r} expired")
    return job


@router.post("/score", response_model=JobView, status_code=202,
             responses={200: {"model": JobView, "description": "final within ?wait"},
                        409: {"description": "Idempotency-Key already used with other items or another deadline"},
                        413: ERROR_RESPONSES[413], 503: {"description": "the job could not be queued"}})
async def score(req: ScoreRequest, response: Response, wait: float = WaitQuery,
                detail: bool = False,
                deadline_s: float | None = Query(None, gt=0, description="This job's deadline in seconds "
                                                 "(at most RVPO_JOB_DEADLINE_S, the default)."),
                idempotency_key: str | None = Header(
                    None, min_length=1, max_length=256,
                    description="Makes a retried submission safe: the same key and request within the job TTL "
                                "answer the same job (compared as validated items + deadline, not bytes); the same "
                                "key with other items or another deadline is a 409.")) -> dict:
    """Submit a batch; each item is scored by the judge (rubrics) and/or the rules service (tools)."""
    if len(req.items) > settings.gateway_max_items:
        raise too_many_items(len(req.items), settings.gateway_max_items)
    store: JobStore = app.state.store
    items = [it.model_dump(exclude_none=True) for it in req.items]
    deadline = min(deadline_s or settings.job_deadline_s, settings.job_deadline_s)
    # the validated items and the deadline, not the raw bytes: the same request re-serialised is the same job
    idempotency = None if idempotency_key is None else (idempotency_key, request_digest(items, deadline))
    with ENQUEUE_S.time():
        try:
            job, created = await store.create(uuid.uuid4().hex, items, deadline, idempotency)
        except IdempotencyConflict as exc:
            raise HTTPException(409, detail=f"Idempotency-Key already used for job {exc.job_id} with different "
                                            "items or deadline; send a new key for a new batch") from exc
        if created:
            try:
                await anyio.to_thread.run_sync(publisher.publish, job["job_id"], job["plan"])
            except Exception as exc:  # noqa: BLE001 - broker down: the client must know the job will not run
                await store.discard(job["job_id"], idempotency_key)
                raise HTTPException(503, detail=f"could not queue the job: {type(exc).__name__}: {exc}",
                                    headers=RETRY_AFTER) from exc
    if created:
        JOBS.inc()
        ITEMS.inc(len(items))
    else:
        REPLAYS.inc()
        response.headers["Idempotent-Replayed"] = "true"
    loaded = await _load(job["job_id"], wait)
    if loaded["status"] in FINAL_STATUSES:
        response.status_code = 200
    return job_view(loaded, detail)


@router.get("/jobs/{job_id}", response_model=JobView, responses=NOT_FOUND)
async def get_job(job_id: str, wait: float = WaitQuery, detail: bool = False) -> dict:
    """Status and per-item reward vectors (``detail=true`` adds the judge's per-criterion verdicts)."""
    return job_view(await _load(job_id, wait), detail)


@router.get("/jobs/{job_id}/rewards", response_model=DenseRewards, responses=NOT_FOUND)
async def get_rewards(job_id: str, wait: float = WaitQuery,
                      rubric_slots: int = Query(0, ge=0, le=1024, description="At least this many rubric slots."),
                      rules: bool = Query(False, description="Always include the rule channels.")) -> dict:
    """The rewards as an ``[N, K]`` matrix: rubric slots up to the batch maximum (NaN padded), rule channels."""
    return dense(await _load(job_id, wait), rubric_slots, rules)


app.include_router(router)
