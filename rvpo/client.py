"""A small synchronous gateway client used by `rvpo score`, the demo and the benchmarks.

The trainer's remote reward source is ``trainer.reward_client.RemoteRewardClient``; this client is for
scoring files of records.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in {408, 429, 500, 502, 503, 504}


class GatewayClient:
    """Submit items to ``POST /v1/score`` and wait for ``GET /v1/jobs/{id}``.

    Raises httpx.HTTPStatusError for a 4xx answer (its body names the field at fault) and TimeoutError when
    a job is not finished within ``job_timeout_s``.
    """

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0, max_retries: int = 3):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._call = retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(max_retries),
                           wait=wait_exponential(multiplier=0.2, max=5), reraise=True)(self._request)

    def _request(self, method: str, url: str, **kw) -> dict[str, Any]:
        resp = self.http.request(method, url, **kw)
        resp.raise_for_status()
        return resp.json()

    def submit(self, items: list[dict[str, Any]]) -> str:
        """Queue items for scoring; returns the job id."""
        return self._call("POST", "/v1/score", json={"items": items})["job_id"]

    def wait(self, job_id: str, job_timeout_s: float = 600.0, poll_s: float = 5.0) -> dict[str, Any]:
        """Block until the job is no longer queued/running (long-polling with ``?wait=``); returns the job."""
        deadline = time.monotonic() + job_timeout_s
        while True:
            left = deadline - time.monotonic()
            job = self._call("GET", f"/v1/jobs/{job_id}", params={"wait": max(0.0, min(poll_s, left))})
            if job["status"] not in {"queued", "running"}:
                return job
            if left <= 0:
                raise TimeoutError(f"job {job_id} still {job['status']} after {job_timeout_s}s")

    def score(self, items: list[dict[str, Any]], job_timeout_s: float = 600.0) -> dict[str, Any]:
        """Submit and wait; returns the finished job (status done / partial / failed)."""
        return self.wait(self.submit(items), job_timeout_s)

    def close(self) -> None:
        self.http.close()
