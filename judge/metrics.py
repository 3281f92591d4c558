"""Prometheus metrics of the judge (exposed on `/metrics` by services.common.http.install_common)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CACHE_LOOKUPS = Counter("rvpo_judge_cache_lookups_total", "Verdict cache lookups by result.", ["result"])
CACHE_ERRORS = Counter("rvpo_judge_cache_errors_total", "Redis errors while reading/writing the cache.", ["op"])
BATCH_SIZE = Histogram(
    "rvpo_judge_batch_size", "Rubric items per batch dispatched to the backend.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
QUEUE_DEPTH = Gauge("rvpo_judge_queue_depth", "Rubric items waiting in the micro-batcher.")
# The load signal the judge autoscales on (k8s/22-judge.yaml): grading requests this replica is serving now.
IN_FLIGHT = Gauge("rvpo_judge_inflight_requests", "POST /v1/judge requests being served now.")
BACKEND_LATENCY = Histogram(
    "rvpo_judge_backend_latency_seconds", "Latency of one backend call (HTTP request or forward pass).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BACKEND_CALLS = Counter("rvpo_judge_backend_calls_total", "Backend calls by outcome.", ["outcome"])
RETRIES = Counter("rvpo_judge_backend_retries_total", "Backend retries (408/429/5xx/transport/timeout).", ["reason"])
PARSE_FAILURES = Counter("rvpo_judge_parse_failures_total", "Grader answers with no valid verdict.")
VERDICTS = Counter("rvpo_judge_verdicts_total", "Verdicts returned, by value.", ["value"])
# Why a verdict is null, by the reason's class (the part before ':' - judge_budget_exceeded, judge_timeout,
# judge_parse_error, judge_transport_error, judge_http_error, ...): a rise of judge_budget_exceeded means the
# callers' budgets (X-RVPO-Budget-S) are too short for the graders' latency.
NULL_VERDICTS = Counter("rvpo_judge_null_verdicts_total", "Null verdicts returned, by reason class.", ["reason"])
REQUEST_ITEMS = Counter("rvpo_judge_request_items_total", "Examples received on POST /v1/judge.")

# --- per grader replica (judge/backends/routing.py); label = the replica's base URL without credentials ---------
REPLICA_REQUESTS = Counter("rvpo_judge_replica_requests_total", "Backend attempts sent to each grader replica.",
                           ["replica"])
REPLICA_ERRORS = Counter("rvpo_judge_replica_errors_total",
                         "Failed attempts per replica (transport, timeout, HTTP status) - they count towards its "
                         "cool-down.", ["replica", "reason"])
REPLICA_INFLIGHT = Gauge("rvpo_judge_replica_inflight", "Requests in flight (or waiting for a connection) per "
                                                        "replica.", ["replica"])
REPLICA_UP = Gauge("rvpo_judge_replica_up", "1 when the replica takes requests, 0 during its cool-down.", ["replica"])
ROUTING_DECISIONS = Counter(
    "rvpo_judge_routing_decisions_total",
    "Replica choices by kind: pinned (example already placed), ring (its hash point), spill (bounded loads sent it "
    "further), failover (its replica failed), round_robin, random, unkeyed, fallback (all cooling/excluded).",
    ["kind"])


def reason_class(reason: str) -> str:
    """The label of ``NULL_VERDICTS`` for a null verdict's reason: its code before the first ':'
    (``"judge_budget_exceeded: not graded by ..."`` -> ``"judge_budget_exceeded"``). Codes are the judge's own
    (``judge_*``); anything else is ``"other"``, so the label's values stay a small fixed set."""
    code = reason.split(":", 1)[0].strip()
    return code if code.startswith("judge_") and code.replace("_", "").isalnum() and len(code) <= 40 else "other"
