"""Tests start real processes with the same helpers `rvpo up` uses (see rvpo/procs.py)."""

from rvpo.procs import (  # noqa: F401
    REDIS_URL,
    REPO_ROOT,
    Proc,
    free_port,
    start_process,
    unique,
    uvicorn_args,
    uvicorn_server,
    wait_http,
)
