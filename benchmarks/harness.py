"""What the benchmarks share, in one place: the processes they start, the fake LLM backend they measure
against, the judge's backend requests for a workload and the naive one-call-at-a-time baseline.

The fake OpenAI-compatible LLM is the test suite's one stand-in (``tests/fake_llm.py``, :data:`FAKE_LLM_APP`)
and the process helpers are the tests' (``tests/procs.py``, built on ``rvpo/stack.py``); benchmark scripts
reach both through this module only. Run the benchmarks from a checkout (``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from judge import prompt  # noqa: E402
from tests.procs import (  # noqa: E402,F401
    FAKE_LLM_APP,
    REDIS_URL,
    free_port,
    start_process,
    unique,
    uvicorn_args,
    uvicorn_server,
    wait_http,
    worker_args,
)
from tests.fake_llm import rule_verdict  # noqa: E402,F401  (what the fake answers, to check verdicts)
from tests.replicas import fake_replicas  # noqa: E402,F401  (R fake LLM replicas, for benchmarks/routing.py)


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
