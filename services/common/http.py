"""HTTP pieces every service shares: bearer-token auth, request-size limit, validation errors, probes and
Prometheus metrics.

A service calls :func:`install_common` once on its FastAPI app (with its token) and adds
``Depends(require_token(settings))`` to its routers. The probes (`/livez`, `/readyz`), `/metrics` and the
OpenAPI pages never need the token. :class:`RequestGuard` checks the token before a byte of the body is read
and counts the body as it streams, so a request without a valid token costs nothing to reject (a 65 MB body
or malformed JSON gets 401, not a parse) and an oversized body is cut off at the limit.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.values import sanitize
from services.common.settings import CommonSettings

_bearer = HTTPBearer(auto_error=False)

#: Seconds a client should wait before retrying while Redis (job store, broker) is unreachable: Redis loads its
#: append-only file and Celery reconnects within a few seconds.
RETRY_AFTER_S = 5
RETRY_AFTER = {"Retry-After": str(RETRY_AFTER_S)}
UNAUTHORIZED = "missing or invalid bearer token (Authorization: Bearer <RVPO_API_TOKEN>)"
#: paths that never need the token
OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def token_matches(presented: str | None, token: str) -> bool:
    """Constant-time comparison of the presented bearer credentials with ``token``."""
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())

#: The error answers every service can give, for the OpenAPI ``responses`` of its routes (422 is FastAPI's own).
ERROR_RESPONSES: dict[int, dict] = {
    400: {"description": "the body could not be read (not UTF-8)"},
    401: {"description": "missing or wrong bearer token (when RVPO_API_TOKEN is set)"},
    413: {"description": "too many items, or a body larger than the configured limit"},
}


def require_token(settings: CommonSettings) -> Callable:
    """FastAPI dependency: 401 unless the request carries ``Authorization: Bearer <RVPO_API_TOKEN>``.

    No-op when ``settings.api_token`` is unset. Compares in constant time.
    """

    async def check(creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        if not settings.api_token:
            return
        if not token_matches(creds.credentials if creds else None, settings.api_token):
            raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=UNAUTHORIZED,
                                headers={"WWW-Authenticate": "Bearer"})

    return check


class RequestGuard:
    """Pure ASGI middleware in front of every route except :data:`OPEN_PATHS`, in this order:

    1. 401 unless ``Authorization: Bearer <api_token>`` (when ``api_token`` is set), before the body is read;
    2. 413 when ``Content-Length`` exceeds ``max_body_bytes``, before the body is read;
    3. the body is counted chunk by chunk as the app reads it (nothing is copied here: linear in its size);
       past ``max_body_bytes`` the client gets 413 and the app sees a disconnect.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_token: str | None = None):
        self.app, self.max_body_bytes, self.api_token = app, max_body_bytes, api_token or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.api_token is not None:
            scheme, _, credentials = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token_matches(credentials.strip(), self.api_token):
                response = JSONResponse({"detail": UNAUTHORIZED}, status_code=status.HTTP_401_UNAUTHORIZED,
                                        headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _too_large(self.max_body_bytes)(scope, receive, send)

        received, rejected = 0, False

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    rejected = True
                    await _too_large(self.max_body_bytes)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:  # once the 413 is out, whatever the app answers to the disconnect is dropped
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


def install_common(
    app: FastAPI,
    *,
    max_body_bytes: int,
    ready_check: Callable[[], Awaitable[tuple[bool, str]]] | None = None,
    api_token: str | None = None,
) -> None:
    """Add :class:`RequestGuard` (token first, then the body-size limit: 401 / 413), JSON-safe validation errors
    (422), a 503 with ``Retry-After`` while Redis is unreachable, `/livez`, `/readyz` and `/metrics` to ``app``.

    ``ready_check`` is an async callable returning ``(ok, detail)``; `/readyz` answers 503 with the detail when
    it is not ok. ``api_token`` (the service's ``RVPO_API_TOKEN``; None or empty: no token) is checked for every
    path but the probes, `/metrics` and the OpenAPI pages before the body is read.
    """
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes, api_token=api_token)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Redis restarting or unreachable: a clear, retryable 503 instead of a bare 500
        return JSONResponse({"detail": f"redis unavailable, retry later: {type(exc).__name__}: {exc}"},
                            status_code=503, headers=RETRY_AFTER)

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        ok, detail = (True, "ok") if ready_check is None else await ready_check()
        return JSONResponse({"status": "ok" if ok else "unavailable", "detail": detail}, status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 (``{"detail": [{"loc", "msg", "type", "input"}, ...]}``), made serialisable: the echoed
    ``input`` may hold NaN, inf or lone surrogates (the very values being rejected), which JSON cannot carry, so
    they are written as ``"NaN"`` / ``"Infinity"`` / ``\\udXXX`` escapes instead of failing with a 500."""
    return JSONResponse({"detail": sanitize(jsonable_encoder(exc.errors()))},
                        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": ["body"], "msg": f"request body larger than {limit} bytes", "type": "too_large"}]},
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    )


def too_many_items(n: int, limit: int) -> HTTPException:
    """The 413 a service raises when a batch has more than its configured number of items."""
    return HTTPException(
        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        detail=[{"loc": ["body", "items"], "msg": f"{n} items, at most {limit} per request", "type": "too_many_items"}],
    )


async def redis_ready(redis_url: str) -> tuple[bool, str]:
    """Ready check that pings Redis (used by services that need it)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
        return True, "redis ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return False, f"redis unreachable: {exc}"
    finally:
        await client.aclose()
