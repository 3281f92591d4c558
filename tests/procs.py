"""Real OS processes on loopback for the tests (and, through benchmarks/harness.py, the benchmarks).

Processes start with the same helpers `rvpo up` uses (rvpo/stack.py), so the tests exercise the code paths users
run (no in-process TestClient); here they also get the repository on ``PYTHONPATH`` and as working directory
(for ``tests.fake_llm:app``) and the test Redis.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from rvpo.stack import Proc, free_port, uvicorn_args, wait_http, worker_args  # noqa: F401
from rvpo.stack import start_process as _start_process

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("RVPO_TEST_REDIS_URL") or os.environ.get("RVPO_REDIS_URL", "redis://127.0.0.1:6379/0")
FAKE_LLM_APP = "tests.fake_llm:app"


def unique(prefix: str) -> str:
    """A short unique name (queue, key prefix) so concurrent test runs never share Redis state."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start_process(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """`rvpo.stack.start_process` from the repository root, with it on PYTHONPATH and the test Redis by default."""
    full = {"RVPO_REDIS_URL": os.environ.get("RVPO_REDIS_URL", REDIS_URL),
            "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return _start_process(args, log, full, cwd=REPO_ROOT)


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
