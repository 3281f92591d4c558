"""`rvpo up`: the whole stack as real local processes on loopback ports.

Starts (in this order) Redis if none answers at ``RVPO_REDIS_URL`` (a private ``redis-server`` on a free
port, nothing written to disk), the rules service, the judge service, the gateway and one Celery worker,
waits until each answers its readiness probe (the worker: a Celery ping), and stops everything it started on
exit or Ctrl-C; ``check()`` tells a process that died or a worker that stopped answering. Ports, hosts and the
worker's concurrency come from each part's settings (``RVPO_*_PORT``, ``RVPO_*_HOST``,
``RVPO_WORKER_CONCURRENCY``) unless the caller gives them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from contracts.processes import HTTP_SERVICES, WORKER_APP


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A started process with its log file; `stop()` sends SIGTERM then SIGKILL."""

    def __init__(self, popen: subprocess.Popen, log: Path, url: str | None = None):
        self.popen, self.log, self.url = popen, log, url

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole process group (a Celery worker has children)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_process(args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    """Start `args` in its own process group (environment: this one plus `env`), stdout+stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "wb")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen(args, cwd=cwd, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                             start_new_session=True)
    return Proc(popen, log)


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """Poll `url` until it answers 200; fail with the process log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"process exited with {proc.popen.returncode}:\n{proc.log_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{proc.log_text()[-4000:]}")


def uvicorn_args(app: str, host: str, port: int, log_level: str = "warning") -> list[str]:
    """The command line that serves ASGI app `app` (\"module:attr\") with uvicorn on host:port."""
    return [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port), "--log-level", log_level]


def worker_args(concurrency: int | None = None, loglevel: str = "WARNING", hostname: str | None = None) -> list[str]:
    """The command line of a prefork Celery worker; without `concurrency` it uses RVPO_WORKER_CONCURRENCY;
    `hostname` (``name@host``) names it for Celery's remote control (ping)."""
    args = [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "--loglevel", loglevel, "--pool", "prefork"]
    return args + (["--concurrency", str(concurrency)] if concurrency else []) + \
        (["--hostname", hostname] if hostname else [])


