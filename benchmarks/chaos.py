"""Fault injection against the real processes. Prints one JSON object: per scenario the figures lost,
duplicated, reruns, wrong, fabricated, nulls by reason, time to recover (definitions: tests/chaos_scenarios.py).

Scenarios (all on loopback; ``redis_restart`` runs its own ``redis-server`` on a free port, never the shared one):

- ``worker_sigkill``: a clean job, then the same job with the worker's process group SIGKILLed mid-job and a new
  worker started at once: ``recover_s`` (kill -> done) against ``clean_s``;
- ``redis_restart``: Redis SIGKILLed ``--kill-after`` s into a job, started again ``--down`` s later (append-only
  file): lost results, the gateway's answers while Redis is down (503 + Retry-After);
- ``faulty_grader``: a grader backend with 20 % 5xx, 5 % hangs, 5 % malformed and 5 % odd-shaped answers
  (tests/fake_faults.py): fabricated verdicts (ones the backend never gave) and nulls with reasons;
- ``injection``: every completion carries an injected ``{"criteria_met": true}`` that the grader quotes while
  refusing it: verdicts flipped to the injected value;
- ``body_limit``: gateway CPU seconds for a chunked 60 MB body, a 65 MB body without a token, a chunked body over
  the 64 MiB limit, malformed JSON without a token.

Targets (issue 14): 0 fabricated against the faulty backend, 0 lost on a Redis restart.
Usage: ``python benchmarks/chaos.py [--quick] [--only redis_restart,faulty_grader] [--legacy-redelivery]``
(``--legacy-redelivery``: the worker without the lease and a 200 s visibility timeout, for comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.harness import REDIS_URL, unique, uvicorn_server  # noqa: E402
from tests import chaos_scenarios as cs  # noqa: E402  (the scenarios tests/test_chaos.py runs small)

SCENARIOS = ("worker_sigkill", "redis_restart", "faulty_grader", "injection", "body_limit")
LEGACY_WORKER_ENV = {"RVPO_BROKER_LEASE_RENEW_S": "0", "RVPO_BROKER_VISIBILITY_TIMEOUT_S": "200",
                     "RVPO_BROKER_RESTORE_INTERVAL_S": "10"}
MB = 10**6


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_post(url: str, headers: dict[str, str], body: bytes) -> str:
    """POST over a plain socket, stop sending when the server answers early; returns the status line."""
    host, port = url.split("//", 1)[1].split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(f"POST /v1/score HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
        s.setblocking(False)
        sent = 0
        while sent < len(body):
            try:
                sent += s.send(body[sent:sent + MB])
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break  # the server answered and closed
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break  # it answered before the body was sent: stop
            except BlockingIOError:
                pass
        s.setblocking(True)
        return s.recv(4096).split(b"\r\n", 1)[0].decode()


def body_limit(log_dir: Path) -> dict:
    """Gateway CPU seconds per request shape (see the module docstring)."""
    token = "chaos-token"
    env = {"RVPO_REDIS_URL": REDIS_URL, "RVPO_KEY_PREFIX": unique("bench-chaos"), "RVPO_API_TOKEN": token,
           "RVPO_CELERY_QUEUE": unique("q")}
    out = {"scenario": "body_limit", "max_body_bytes": 64 * 2**20}
    auth = {"Authorization": f"Bearer {token}", "content-type": "application/json"}

    def chunks(n_mb: int):
        yield b"x"  # not JSON from the first byte: what is measured is reading the body, not parsing it
        for _ in range(n_mb):
            yield b" " * MB

    with uvicorn_server("services.gateway.app:app", log_dir, env=env) as gw:
        def measure(name: str, send) -> None:
            c0 = process_cpu_s(gw.pid)
            status = send()
            out[name] = {"status": status, "gateway_cpu_s": round(process_cpu_s(gw.pid) - c0, 3)}

        measure("chunked_60MB_with_token", lambda: httpx.post(
            gw.url + "/v1/score", content=chunks(60), headers=auth, timeout=120).status_code)
        measure("chunked_70MB_with_token", lambda: httpx.post(
            gw.url + "/v1/score", content=chunks(70), headers=auth, timeout=120).status_code)
        measure("65MB_without_token", lambda: raw_post(
            gw.url, {"Content-Type": "application/json", "Content-Length": str(65 * MB)}, b" " * (65 * MB)))
        measure("malformed_json_without_token", lambda: httpx.post(
            gw.url + "/v1/score", content=b'{"items": [', headers={"content-type": "application/json"},
            timeout=30).status_code)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    ap.add_argument("--quick", action="store_true", help="small sizes (what tests/test_chaos.py runs)")
    ap.add_argument("--items", type=int, default=120, help="items of the worker_sigkill / redis_restart job")
    ap.add_argument("--kill-after", type=float, default=6.0, help="seconds into the job when the fault starts")
    ap.add_argument("--down", type=float, default=20.0, help="seconds Redis stays down")
    ap.add_argument("--grader-items", type=int, default=150, help="items (x up to 4 criteria) graded")
    ap.add_argument("--seed", type=int, default=0, help="seed of the faulty backend's draw")
    ap.add_argument("--legacy-redelivery", action="store_true",
                    help="worker without the lease, visibility timeout 200 s (the behaviour before issue 14)")
    a = ap.parse_args()
    if a.quick:
        a.items, a.kill_after, a.down, a.grader_items = 40, 2.0, 6.0, 30
    wanted = [s for s in a.only.split(",") if s]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios {sorted(unknown)}")
    worker_env = LEGACY_WORKER_ENV if a.legacy_redelivery else None
    logs = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    results: dict = {"load_average": os.getloadavg(), "legacy_redelivery": a.legacy_redelivery, "logs": str(logs)}
    runs = {
        "worker_sigkill": lambda d: cs.worker_sigkill(d, n_items=a.items, kill_after_s=a.kill_after,
                                                      worker_env=worker_env),
        "redis_restart": lambda d: cs.redis_restart(d, n_items=a.items, kill_after_s=a.kill_after, down_s=a.down,
                                                    worker_env=worker_env),
        "faulty_grader": lambda d: cs.faulty_grader(d, n_items=a.grader_items, seed=a.seed),
        "injection": lambda d: cs.faulty_grader(d, n_items=a.grader_items, faults="", inject=True, seed=a.seed),
        "body_limit": body_limit,
    }
    for name in wanted:
        d = logs / name
        d.mkdir()
        results[name] = runs[name](d)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
