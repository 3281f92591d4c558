"""Routing over several grader replicas: round robin vs random vs example-sticky. Prints one JSON object.

Starts R (default 4) fake OpenAI-compatible grader replicas (tests/fake_llm.py), each modelling a prefix cache
(tests/fake_prefix_cache.py: an LRU of hashed 16-token blocks, ``--cache-tokens`` per replica; a request holds
one of ``--slots`` slots for ``--latency-ms`` + ``--ms-per-token`` x (uncached prompt tokens + output tokens)),
and a real judge (``uvicorn judge.app:app``, verdict cache off) with ``RVPO_JUDGE_BASE_URLS`` listing them.
Then it grades the HealthBench sample's criteria (every physician completion of every record) once per routing
policy and prompt layout, with empty replica caches each time, and reports side by side:

- ``prefill_tokens``: prompt tokens the replicas computed (not served from their prefix cache), summed;
- ``criteria_per_s``: criteria graded / wall time (the replicas' capacity is the limit by design);
- ``load_max_over_mean``: requests per replica, max / mean;
- ``kill``: sticky routing again, replica 0 SIGKILLed once 40 % of the criteria are done: ``criteria_lost``
  (null verdicts; must be 0), ``wrong_verdicts`` (against the fake's rule), ``recovery_s`` (from the kill to the
  start of the first 1 s window whose rate is >= 0.9 x (R-1)/R x the steady pre-kill rate),
  ``replica_marked_down_after_s`` (until the judge's ``rvpo_judge_replica_up`` gauge shows 0), the latency of
  the examples in flight at the kill, rates before / after.

Targets (issue 13): sticky computes <= 0.4 x the round-robin prefill tokens at max/mean load <= 1.25, and no
criterion is lost when a replica dies. Everything runs on loopback; every run is bounded by ``--run-timeout-s``.
Usage: ``python benchmarks/routing.py [--replicas 4] [--layouts system_first,conversation_first]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.judge import cpu_seconds, workload  # noqa: E402
from benchmarks.harness import fake_replicas, rule_verdict, uvicorn_server  # noqa: E402

POLICIES = ("round_robin", "random", "sticky")


async def grade_all(url: str, items: list[dict], clients: int, timeout_s: float,
                    on_progress=None) -> tuple[float, list[tuple[float, float, int]], list[tuple[dict, dict]]]:
    """POST one example per request from ``clients`` concurrent clients. Returns (seconds, [(sent, answered,
    criteria)] per request in seconds since the start, [(item, result)])."""
    queue: asyncio.Queue = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)
    done: list[tuple[float, float, int]] = []
    results: list[tuple[dict, dict]] = []
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=clients)) as client:
        async def worker():
            while not queue.empty():
                it = queue.get_nowait()
                sent = time.perf_counter() - t0
                r = await client.post(url + "/v1/judge", json={"items": [it]})
                r.raise_for_status()
                results.append((it, r.json()["items"][0]))
                done.append((sent, time.perf_counter() - t0, len(it["rubrics"])))
                if on_progress:
                    on_progress(sum(n for _, _, n in done))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), timeout_s)
    return time.perf_counter() - t0, done, results


def replica_stats(fakes) -> list[dict]:
    return [httpx.get(f.url + "/stats").json() for f in fakes]


def reset(fakes) -> None:
    for f in fakes:
        httpx.post(f.url + "/cache/reset").raise_for_status()
        httpx.post(f.url + "/stats/reset").raise_for_status()


def summarize(stats: list[dict], seconds: float, n_criteria: int) -> dict:
    reqs = [s["requests"] for s in stats]
    tot = {k: sum(s[k] for s in stats) for k in ("prompt_tokens", "cached_tokens", "prefill_tokens", "output_tokens")}
    return {"seconds": round(seconds, 2), "criteria_per_s": round(n_criteria / seconds, 1),
            "prefill_tokens": tot["prefill_tokens"], "prompt_tokens": tot["prompt_tokens"],
            "cache_hit_rate": round(tot["cached_tokens"] / max(1, tot["prompt_tokens"]), 3),
            "output_tokens": tot["output_tokens"], "requests_per_replica": reqs,
            "load_max_over_mean": round(max(reqs) / (sum(reqs) / len(reqs)), 3)}


def judge_env(fakes, policy: str, layout: str, a) -> dict[str, str]:
    return {"RVPO_JUDGE_BASE_URLS": ",".join(f.url + "/v1" for f in fakes), "RVPO_JUDGE_MODEL": "fake-judge",
            "RVPO_JUDGE_ROUTING": policy, "RVPO_JUDGE_PROMPT_LAYOUT": layout,
            "RVPO_JUDGE_CACHE_ENABLED": "false", "RVPO_JUDGE_CONCURRENCY": str(a.judge_concurrency),
            "RVPO_JUDGE_ROUTING_LOAD_FACTOR": str(a.load_factor), "RVPO_JUDGE_TIMEOUT_S": "30",
            "RVPO_JUDGE_RETRIES": "3", "RVPO_JUDGE_BACKOFF_S": "0.05", "RVPO_API_TOKEN": ""}


def verdict_errors(results: list[tuple[dict, dict]]) -> tuple[int, int]:
    """(null verdicts, verdicts that differ from the fake's rule)."""
    lost = wrong = 0
    for it, res in results:
        for rb, rr in zip(it["rubrics"], res["rubric_results"]):
            if rr["criteria_met"] is None:
                lost += 1
            elif rr["criteria_met"] != rule_verdict(rb["criterion"], it["completion"]):
                wrong += 1
    return lost, wrong


def recovery(done: list[tuple[float, float, int]], t_kill: float, target_rate: float,
             window_s: float = 1.0) -> float | None:
    """Seconds from the kill to the start of the first ``window_s`` window (starting at the kill or at an answer
    after it, ending before the run does) in which criteria were answered at >= ``target_rate``; None if never."""
    ends = sorted(t for _, t, _ in done)
    for start in [t_kill, *[t for t in ends if t > t_kill]]:
        if start + window_s > ends[-1]:
            break
        n = sum(c for _, t, c in done if start <= t < start + window_s)
        if n >= target_rate * window_s:
            return round(start - t_kill, 2)
    return None


def watch_down(judge_url: str, label: str, t0: float, timeout_s: float = 10.0) -> float | None:
    """Poll the judge's /metrics until ``rvpo_judge_replica_up{replica=label}`` is 0; seconds since t0."""
    needle = f'rvpo_judge_replica_up{{replica="{label}"}} 0.0'
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if needle in httpx.get(judge_url + "/metrics", timeout=5).text:
            return time.perf_counter() - t0
        time.sleep(0.02)
    return None


def kill_run(fakes, items, logs, a) -> dict:
    """Sticky routing with replica 0 killed once ``a.kill_at`` of the criteria are done."""
    import threading

    n_criteria = sum(len(it["rubrics"]) for it in items)
    killed = fakes[0].url + "/v1"
    state: dict = {"t_kill": None, "down": None}
    reset(fakes)
    with uvicorn_server("judge.app:app", logs, env=judge_env(fakes, "sticky", a.kill_layout, a)) as judge:
        def on_progress(n: int) -> None:
            if state["t_kill"] is None and n >= a.kill_at * n_criteria:
                os.killpg(fakes[0].popen.pid, signal.SIGKILL)
                state["t_kill"] = time.perf_counter() - t_start
                threading.Thread(target=lambda: state.update(down=watch_down(judge.url, killed, t_start)),
                                 daemon=True).start()

        t_start = time.perf_counter()
        seconds, done, results = asyncio.run(grade_all(judge.url, items, a.clients, a.run_timeout_s, on_progress))
        metrics = httpx.get(judge.url + "/metrics").text
    fakes[0].popen.wait(timeout=10)
    lost, wrong = verdict_errors(results)
    t_kill = state["t_kill"]
    steady = [c for _, t, c in done if t_kill / 2 <= t < t_kill]  # after the ramp-up, before the kill
    pre = sum(steady) / (t_kill / 2)
    post = sum(c for _, t, c in done if t >= t_kill) / max(1e-9, seconds - t_kill)
    normal = sorted(t - s for s, t, _ in done if t < t_kill)
    hit = sorted(t - s for s, t, _ in done if s < t_kill <= t)  # requests in flight at the kill
    errors = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("rvpo_judge_replica_errors_total{") and f'replica="{killed}"' in line)
    failovers = next((float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith('rvpo_judge_routing_decisions_total{kind="failover"}')), 0.0)
    keep = (len(fakes) - 1) / len(fakes)
    return {"layout": a.kill_layout, "killed_at_s": round(t_kill, 2), "seconds": round(seconds, 2),
            "criteria": n_criteria, "criteria_lost": lost, "wrong_verdicts": wrong,
            "criteria_per_s_before": round(pre, 1), "criteria_per_s_after": round(post, 1),
            "recovery_s": recovery(done, t_kill, 0.9 * keep * pre),
            "replica_marked_down_after_s": None if state["down"] is None else round(state["down"] - t_kill, 3),
            "example_latency_s": {"median_before_kill": round(normal[len(normal) // 2], 3) if normal else None,
                                  "max_in_flight_at_kill": round(hit[-1], 3) if hit else None},
            "failed_attempts_on_killed_replica": int(errors), "failover_decisions": int(failovers)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--slots", type=int, default=4, help="concurrent requests per replica")
    ap.add_argument("--latency-ms", type=float, default=10.0)
    ap.add_argument("--ms-per-token", type=float, default=0.5)
    ap.add_argument("--cache-tokens", type=int, default=65536, help="prefix cache per replica (tokens)")
    ap.add_argument("--judge-concurrency", type=int, default=8, help="RVPO_JUDGE_CONCURRENCY (per replica)")
    ap.add_argument("--load-factor", type=float, default=1.25, help="RVPO_JUDGE_ROUTING_LOAD_FACTOR")
    ap.add_argument("--clients", type=int, default=24, help="concurrent POST /v1/judge (one example each)")
    ap.add_argument("--layouts", default="system_first,conversation_first")
    ap.add_argument("--kill-layout", default="system_first")
    ap.add_argument("--kill-at", type=float, default=0.4, help="share of criteria done when replica 0 dies")
    ap.add_argument("--max-examples", type=int, default=None)
    ap.add_argument("--run-timeout-s", type=float, default=300.0)
    a = ap.parse_args()

    items = workload(a.max_examples)
    n_criteria = sum(len(it["rubrics"]) for it in items)
    logs = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    fake_env = {"FAKE_LLM_LATENCY_MS": str(a.latency_ms), "FAKE_LLM_CONCURRENCY": str(a.slots),
                "FAKE_LLM_PREFIX_CACHE_TOKENS": str(a.cache_tokens), "FAKE_LLM_MS_PER_TOKEN": str(a.ms_per_token),
                "FAKE_LLM_KEEP_REQUESTS": "1"}
    out: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
                 "workload": {"examples": len(items), "criteria": n_criteria, "clients": a.clients},
                 "replicas": {"count": a.replicas, "slots": a.slots, "latency_ms": a.latency_ms,
                              "ms_per_token": a.ms_per_token, "prefix_cache_tokens": a.cache_tokens,
                              "block_tokens": 16, "chars_per_token": 4},
                 "judge": {"concurrency_per_replica": a.judge_concurrency, "load_factor": a.load_factor},
                 "layouts": {}}
    with fake_replicas(a.replicas, logs, fake_env) as fakes:
        for layout in a.layouts.split(","):
            runs = {}
            for policy in POLICIES:
                reset(fakes)
                with uvicorn_server("judge.app:app", logs, env=judge_env(fakes, policy, layout, a)) as judge:
                    cpu0 = cpu_seconds(judge.pid)
                    seconds, _, results = asyncio.run(grade_all(judge.url, items, a.clients, a.run_timeout_s))
                    cpu = cpu_seconds(judge.pid) - cpu0
                lost, wrong = verdict_errors(results)
                runs[policy] = summarize(replica_stats(fakes), seconds, n_criteria) | {
                    "null_verdicts": lost, "wrong_verdicts": wrong,
                    "judge_cpu_ms_per_criterion": round(cpu * 1000 / n_criteria, 2)}
            rr = runs["round_robin"]["prefill_tokens"]
            for run in runs.values():
                run["prefill_x_round_robin"] = round(run["prefill_tokens"] / rr, 3)
            out["layouts"][layout] = runs
        out["kill"] = kill_run(fakes, items, logs, a)

    out["targets"] = {f"{layout}:sticky_prefill_le_0.4x_round_robin": runs["sticky"]["prefill_x_round_robin"] <= 0.4
                      for layout, runs in out["layouts"].items()}
    out["targets"] |= {f"{layout}:sticky_load_le_1.25": runs["sticky"]["load_max_over_mean"] <= 1.25
                       for layout, runs in out["layouts"].items()}
    out["targets"]["kill:criteria_lost_0"] = out["kill"]["criteria_lost"] == 0 and out["kill"]["wrong_verdicts"] == 0
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
