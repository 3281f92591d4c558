"""Judge throughput benchmark. Prints one JSON object.

Starts the fake OpenAI-compatible LLM (tests/fake_llm.py) with a fixed latency L and concurrency C - its
capacity is C / L criteria per second - and a real judge server (`uvicorn judge.app:app`) in front of it, then
grades the HealthBench sample (physician ideal + reference completions) and measures criteria per second:

- ``service``: through POST /v1/judge, several clients each sending a few examples per request (cold cache);
- ``direct_asyncio``: an asyncio httpx client calling the fake directly with C requests in flight;
- ``naive``: one call at a time, directly to the fake (what a simple loop over criteria does);
- ``cache``: the same workload a second time through the service (every verdict from Redis).

``backend_occupancy`` = slot-seconds the fake held / (C x wall time): 1.0 means the backend never had a free slot.
On a shared 2-core machine the rates fall short of C / L when the fake server itself is starved of CPU (its
``asyncio.sleep(L)`` overshoots); occupancy and ``x_direct_asyncio`` show whether the service was the limit.

Targets (issue 4): service >= 0.9 x capacity, >= 20 x naive, cache second pass >= 10 x faster.
Usage: ``python benchmarks/judge.py [--latency-ms 500] [--concurrency 32] [--clients 16] [--per-request 4]``
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

from judge.backends.openai_compat import ClientPool  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    FAKE_LLM_APP, REDIS_URL, grader_bodies, naive, unique, uvicorn_server)


def workload(max_examples: int | None) -> list[dict]:
    """Every HealthBench sample record with physician completions x (ideal + references)."""
    from rvpo.demo_data import healthbench_graded_items

    return healthbench_graded_items(max_examples)


async def through_service(url: str, items: list[dict], clients: int, per_request: int) -> float:
    chunks = [items[i:i + per_request] for i in range(0, len(items), per_request)]
    queue: asyncio.Queue = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
        async def worker():
            while not queue.empty():
                chunk = queue.get_nowait()
                r = await client.post(url + "/v1/judge", json={"items": chunk})
                r.raise_for_status()
                for res in r.json()["items"]:
                    assert res["n_errors"] == 0, res["reasons"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - t0


async def direct_asyncio(base: str, bodies: list[dict], concurrency: int) -> float:
    """All calls at once through ``concurrency`` single-connection httpx clients (no service, no batching)."""
    pool = ClientPool(concurrency, lambda: httpx.AsyncClient(base_url=base, timeout=60,
                                                             limits=httpx.Limits(max_connections=1)))

    async def one(b):
        async with pool.client() as client:
            (await client.post("/v1/chat/completions", json=b)).raise_for_status()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    elapsed = time.perf_counter() - t0
    await pool.aclose()
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency-ms", type=float, default=500.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients of the judge")
    ap.add_argument("--per-request", type=int, default=4, help="examples per POST /v1/judge")
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--naive-calls", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    a = ap.parse_args()

    items = workload(a.max_examples)
    n_criteria = sum(len(it["rubrics"]) for it in items)
    capacity = a.concurrency / (a.latency_ms / 1000.0)
    prefix = unique("rvpo:judge:bench")
    logs = Path(tempfile.mkdtemp(prefix="bench-judge-"))
    fake_env = {"FAKE_LLM_LATENCY_MS": str(a.latency_ms), "FAKE_LLM_CONCURRENCY": str(a.concurrency)}
    with uvicorn_server(FAKE_LLM_APP, logs, env=fake_env) as fake:
        judge_env = {
            "RVPO_JUDGE_BASE_URL": fake.url + "/v1", "RVPO_JUDGE_MODEL": "fake-judge",
            "RVPO_JUDGE_CONCURRENCY": str(a.concurrency), "RVPO_JUDGE_MAX_BATCH_SIZE": str(a.batch_size),
            "RVPO_JUDGE_MAX_WAIT_MS": str(a.max_wait_ms), "RVPO_JUDGE_CACHE_PREFIX": prefix,
            "RVPO_JUDGE_CACHE_TTL_S": "900", "RVPO_API_TOKEN": "",
        }
        full_stats = lambda: httpx.get(fake.url + "/stats").json()  # noqa: E731
        stats = lambda: full_stats()["requests"]  # noqa: E731
        try:
            with uvicorn_server("judge.app:app", logs, env=judge_env) as judge:
                st0 = full_stats()
                s0 = st0["requests"]
                c0 = cpu_seconds(judge.pid), cpu_seconds(fake.pid)
                t_cold = asyncio.run(through_service(judge.url, items, a.clients, a.per_request))
                c1 = cpu_seconds(judge.pid), cpu_seconds(fake.pid)
                st1 = full_stats()
                s1 = st1["requests"]
                t_warm = asyncio.run(through_service(judge.url, items, a.clients, a.per_request))
                s2 = stats()
            bodies = grader_bodies(items)
            st2 = full_stats()
            t_direct = asyncio.run(direct_asyncio(fake.url, bodies, a.concurrency))
            st3 = full_stats()
            t_naive = naive(fake.url, bodies[: a.naive_calls])
        finally:
            r = redis.Redis.from_url(REDIS_URL)
            keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                r.delete(*keys[i:i + 500])

    service_rate = n_criteria / t_cold
    naive_rate = a.naive_calls / t_naive
    out = {
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "workload": {"examples": len(items), "criteria": n_criteria, "clients": a.clients,
                     "examples_per_request": a.per_request, "max_batch_size": a.batch_size,
                     "max_wait_ms": a.max_wait_ms},
        "backend": {"latency_ms": a.latency_ms, "concurrency": a.concurrency,
                    "capacity_criteria_per_s": round(capacity, 1)},
        "service": {"seconds": round(t_cold, 3), "criteria_per_s": round(service_rate, 1),
                    "backend_calls": s1 - s0, "x_capacity": round(service_rate / capacity, 3),
                    "x_direct_asyncio": round(t_direct / t_cold, 3),
                    "backend_occupancy": round((st1["busy_s"] - st0["busy_s"]) / (a.concurrency * t_cold), 3),
                    "judge_cpu_ms_per_criterion": round((c1[0] - c0[0]) * 1000 / n_criteria, 2),
                    "fake_llm_cpu_ms_per_call": round((c1[1] - c0[1]) * 1000 / max(1, s1 - s0), 2)},
        "direct_asyncio": {"seconds": round(t_direct, 3), "criteria_per_s": round(n_criteria / t_direct, 1),
                           "x_capacity": round(n_criteria / t_direct / capacity, 3),
                           "backend_occupancy": round((st3["busy_s"] - st2["busy_s"]) / (a.concurrency * t_direct), 3)},
        "naive": {"calls": a.naive_calls, "seconds": round(t_naive, 3), "criteria_per_s": round(naive_rate, 2)},
        "service_x_naive": round(service_rate / naive_rate, 1),
        "cache": {"first_pass_s": round(t_cold, 3), "second_pass_s": round(t_warm, 3),
                  "speedup": round(t_cold / t_warm, 1), "backend_calls_second_pass": s2 - s1},
    }
    out["targets"] = {
        "service_ge_0.9x_capacity": out["service"]["x_capacity"] >= 0.9,
        "service_ge_20x_naive": out["service_x_naive"] >= 20,
        "cache_second_pass_ge_10x": out["cache"]["speedup"] >= 10,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
