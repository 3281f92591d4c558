"""One HTTP policy for every client in the stack: which failures are retried, how long to back off, and how a
client is made (httpx + tenacity). Callers differ only in the parameters of :class:`RetryPolicy`:

- the worker calling the judge / rules service (:data:`SERVICE_CALL`): connection failures and 502/503/504
  only, never a timeout (the call's time budget is spent), inside the time left before the job's deadline;
- clients of the gateway (:data:`GATEWAY_CALL`: `rvpo score`, the demo, ``trainer.reward_client``): every
  transport error (timeouts included: ``POST /v1/score`` is safe to retry with its ``Idempotency-Key``) and
  408/429/5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried and how often.

    attempts: tries in all (>= 1); statuses: HTTP status codes worth another try; timeouts: whether a read /
    write / pool timeout is retried (connection failures always are); backoff_s / backoff_max_s: exponential
    backoff (seconds) between tries; within_s: stop retrying once this many seconds have passed (None: no bound).
    """

    attempts: int = 3
    statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
    timeouts: bool = True
    backoff_s: float = 0.2
    backoff_max_s: float = 5.0
    within_s: float | None = None

    def retryable(self, exc: BaseException) -> bool:
        """Whether ``exc`` (raised by httpx or by ``raise_for_status``) deserves another try."""
        if isinstance(exc, httpx.HTTPStatusError):
            return exc.response.status_code in self.statuses
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return self.timeouts
        return isinstance(exc, httpx.TransportError)

    def with_(self, **changes) -> "RetryPolicy":
        return replace(self, **changes)

    def retrying(self) -> Retrying:
        """A tenacity controller for this policy; it re-raises the last exception when the tries are spent."""
        stop = stop_after_attempt(max(self.attempts, 1))
        if self.within_s is not None:
            stop = stop | stop_after_delay(self.within_s)
        return Retrying(retry=retry_if_exception(self.retryable), stop=stop, reraise=True,
                        wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s))

    def call(self, fn: Callable[[], httpx.Response]) -> httpx.Response:
        """``fn()`` (which sends one request) under this policy; a 4xx/5xx answer raises HTTPStatusError."""

        def once() -> httpx.Response:
            resp = fn()
            resp.raise_for_status()
            return resp

        return self.retrying()(once)


#: The worker -> judge / rules call (set ``attempts`` from RVPO_WORKER_HTTP_MAX_RETRIES, ``within_s`` per call).
SERVICE_CALL = RetryPolicy(attempts=3, statuses=frozenset({502, 503, 504}), timeouts=False, backoff_s=0.2,
                           backoff_max_s=2.0)
#: Clients of the gateway.
GATEWAY_CALL = RetryPolicy()


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``token`` (none when it is unset or empty)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def make_client(base_url: str = "", token: str | None = None, timeout_s: float = 30.0,
                connect_timeout_s: float = 10.0, max_keepalive: int = 4) -> httpx.Client:
    """An httpx client with the stack's defaults: bearer token, timeouts (seconds), a small keep-alive pool."""
    return httpx.Client(base_url=base_url.rstrip("/"), headers=bearer(token),
                        timeout=httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s)),
                        limits=httpx.Limits(max_keepalive_connections=max_keepalive))

