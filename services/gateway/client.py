"""The one client of the gateway: submit a batch, long-poll its job or its dense rewards.

Used by `rvpo score` and the demo (:meth:`GatewayClient.score`) and by the trainer's reward source
(``trainer.reward_client``: :meth:`GatewayClient.submit` + :meth:`GatewayClient.rewards`). Every submission
carries an ``Idempotency-Key`` (a fresh UUID per :meth:`submit` call, the same on each of its retries), so a
retried ``POST /v1/score`` — after a read timeout that fired while the gateway had already stored the job —
returns that job instead of creating a second one. Retries follow :data:`services.common.httpclient.GATEWAY_CALL`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from contracts.results import FINAL_STATUSES
from services.common.httpclient import GATEWAY_CALL, RetryPolicy, make_client
from services.gateway.settings import GatewayClientSettings


class GatewayError(RuntimeError):
    """The gateway refused a request with a 4xx (not 408/429): ``status_code`` and its ``body`` (the 422 body
    names the field at fault, e.g. ``loc: ["body", "items", 3, "rubrics", 0, "points"]``)."""

    def __init__(self, message: str, status_code: int | None = None, body: str = ""):
        super().__init__(message)
        self.status_code, self.body = status_code, body


class GatewayClient:
    """Synchronous client of the gateway.

    Args:
        base_url: the gateway, e.g. ``http://127.0.0.1:8000``; None = ``RVPO_GATEWAY_URL``.
        token: bearer token; None = ``RVPO_API_TOKEN`` (empty string: none).
        timeout_s: timeout of one HTTP request (seconds), on top of the ``?wait=`` it asks the gateway for.
        policy: retries (default :data:`~services.common.httpclient.GATEWAY_CALL`).

    Methods raise :class:`GatewayError` for a 4xx answer and the last httpx error when the gateway cannot be
    reached within the retries.
    """

    def __init__(self, base_url: str | None = None, token: str | None = None, timeout_s: float = 30.0,
                 policy: RetryPolicy = GATEWAY_CALL):
        if base_url is None or token is None:
            s = GatewayClientSettings()
            base_url = s.gateway_url if base_url is None else base_url
            token = s.api_token if token is None else token
        self.base_url = base_url.rstrip("/")
        self.timeout_s, self.policy = timeout_s, policy
        self.http = make_client(self.base_url, token, timeout_s)
        self.requests = 0  # HTTP requests sent, retries included

    def _call(self, method: str, url: str, wait_s: float = 0.0, **kw) -> httpx.Response:
        timeout = httpx.Timeout(self.timeout_s + wait_s, connect=min(self.timeout_s, 10.0))

        def send() -> httpx.Response:
            self.requests += 1
            return self.http.request(method, url, timeout=timeout, **kw)

        try:
            return self.policy.call(send)
        except httpx.HTTPStatusError as exc:
            if 400 <= exc.response.status_code < 500 and exc.response.status_code not in self.policy.statuses:
                code, body = exc.response.status_code, exc.response.text
                raise GatewayError(f"gateway rejected {method} {url}: {code} {body[:2000]}", code, body) from exc
            raise

    def submit(self, items: list[dict[str, Any]], *, wait_s: float = 0.0, deadline_s: float | None = None,
               detail: bool = False, idempotency_key: str | None = None) -> dict[str, Any]:
        """``POST /v1/score``: queue ``items`` as one job; returns the job view (``job_id``, ``status``, ...).

        ``wait_s``: let the gateway hold the answer until the job is final or that many seconds passed;
        ``deadline_s``: the job's deadline (at most the gateway's ``RVPO_JOB_DEADLINE_S``);
        ``idempotency_key``: defaults to a fresh UUID, reused by every retry of this call.
        """
        params: dict[str, Any] = {"wait": wait_s}
        if deadline_s is not None:
            params["deadline_s"] = deadline_s
        if detail:
            params["detail"] = "true"
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        return self._call("POST", "/v1/score", wait_s, json={"items": items}, params=params, headers=headers).json()

    def _poll(self, path: str, params: dict[str, Any], timeout_s: float, poll_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            wait = max(0.0, min(poll_s, deadline - time.monotonic()))
            body = self._call("GET", path, wait, params={**params, "wait": wait}).json()
            if body["status"] in FINAL_STATUSES or time.monotonic() >= deadline:
                return body

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 10.0,
             detail: bool = False) -> dict[str, Any]:
        """Long-poll ``GET /v1/jobs/{id}`` until the job is final or ``timeout_s`` passed; returns the job view
        (check its ``status``: still ``queued`` / ``running`` after the timeout)."""
        params = {"detail": "true"} if detail else {}
        return self._poll(f"/v1/jobs/{job_id}", params, timeout_s, poll_s)

    def rewards(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 10.0, rubric_slots: int = 0,
                rules: bool = False) -> dict[str, Any]:
        """Long-poll ``GET /v1/jobs/{id}/rewards`` until final or ``timeout_s``; returns the dense ``[N, K]`` body."""
        params = {"rubric_slots": rubric_slots, "rules": "true" if rules else "false"}
        return self._poll(f"/v1/jobs/{job_id}/rewards", params, timeout_s, poll_s)

    def score(self, items: list[dict[str, Any]], job_timeout_s: float = 600.0, poll_s: float = 10.0) -> dict[str, Any]:
        """Submit and wait; returns the final job view. Raises TimeoutError if it is not final in ``job_timeout_s``."""
        job = self.submit(items)
        if job["status"] not in FINAL_STATUSES:
            job = self.wait(job["job_id"], job_timeout_s, poll_s)
        if job["status"] not in FINAL_STATUSES:
            raise TimeoutError(f"job {job['job_id']} still {job['status']} after {job_timeout_s:g} s")
        return job

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