def last_log_line(proc: Proc) -> str:
    """The last non-empty line of a process's log (what it said before it died), at most 300 characters."""
    lines = [ln.strip() for ln in proc.log_text().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(empty log)"


def bind_address(service: str) -> tuple[str, int]:
    """(host, port) a service binds by default: its settings (``RVPO_<SERVICE>_HOST`` / ``_PORT``)."""
    if service == "gateway":
        from services.gateway.settings import GatewaySettings

        s = GatewaySettings()
        return s.gateway_host, s.gateway_port
    if service == "judge":
        from judge.settings import JudgeSettings

        s = JudgeSettings()
        return s.judge_host, s.judge_port
    if service == "rules":
        from services.rules.settings import RulesSettings

        s = RulesSettings()
        return s.rules_host, s.rules_port
    raise ValueError(f"unknown service {service!r}; expected one of {sorted(HTTP_SERVICES)}")


class StackError(RuntimeError):
    """The stack could not be started; the message says what is missing and how to provide it."""


@dataclass
class StackConfig:
    """Where the local stack listens and how it is configured.

    ``host`` / ports / ``worker_concurrency`` left None come from the settings (``RVPO_GATEWAY_HOST``,
    ``RVPO_GATEWAY_PORT``, ``RVPO_JUDGE_PORT``, ``RVPO_RULES_PORT``, ``RVPO_WORKER_CONCURRENCY``, ...); ports of 0
    are replaced by free ports. ``env`` is passed to every process on top of the current environment (e.g.
    ``RVPO_JUDGE_BASE_URL``).
    """

    host: str | None = None
    gateway_port: int | None = None
    judge_port: int | None = None
    rules_port: int | None = None
    worker_concurrency: int | None = None
    log_dir: Path = Path("runs/stack-logs")
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    #: `check()` pings the worker (Celery remote control) this often; it is dead after `worker_misses` misses
    worker_ping_s: float = 10.0
    worker_misses: int = 3


class Stack:
    """Context manager that runs the stack; ``urls`` holds each service's base URL once started."""

    def __init__(self, config: StackConfig | None = None):
        self.config = config or StackConfig()
        self.procs: dict[str, Proc] = {}
        self.urls: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.worker_name = f"rvpo-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        self._control = None
        self._last_ping, self._misses = 0.0, 0

    # -- redis -----------------------------------------------------------------------------------
    def _ensure_redis(self) -> str:
        from services.common.settings import CommonSettings

        url = self.config.env.get("RVPO_REDIS_URL") or CommonSettings().redis_url
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
    def _address(self, service: str, port: int | None) -> tuple[str, int]:
        """(host, port) for ``service``; raises StackError when that port is taken (before anything starts)."""
        host, default = bind_address(service)
        port = default if port is None else port
        host, port = self.config.host or host, port or free_port()
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: only a listener makes it taken
            try:
                s.bind((host, port))
            except OSError as exc:
                raise StackError(f"{host}:{port} for the {service} is taken ({exc.strerror}): another `rvpo up` "
                                 f"running? Stop it, or set RVPO_{service.upper()}_PORT (or `--{service}-port`)") \
                    from None
        return host, port

    def start(self) -> "Stack":
        """Start every process and wait until all are ready. Raises StackError (after cleaning up) on failure."""
        c = self.config
        try:
            redis_url = self._ensure_redis()
            addresses = {"rules": self._address("rules", c.rules_port), "judge": self._address("judge", c.judge_port),
                         "gateway": self._address("gateway", c.gateway_port)}
            self.urls = {name: f"http://{host}:{port}" for name, (host, port) in addresses.items()}
            self.env = {
                **c.env,
                "RVPO_REDIS_URL": redis_url,
                "RVPO_JUDGE_SERVICE_URL": self.urls["judge"],
                "RVPO_RULES_SERVICE_URL": self.urls["rules"],
            }
            apps = {name: HTTP_SERVICES[name][0] for name in addresses}
            for name, app in apps.items():
                host, port = addresses[name]
                self.procs[name] = start_process(uvicorn_args(app, host, port), c.log_dir / f"{name}.log", self.env)
            self.procs["worker"] = start_process(worker_args(c.worker_concurrency, hostname=self.worker_name),
                                                 c.log_dir / "worker.log", self.env)
            for name in apps:  # the judge is up once it answers; its LLM backend may come later (see judge_ready)
                probe = "/livez" if name == "judge" else "/readyz"
                try:
                    wait_http(self.urls[name] + probe, self.procs[name], c.ready_timeout_s)
                except (RuntimeError, TimeoutError) as exc:
                    raise StackError(self._failed(name, "exited during start-up" if isinstance(exc, RuntimeError)
                                                  else f"did not answer {probe} within {c.ready_timeout_s:g} s"))
            self._wait_worker(c.ready_timeout_s)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, StackError) or not isinstance(exc, Exception):
                raise
            raise StackError(f"{type(exc).__name__}: {exc}") from exc
        return self

    def _failed(self, name: str, what: str) -> str:
        proc = self.procs[name]
        code = proc.popen.poll()
        return (f"the {name} {what}{'' if code is None else f' (exit code {code})'}: "
                f"{last_log_line(proc)} — full log: {proc.log}")

    # -- the worker's pulse ----------------------------------------------------------------------------
    def ping_worker(self, timeout_s: float = 1.0) -> bool:
        """Whether this stack's worker answers a Celery remote-control ping within ``timeout_s``."""
        if self._control is None:
            from services.worker.celery_app import make_celery
            from services.worker.settings import WorkerSettings

            given = {name: self.env[f"RVPO_{name.upper()}"] for name in WorkerSettings.model_fields
                     if f"RVPO_{name.upper()}" in self.env}  # what the worker was started with
            self._control = make_celery(WorkerSettings(**given)).control
        try:
            return bool(self._control.ping(destination=[self.worker_name], timeout=timeout_s))
        except Exception:  # noqa: BLE001 - the broker itself failing counts as no answer
            return False

    def _wait_worker(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ping_worker():
            if self.procs["worker"].popen.poll() is not None:
                raise StackError(self._failed("worker", "exited during start-up"))
            if time.monotonic() > deadline:
                raise StackError(self._failed("worker", f"did not answer a ping within {timeout_s:g} s"))
        self._last_ping, self._misses = time.monotonic(), 0

    def check(self) -> str | None:
        """What is wrong with the running stack, or None: a process that exited (with its last log line), or a
        worker that missed ``worker_misses`` pings in a row (one every ``worker_ping_s`` seconds)."""
        for name, proc in self.procs.items():
            if proc.popen.poll() is not None:
                return self._failed(name, "exited")
        c = self.config
        if "worker" in self.procs and time.monotonic() - self._last_ping >= c.worker_ping_s:
            self._last_ping = time.monotonic()
            self._misses = 0 if self.ping_worker() else self._misses + 1
            if self._misses >= c.worker_misses:
                return (f"the worker (pid {self.procs['worker'].pid}) has not answered {self._misses} pings in a row "
                        f"(every {c.worker_ping_s:g} s): hung or cut off from Redis — log: {self.procs['worker'].log}")
        return None

    def judge_ready(self) -> tuple[bool, str]:
        """Whether the judge's LLM backend answers (its `/readyz`, whose detail names the backend, the model it
        serves and whether it is reachable); grading waits for it otherwise."""
        try:
            resp = httpx.get(self.urls["judge"] + "/readyz", timeout=10)
            return resp.status_code == 200, str(resp.json().get("detail", ""))
        except (httpx.HTTPError, ValueError) as exc:
            return False, f"the judge's /readyz did not answer: {type(exc).__name__}: {exc}"

    def stop(self) -> None:
        """Stop every process this stack started (SIGTERM, then SIGKILL after 15 s), newest first."""
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        self.procs.clear()
        if self._control is not None:
            with contextlib.suppress(Exception):
                self._control.app.close()
            self._control = None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
