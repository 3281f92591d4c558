"""Real OS processes on loopback: uvicorn servers and Celery workers.

`rvpo up`, the demo, the benchmarks and the tests all start the stack with these helpers, so the tests
exercise the same code paths users run (no in-process TestClient).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("RVPO_TEST_REDIS_URL") or os.environ.get("RVPO_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    """A short unique name (queue, key prefix) so concurrent test runs never share Redis state."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("RVPO_REDIS_URL", REDIS_URL)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


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


def start_process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start `args` in its own process group, stdout+stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "wb")
    popen = subprocess.Popen(
        args, cwd=REPO_ROOT, env=_env(env), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
    )
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


@contextlib.contextmanager
def uvicorn_server(app: str, log_dir: Path, env: dict[str, str] | None = None,
                   ready_path: str = "/livez", timeout: float = 60.0) -> Iterator[Proc]:
    """Run `uvicorn APP` on a free loopback port until the block ends; yields the Proc with `.url`."""
    port = free_port()
    name = app.split(":")[0].replace(".", "_")
    proc = start_process(uvicorn_args(app, "127.0.0.1", port), log_dir / f"{name}-{port}.log", env)
    proc.url = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc.url + ready_path, proc, timeout)
        yield proc
    finally:
        proc.stop()
