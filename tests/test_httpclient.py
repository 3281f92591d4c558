"""The one HTTP policy (services/common/httpclient.py): what each caller retries, by the rules its docstring
states — the worker never retries a timeout (its time budget is spent) and only 502/503/504; clients of the
gateway retry every transport error and 408/429/5xx; nobody retries another 4xx."""

from __future__ import annotations

import httpx
import pytest

from services.common.httpclient import GATEWAY_CALL, SERVICE_CALL, RetryPolicy

REQ = httpx.Request("POST", "http://127.0.0.1:1/v1/score")


def status(code: int) -> httpx.HTTPStatusError:
    return httpx.HTTPStatusError("x", request=REQ, response=httpx.Response(code, request=REQ))


@pytest.mark.parametrize("exc, worker, client", [
    (httpx.ConnectError("refused", request=REQ), True, True),
    (httpx.ConnectTimeout("slow connect", request=REQ), True, True),
    (httpx.RemoteProtocolError("closed", request=REQ), True, True),
    (httpx.ReadTimeout("no answer", request=REQ), False, True),
    (status(503), True, True),
    (status(502), True, True),
    (status(500), False, True),
    (status(429), False, True),
    (status(408), False, True),
    (status(422), False, False),
    (status(409), False, False),
    (status(401), False, False),
    (ValueError("not JSON serialisable"), False, False),
])
def test_who_retries_what(exc, worker, client):
    assert SERVICE_CALL.retryable(exc) is worker
    assert GATEWAY_CALL.retryable(exc) is client


def test_attempts_are_bounded_and_the_last_error_is_raised():
    calls = []

    def send() -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, request=REQ)

    with pytest.raises(httpx.HTTPStatusError):
        RetryPolicy(attempts=3, backoff_s=0.0).call(send)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(httpx.HTTPStatusError):
        RetryPolicy(attempts=3, backoff_s=0.0).call(lambda: calls.append(1) or httpx.Response(422, request=REQ))
    assert len(calls) == 1
