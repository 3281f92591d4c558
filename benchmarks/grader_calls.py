"""The judge's backend requests for a workload, and the naive one-call-at-a-time baseline (shared by
benchmarks/judge.py and benchmarks/pipeline.py)."""

from __future__ import annotations

import time

import httpx

from judge import prompt


def grader_bodies(items: list[dict], n_calls: int | None = None) -> list[dict]:
    """The chat-completion requests the judge makes for ``items`` (the first ``n_calls`` of them)."""
    bodies = []
    for it in items:
        conv = prompt.render_conversation(it["prompt"], it["completion"], prompt.new_nonce())
        for r in it["rubrics"]:
            bodies.append({"model": "fake-judge", "temperature": 0.0, "max_tokens": 1024,
                           "messages": prompt.grader_messages(conv, r["criterion"], r["points"])})
    return bodies[:n_calls] if n_calls else bodies


def naive(base: str, bodies: list[dict]) -> float:
    """Seconds for the grader calls ``bodies`` made one after the other straight to the backend at ``base``."""
    with httpx.Client(base_url=base, timeout=60) as client:
        t0 = time.perf_counter()
        for b in bodies:
            client.post("/v1/chat/completions", json=b).raise_for_status()
        return time.perf_counter() - t0
