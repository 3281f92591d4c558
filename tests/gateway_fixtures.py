"""The scoring stack as real processes for the gateway, worker and reward-client tests.

`running_stack(...)` starts the fake LLM (the only stand-in), the judge, the rules service, the gateway and a
prefork Celery worker on loopback ports, all isolated on the shared Redis by a unique key prefix, queue and
judge-cache prefix, and removes its Redis keys afterwards. Processes are started together and then awaited,
which keeps a module's setup to a few seconds.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from rvpo.data import DATA_DIR
from tests.procs import REDIS_URL, Proc, free_port, start_process, unique, uvicorn_args, wait_http

DATA = DATA_DIR
WORKER_ARGS = [sys.executable, "-m", "celery", "-A", "services.worker.celery_app:celery_app", "worker",
               "--pool", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
               "--loglevel", "INFO"]

# The judge gives up on a backend request after 0.8 s and retries 3 times with 0.5, 1, 2 s backoff: a rubric
# item whose LLM request never answers keeps the judge busy for >= 6.7 s, longer than any test deadline.
JUDGE_TEST_ENV = {"RVPO_JUDGE_TIMEOUT_S": "0.8", "RVPO_JUDGE_RETRIES": "3", "RVPO_JUDGE_BACKOFF_S": "0.5",
                  "RVPO_JUDGE_MODEL": "fake-judge"}


@dataclass
class Stack:
    """Running processes (``procs``), their base URLs (``urls``) and the environment they share (``env``)."""

    log_dir: Path
    env: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return self.env["RVPO_KEY_PREFIX"]

    @property
    def queue(self) -> str:
        return self.env["RVPO_CELERY_QUEUE"]

    def start_app(self, name: str, app: str, extra_env: dict[str, str] | None = None) -> Proc:
        port = free_port()
        proc = start_process(uvicorn_args(app, "127.0.0.1", port), self.log_dir / f"{name}-{port}.log",
                             {**self.env, **(extra_env or {})})
        proc.url = self.urls[name] = f"http://127.0.0.1:{port}"
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str = "worker", concurrency: int = 4,
                     extra_env: dict[str, str] | None = None) -> Proc:
        proc = start_process(WORKER_ARGS + ["--concurrency", str(concurrency), "--hostname", f"{name}@%h"],
                             self.log_dir / f"{name}-{time.monotonic_ns()}.log", {**self.env, **(extra_env or {})})
        self.procs[name] = proc
        return proc

    def wait_ready(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        for name in names or list(self.urls):
            wait_http(self.urls[name] + "/livez", self.procs[name], timeout)

    def wait_worker(self, name: str = "worker", timeout: float = 60.0) -> None:
        """Until the worker logs that it is ready (it consumes the queue from then on)."""
        proc = self.procs[name]
        deadline = time.monotonic() + timeout
        while "ready." not in proc.log_text():
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} not ready:\n{proc.log_text()[-4000:]}")
            time.sleep(0.1)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["RVPO_REDIS_URL"])

    def job_hash(self, job_id: str, part: str) -> dict[str, str]:
        raw = self.redis().hgetall(f"{self.prefix}:job:{job_id}:{part}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        r = self.redis()
        for pattern in (f"{self.prefix}:*", f"{self.env['RVPO_JUDGE_CACHE_PREFIX']}:*"):
            keys = list(r.scan_iter(match=pattern, count=1000))
            if keys:
                r.delete(*keys)


def stack_env(token: str | None = None, **extra: str) -> dict[str, str]:
    """A fresh isolated environment: unique key prefix, queue and judge-cache prefix; the token if any."""
    env = {"RVPO_REDIS_URL": REDIS_URL, "RVPO_KEY_PREFIX": unique("t-gw"), "RVPO_CELERY_QUEUE": unique("t-q"),
           "RVPO_JUDGE_CACHE_PREFIX": unique("t-jc"), "RVPO_API_TOKEN": token or ""}
    env.update(extra)
    return env


@contextlib.contextmanager
def running_stack(log_dir: Path, *, token: str | None = None, env: dict[str, str] | None = None,
                  gateway_env: dict[str, str] | None = None, worker_env: dict[str, str] | None = None,
                  worker_concurrency: int = 4, with_judge: bool = True,
                  fake_env: dict[str, str] | None = None, judge_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Fake LLM + judge + rules + gateway + one worker; yields the Stack, stops everything afterwards."""
    stack = Stack(log_dir, stack_env(token, **(env or {})))
    try:
        if with_judge:
            fake = stack.start_app("fake_llm", "tests.fake_llm:app", {"FAKE_LLM_HANG_S": "60", **(fake_env or {})})
        rules = stack.start_app("rules", "services.rules.app:app")
        stack.env["RVPO_RULES_SERVICE_URL"] = rules.url
        if with_judge:
            judge = stack.start_app("judge", "judge.app:app",
                                    {**JUDGE_TEST_ENV, "RVPO_JUDGE_BASE_URL": fake.url + "/v1", **(judge_env or {})})
            stack.env["RVPO_JUDGE_SERVICE_URL"] = judge.url
        stack.start_app("gateway", "services.gateway.app:app", gateway_env)
        stack.start_worker(concurrency=worker_concurrency, extra_env=worker_env)
        stack.wait_ready()
        stack.wait_worker()
        yield stack
    finally:
        stack.stop()


# -------------------------------------------------------------------------------------------------------------
# Shared data: BFCL and HealthBench rows turned into gateway items
# -------------------------------------------------------------------------------------------------------------
def read_jsonl(name: str) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def bfcl_rows(category: str, n: int) -> list[dict]:
    """The first ``n`` BFCL questions of ``category`` joined with their possible answers."""
    qs = read_jsonl(f"bfcl_{category}_sample.jsonl")[:n]
    answers = {a["id"]: a["ground_truth"] for a in read_jsonl(f"bfcl_{category}_possible_answer.jsonl")}
    return [{**q, "ground_truth": answers[q["id"]]} for q in qs]


def correct_call_text(ground_truth: list[dict]) -> str:
    """A Python-syntax BFCL answer that picks the first allowed value of every parameter (skipping the
    "optional" marker "")."""
    calls = []
    for call in ground_truth:
        (fname, params), = call.items()
        args = []
        for p, allowed in params.items():
            values = [v for v in allowed if v != ""]
            if values:
                args.append(f"{p}={values[0]!r}")
        calls.append(f"{fname}({', '.join(args)})")
    return "[" + ", ".join(calls) + "]"


def bfcl_item(row: dict, completion: str, mode: str = "auto") -> dict:
    return {"id": row["id"], "prompt": row["question"][0], "completion": completion, "tools": row["function"],
            "ground_truth": row["ground_truth"], "mode": mode}


def healthbench_item(row: dict, completion: str) -> dict:
    return {"id": row["prompt_id"], "group_id": row["prompt_id"], "prompt": row["prompt"],
            "completion": completion, "rubrics": row["rubrics"]}
