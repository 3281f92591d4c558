"""benchmarks/procpool.py: the spawned workers of a training benchmark end when the benchmark process is killed
(found when a SIGTERM'd rubric_neglect run left two workers training on for 45 minutes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.procpool import PARENT_POLL_S

ROOT = Path(__file__).resolve().parents[1]
PARENT = """
import os, sys, time
from benchmarks.procpool import make_pool
with make_pool(2) as pool:
    jobs = [pool.submit(time.sleep, 120) for _ in range(2)]
    time.sleep(1.0)  # both workers started and busy
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(120)
"""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left for its new parent to reap counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_workers_end_within_the_poll_interval_when_the_benchmark_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(alive(p) for p in workers), workers
        parent.send_signal(signal.SIGKILL)  # no clean shutdown: nothing tells the workers
        parent.wait(10)
        deadline = time.monotonic() + PARENT_POLL_S + 5.0
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in workers), f"workers still running after the benchmark was killed: {workers}"
    finally:
        parent.kill()
        for p in workers if "workers" in locals() else []:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
