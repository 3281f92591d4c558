"""Several fake OpenAI-compatible grader replicas (tests/fake_llm.py) as real uvicorn processes, started at once.

Used by tests/test_judge_replicas.py and benchmarks/routing.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from tests.procs import Proc, free_port, start_process, uvicorn_args, wait_http


@contextlib.contextmanager
def fake_replicas(n: int, log_dir: Path, env: dict[str, str] | None = None,
                  timeout: float = 60.0) -> Iterator[list[Proc]]:
    """``n`` fake LLM servers on free loopback ports (each Proc has ``.url``; the grader base URL is
    ``url + "/v1"``), all with the ``FAKE_LLM_*`` options in ``env``; stopped when the block ends."""
    procs: list[Proc] = []
    try:
        for _ in range(n):
            port = free_port()
            proc = start_process(uvicorn_args("tests.fake_llm:app", "127.0.0.1", port),
                                 log_dir / f"fake_llm-{port}.log", env)
            proc.url = f"http://127.0.0.1:{port}"
            procs.append(proc)
        for proc in procs:
            wait_http(proc.url + "/livez", proc, timeout)
        yield procs
    finally:
        for proc in procs:
            proc.stop()
