"""End-to-end scoring throughput: REST -> Celery -> judge -> LLM backend. Prints one JSON object.

Starts the fake OpenAI-compatible LLM (tests/fake_llm.py) with a fixed latency L and concurrency C - its
capacity is C / L rubric criteria per second - a real judge, rules service, gateway and a prefork Celery worker,
all on loopback with a private Redis key prefix, then scores the HealthBench sample (each record's physician
ideal + reference completions) as gateway jobs and reports:

- ``pipeline``: criteria per second from the first POST /v1/score to the last job done (cold judge cache), and
  that rate as a fraction of the backend's capacity;
- ``naive``: one grader call at a time straight to the backend (what a simple loop over criteria does);
- ``second_pass``: the same jobs again (every verdict now comes from the judge's Redis cache).

``cpu_seconds`` per process group shows where the time goes: with a fast backend the pipeline is CPU-bound
(one HTTP request to the judge per item per task, by design), so on a shared 2-core machine the numbers drop
with the load of other processes (``load_average`` is printed with the result).

Targets (issue 5): pipeline >= 0.8 x capacity, >= 20 x naive, second pass >= 10 x faster than the first.
Usage: ``python benchmarks/pipeline.py [--latency-ms 500] [--concurrency 32] [--worker-concurrency 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.harness import (  # noqa: E402
    FAKE_LLM_APP, REDIS_URL, free_port, grader_bodies, naive, start_process, unique, uvicorn_args, wait_http)

WORKER = [sys.executable, "-m", "celery", "-A", "services.worker.celery_app:celery_app", "worker",
          "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"]


def workload(max_items: int | None) -> list[dict]:
    """Every HealthBench sample record with physician completions x (ideal + references)."""
    from rvpo.demo_data import healthbench_graded_items

    return healthbench_graded_items(max_items)


async def run_jobs(gateway: str, items: list[dict], job_size: int) -> tuple[float, list[str]]:
    """Submit every job at once, wait for all; returns (seconds from first POST to last done, statuses)."""
    chunks = [items[i:i + job_size] for i in range(0, len(items), job_size)]
    async with httpx.AsyncClient(base_url=gateway, timeout=600) as client:
        async def one(chunk):
            r = await client.post("/v1/score", json={"items": chunk})
            r.raise_for_status()
            job_id = r.json()["job_id"]
            while True:
                job = (await client.get(f"/v1/jobs/{job_id}", params={"wait": 60})).json()
                if job["status"] not in ("queued", "running"):
                    return job

        t0 = time.perf_counter()
        jobs = await asyncio.gather(*(one(c) for c in chunks))
        elapsed = time.perf_counter() - t0
    for job in jobs:
        bad = [it["reasons"] for it in job["items"] if any(v is None for v in it["channels"].values())]
        assert not bad, bad[:2]
    return elapsed, [j["status"] for j in jobs]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by every live process of process group ``pgid`` (Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency-ms", type=float, default=500.0)
    ap.add_argument("--concurrency", type=int, default=32, help="backend slots (capacity = C / latency)")
    ap.add_argument("--worker-concurrency", type=int, default=8, help="prefork processes of the Celery worker")
    ap.add_argument("--judge-workers", type=int, default=3,
                    help="uvicorn worker processes of the judge (docker-compose.yml runs 3 judge replicas)")
    ap.add_argument("--pool", default="prefork", choices=["prefork", "threads"], help="Celery worker pool")
    ap.add_argument("--job-size", type=int, default=64, help="items per gateway job (all jobs submitted at once)")
    ap.add_argument("--max-items", type=int, default=None)
    ap.add_argument("--naive-calls", type=int, default=20)
    a = ap.parse_args()

    items = workload(a.max_items)
    n_criteria = sum(len(it["rubrics"]) for it in items)
    capacity = a.concurrency / (a.latency_ms / 1000.0)
    logs = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    env = {"RVPO_REDIS_URL": REDIS_URL, "RVPO_KEY_PREFIX": unique("bench-pipe"), "RVPO_CELERY_QUEUE": unique("q"),
           "RVPO_JUDGE_CACHE_PREFIX": unique("bench-pipe-jc"), "RVPO_API_TOKEN": "", "RVPO_JOB_DEADLINE_S": "600",
           "RVPO_JUDGE_CONCURRENCY": str(a.concurrency), "RVPO_JUDGE_MODEL": "fake-judge",
           "RVPO_WORKER_CONCURRENCY": str(a.worker_concurrency)}
    procs, urls = {}, {}

    def app(name: str, module: str, extra: dict | None = None, workers: int = 1) -> None:
        port = free_port()
        args = uvicorn_args(module, "127.0.0.1", port) + (["--workers", str(workers)] if workers > 1 else [])
        procs[name] = start_process(args, logs / f"{name}.log", {**env, **(extra or {})})
        urls[name] = f"http://127.0.0.1:{port}"

    try:
        app("fake", FAKE_LLM_APP, {"FAKE_LLM_LATENCY_MS": str(a.latency_ms),
                                   "FAKE_LLM_CONCURRENCY": str(a.concurrency)})
        app("rules", "services.rules.app:app")
        app("judge", "judge.app:app", {"RVPO_JUDGE_BASE_URL": f"{urls['fake']}/v1"}, workers=a.judge_workers)
        env.update(RVPO_JUDGE_SERVICE_URL=urls["judge"], RVPO_RULES_SERVICE_URL=urls["rules"])
        app("gateway", "services.gateway.app:app")
        procs["worker"] = start_process(WORKER + ["--pool", a.pool], logs / "worker.log", env)
        for name in urls:
            wait_http(urls[name] + "/livez", procs[name], 120)
        warm = [dict(items[0], id="warm", rubrics=items[0]["rubrics"][:1])]  # fork + connect the worker processes
        asyncio.run(run_jobs(urls["gateway"], warm, 1))
        httpx.post(urls["fake"] + "/stats/reset")

        cpu0 = {n: group_cpu_seconds(p.pid) for n, p in procs.items()}
        t_first, statuses_first = asyncio.run(run_jobs(urls["gateway"], items, a.job_size))
        cpu1 = {n: group_cpu_seconds(p.pid) for n, p in procs.items()}
        stats_first = httpx.get(urls["fake"] + "/stats").json()
        t_second, statuses_second = asyncio.run(run_jobs(urls["gateway"], items, a.job_size))
        cpu2 = {n: group_cpu_seconds(p.pid) for n, p in procs.items()}
        stats_second = httpx.get(urls["fake"] + "/stats").json()
        t_naive = naive(urls["fake"], grader_bodies(items, a.naive_calls))
    finally:
        for p in reversed(list(procs.values())):
            p.stop()
        r = redis.Redis.from_url(REDIS_URL)
        for pattern in (f"{env['RVPO_KEY_PREFIX']}:*", f"{env['RVPO_JUDGE_CACHE_PREFIX']}:*"):
            keys = list(r.scan_iter(match=pattern, count=1000))
            if keys:
                r.delete(*keys)

    rate = n_criteria / t_first
    naive_rate = a.naive_calls / t_naive
    print(json.dumps({
        "benchmark": "pipeline (REST -> Celery -> judge -> fake LLM)",
        "load_average_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "items": len(items), "criteria": n_criteria, "jobs": len(statuses_first), "job_size": a.job_size,
        "backend": {"latency_ms": a.latency_ms, "concurrency": a.concurrency, "capacity_criteria_per_s": capacity},
        "worker": {"pool": a.pool, "concurrency": a.worker_concurrency}, "judge_workers": a.judge_workers,
        "pipeline": {"seconds": round(t_first, 3), "criteria_per_s": round(rate, 2),
                     "fraction_of_capacity": round(rate / capacity, 3), "statuses": sorted(set(statuses_first)),
                     "backend_requests": stats_first["requests"], "backend_max_inflight": stats_first["max_inflight"],
                     "cpu_seconds": {n: round(cpu1[n] - cpu0[n], 2) for n in cpu0}},
        "naive": {"calls": a.naive_calls, "seconds": round(t_naive, 3), "criteria_per_s": round(naive_rate, 2),
                  "pipeline_speedup": round(rate / naive_rate, 1)},
        "second_pass": {"seconds": round(t_second, 3), "criteria_per_s": round(n_criteria / t_second, 2),
                        "speedup_vs_first": round(t_first / t_second, 1), "statuses": sorted(set(statuses_second)),
                        "backend_requests": stats_second["requests"] - stats_first["requests"],
                        "cpu_seconds": {n: round(cpu2[n] - cpu1[n], 2) for n in cpu0}},
        "targets": {"fraction_of_capacity": ">= 0.8", "pipeline_speedup": ">= 20", "speedup_vs_first": ">= 10"},
        "met": {"capacity": rate / capacity >= 0.8, "naive": rate / naive_rate >= 20,
                "cache": t_first / t_second >= 10},
    }, indent=2))


if __name__ == "__main__":
    main()
