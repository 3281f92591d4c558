"""The scoring gateway: accepts batches, fans them out over Celery, serves job status and dense rewards.

Endpoints (bearer token when ``RVPO_API_TOKEN`` is set; probes and metrics never need it):

- ``POST /v1/score?wait=S`` — store the job in Redis, publish one task per item per source; 202 with the job
  (200 when it reached a terminal status within ``S`` seconds).
- ``GET /v1/jobs/{job_id}?wait=S&detail=false`` — status and per-item reward vectors; 404 for an unknown job.
- ``GET /v1/jobs/{job_id}/rewards?wait=S&rubric_slots=K&rules=false`` — the dense ``[N, K]`` matrix.
- ``GET /livez``, ``GET /readyz`` (Redis reachable), ``GET /metrics``, ``/docs`` (OpenAPI).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager

import anyio
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Response
from prometheus_client import Counter, Histogram

from services.common.http import install_common, redis_ready, require_token, too_many_items
from services.gateway.schemas import DenseRewards, JobView, ScoreRequest
from services.gateway.settings import GatewaySettings
from services.gateway.store import TERMINAL, JobStore
from services.gateway.views import dense, item_results

settings = GatewaySettings()

JOBS = Counter("rvpo_gateway_jobs_total", "Jobs submitted to the gateway")
ITEMS = Counter("rvpo_gateway_items_total", "Items submitted to the gateway")
TASKS = Counter("rvpo_gateway_tasks_total", "Celery tasks published", ["source"])
ENQUEUE_S = Histogram("rvpo_gateway_enqueue_seconds", "Time to store a job and publish its tasks")


def _publish(job_id: str, plan: list[dict]) -> None:
    """Publish one ``rvpo.score`` task per (item, source) (blocking; run in a thread).

    One broker connection, and kombu's publish batch: the LPUSHes go to Redis in pipelines, not one round trip
    per task. Task ids are deterministic (``<job>:<index>:<source>``).
    """
    from services.worker.celery_app import celery_app
    from services.worker.tasks import TASK_NAME

    with celery_app.producer_or_acquire() as producer, producer.batch(max_size=512):
        for i, p in enumerate(plan):
            for source in p["sources"]:
                celery_app.send_task(TASK_NAME, args=[job_id, i, source], task_id=f"{job_id}:{i}:{source}",
                                     queue=settings.celery_queue, routing_key=settings.celery_queue,
                                     producer=producer)
                TASKS.labels(source).inc()


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
               ready_check=lambda: redis_ready(settings.redis_url))
router = APIRouter(prefix="/v1", dependencies=[Depends(require_token(settings))])

WaitQuery = Query(0.0, ge=0, description="Seconds to wait for a terminal status (capped by RVPO_GATEWAY_MAX_WAIT_S).")


async def _load(job_id: str, wait: float) -> dict:
    """Load a job, polling until it is terminal or ``wait`` seconds passed; 404 when it does not exist.

    Between full loads the poll is one HLEN (results so far); the job is read again when they are all in,
    at its deadline, or when ``wait`` is over.
    """
    store: JobStore = app.state.store
    until = time.monotonic() + min(wait, settings.gateway_max_wait_s)
    job = await store.load(job_id)
    if job is None:
        raise HTTPException(404, detail=f"unknown job {job_id!r} (never submitted, or expired)")
    pause = 0.01
    while job["status"] not in TERMINAL:
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


def _view(job: dict, detail: bool) -> dict:
    return {"job_id": job["job_id"], "status": job["status"], "created_at": job["created_at"],
            "deadline": job["deadline"], "n_items": len(job["plan"]), "n_expected": job["n_expected"],
            "n_results": len(job["results"]), "items": item_results(job, detail)}


@router.post("/score", response_model=JobView, status_code=202,
             responses={200: {"model": JobView, "description": "finished within ?wait"},
                        413: {"description": "too many items or body too large"}})
async def score(req: ScoreRequest, response: Response, wait: float = WaitQuery, detail: bool = False,
                deadline_s: float | None = Query(None, gt=0, description="This job's deadline in seconds "
                                                 "(at most RVPO_JOB_DEADLINE_S, the default).")) -> dict:
    """Submit a batch; each item is scored by the judge (rubrics) and/or the rules service (tools)."""
    if len(req.items) > settings.gateway_max_items:
        raise too_many_items(len(req.items), settings.gateway_max_items)
    job_id = uuid.uuid4().hex
    items = [it.model_dump(exclude_none=True) for it in req.items]
    with ENQUEUE_S.time():
        job = await app.state.store.create(job_id, items, min(deadline_s or settings.job_deadline_s,
                                                               settings.job_deadline_s))
        try:
            await anyio.to_thread.run_sync(_publish, job_id, job["plan"])
        except Exception as exc:  # noqa: BLE001 - broker down: the client must know the job will not run
            await app.state.redis.delete(*app.state.store.keys(job_id).all())
            raise HTTPException(503, detail=f"could not queue the job: {type(exc).__name__}: {exc}") from exc
    JOBS.inc()
    ITEMS.inc(len(items))
    loaded = await _load(job_id, wait)
    if loaded["status"] in TERMINAL:
        response.status_code = 200
    return _view(loaded, detail)


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, wait: float = WaitQuery, detail: bool = False) -> dict:
    """Status and per-item reward vectors (``detail=true`` adds the judge's per-criterion verdicts)."""
    return _view(await _load(job_id, wait), detail)


@router.get("/jobs/{job_id}/rewards", response_model=DenseRewards)
async def get_rewards(job_id: str, wait: float = WaitQuery,
                      rubric_slots: int = Query(0, ge=0, le=1024, description="At least this many rubric slots."),
                      rules: bool = Query(False, description="Always include the rule channels.")) -> dict:
    """The rewards as an ``[N, K]`` matrix: rubric slots up to the batch maximum (NaN padded), rule channels."""
    return dense(await _load(job_id, wait), rubric_slots, rules)


app.include_router(router)
