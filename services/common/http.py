"""HTTP pieces every service shares: bearer-token auth, request-size limit, validation errors, probes and
Prometheus metrics.

A service calls :func:`install_common` once on its FastAPI app and adds ``Depends(require_token(settings))``
to its routers. The probes (`/livez`, `/readyz`) and `/metrics` never need the token.
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

from contracts.values import sanitize
from services.common.settings import CommonSettings

_bearer = HTTPBearer(auto_error=False)

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
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), settings.api_token.encode()):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or invalid bearer token (Authorization: Bearer <RVPO_API_TOKEN>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def install_common(
    app: FastAPI,
    *,
    max_body_bytes: int,
    ready_check: Callable[[], Awaitable[tuple[bool, str]]] | None = None,
) -> None:
    """Add the body-size limit (413), JSON-safe validation errors (422), a 503 for Redis outages, `/livez`,
    `/readyz` and `/metrics`.

    ``ready_check`` is an async callable returning ``(ok, detail)``; `/readyz` answers 503 with the detail when
    it is not ok. Requests whose ``Content-Length`` exceeds ``max_body_bytes`` get 413 before the body is read;
    a chunked body is counted as it streams and cut off at the limit.
    """
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return _too_large(max_body_bytes)
        if length is None and request.method in {"POST", "PUT", "PATCH"}:
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body_bytes:
                    return _too_large(max_body_bytes)
            request._body = body  # Starlette reads the cached body downstream
        return await call_next(request)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # Redis restarting or unreachable: a clear, retryable 503 instead of a bare 500
        return JSONResponse({"detail": f"redis unavailable, retry: {type(exc).__name__}: {exc}"}, status_code=503,
                            headers={"Retry-After": "1"})

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
