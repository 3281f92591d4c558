"""`rvpo up`: the whole stack as real local processes on loopback ports.

Starts (in this order) Redis if none answers at ``RVPO_REDIS_URL`` (a private ``redis-server`` on a free
port, nothing written to disk), the rules service, the judge service, the gateway and one Celery worker,
waits until each answers its readiness probe, and stops everything it started on exit or Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from rvpo.procs import Proc, free_port, start_process, uvicorn_args, wait_http


class StackError(RuntimeError):
    """The stack could not be started; the message says what is missing and how to provide it."""


@dataclass
class StackConfig:
    """Where the local stack listens and how it is configured.

    ``env`` is passed to every process on top of the current environment (e.g. ``RVPO_JUDGE_BASE_URL``).
    Ports of 0 are replaced by free ports.
    """

    host: str = "127.0.0.1"
    gateway_port: int = 8000
    judge_port: int = 8001
    rules_port: int = 8002
    worker_concurrency: int = field(default_factory=lambda: int(os.environ.get("RVPO_WORKER_CONCURRENCY", "4")))
    log_dir: Path = Path("runs/stack-logs")
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0


class Stack:
    """Context manager that runs the stack; ``urls`` holds each service's base URL once started."""

    def __init__(self, config: StackConfig | None = None):
        self.config = config or StackConfig()
        self.procs: dict[str, Proc] = {}
        self.urls: dict[str, str] = {}
        self.env: dict[str, str] = {}

    # -- redis -----------------------------------------------------------------------------------
    def _ensure_redis(self) -> str:
        url = self.config.env.get("RVPO_REDIS_URL") or os.environ.get("RVPO_REDIS_URL", "redis://127.0.0.1:6379/0")
        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
            return url
        except redis.RedisError:
            pass
        server = shutil.which("redis-server")
        if server is None:
            raise StackError(
                f"No Redis answers at {url} and `redis-server` is not installed. Start Redis "
                "(e.g. `apt-get install redis-server` or `docker run -p 6379:6379 redis:7`) or set RVPO_REDIS_URL."
            )
        port = free_port()
        proc = start_process([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             self.config.log_dir / "redis.log")
        self.procs["redis"] = proc
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=1).ping()
                return url
            except redis.RedisError:
                time.sleep(0.1)
        raise StackError(f"redis-server did not start; see {proc.log}")

    # -- services --------------------------------------------------------------------------------
    def _port(self, p: int) -> int:
        return p or free_port()

    def start(self) -> "Stack":
        """Start every process and wait until all are ready. Raises StackError (after cleaning up) on failure."""
        c = self.config
        try:
            redis_url = self._ensure_redis()
            ports = {"rules": self._port(c.rules_port), "judge": self._port(c.judge_port),
                     "gateway": self._port(c.gateway_port)}
            self.urls = {name: f"http://{c.host}:{port}" for name, port in ports.items()}
            self.env = {
                **c.env,
                "RVPO_REDIS_URL": redis_url,
                "RVPO_JUDGE_SERVICE_URL": self.urls["judge"],
                "RVPO_RULES_SERVICE_URL": self.urls["rules"],
            }
            apps = {"rules": "services.rules.app:app", "judge": "judge.app:app", "gateway": "services.gateway.app:app"}
            for name, app in apps.items():
                self.procs[name] = start_process(uvicorn_args(app, c.host, ports[name]), c.log_dir / f"{name}.log",
                                                 self.env)
            self.procs["worker"] = start_process(
                [sys.executable, "-m", "celery", "-A", "services.worker.celery_app:celery_app", "worker",
                 "--loglevel", "WARNING", "--concurrency", str(c.worker_concurrency), "--pool", "prefork"],
                c.log_dir / "worker.log", self.env)
            for name in apps:  # the judge is up once it answers; its LLM backend may come later (see judge_ready)
                probe = "/livez" if name == "judge" else "/readyz"
                wait_http(self.urls[name] + probe, self.procs[name], c.ready_timeout_s)
            if self.procs["worker"].popen.poll() is not None:
                raise StackError(f"the Celery worker exited; see {self.procs['worker'].log}")
        except Exception as exc:
            self.stop()
            if isinstance(exc, StackError):
                raise
            raise StackError(str(exc)) from exc
        return self

    def judge_ready(self) -> tuple[bool, str]:
        """Whether the judge's LLM backend answers (its `/readyz`); grading waits for it otherwise."""
        import httpx

        try:
            resp = httpx.get(self.urls["judge"] + "/readyz", timeout=10)
            return resp.status_code == 200, resp.json().get("detail", "")
        except (httpx.HTTPError, ValueError) as exc:
            return False, str(exc)

    def stop(self) -> None:
        """Stop every process this stack started (SIGTERM, then SIGKILL after 15 s), newest first."""
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        self.procs.clear()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
