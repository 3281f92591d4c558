"""Checks a command runs before it spends time: is the gateway up and does it take our token, does Redis answer.

Each raises :class:`rvpo.errors.CLIError` with what is wrong and the command or setting that fixes it.
"""

from __future__ import annotations

import httpx

from rvpo.errors import CLIError

START_HINT = "start it with `rvpo up` or set RVPO_GATEWAY_URL"


def gateway_url(url: str | None) -> str:
    """``url``, else ``RVPO_GATEWAY_URL`` (default ``http://127.0.0.1:8000``), without a trailing slash."""
    if url is None:
        from services.gateway.settings import GatewayClientSettings

        url = GatewayClientSettings().gateway_url
    return url.rstrip("/")


def check_gateway(url: str | None = None, token: str | None = None, timeout_s: float = 3.0) -> str:
    """Check that the gateway at ``url`` (None: ``RVPO_GATEWAY_URL``) is ready (``GET /readyz``: Redis
    reachable) and accepts ``token`` (None: ``RVPO_API_TOKEN``). Returns the URL. Raises CLIError."""
    from services.common.httpclient import bearer
    from services.gateway.settings import GatewayClientSettings

    url = gateway_url(url)
    if token is None:
        token = GatewayClientSettings().api_token
    try:
        with httpx.Client(base_url=url, timeout=timeout_s, headers=bearer(token)) as http:
            ready = http.get("/readyz")
            probe = http.get("/v1/jobs/preflight-check") if ready.status_code == 200 else None
    except httpx.HTTPError as exc:
        raise CLIError(f"cannot reach the gateway at {url} ({type(exc).__name__})", START_HINT) from exc
    if ready.status_code != 200:
        detail = _detail(ready)
        hint = "start Redis or set the gateway's RVPO_REDIS_URL" if "redis" in detail.lower() else START_HINT
        raise CLIError(f"the gateway at {url} is not ready: {detail}", hint)
    if probe is not None and probe.status_code == 401:
        raise CLIError(f"the gateway at {url} refused the token (401)",
                       "set RVPO_API_TOKEN to the gateway's token" if token else
                       "the gateway needs a token: set RVPO_API_TOKEN")
    if probe is not None and probe.status_code not in (200, 404):
        raise CLIError(f"{url} answered {probe.status_code} to a job query: is it the rvpo gateway?", START_HINT)
    return url


def check_redis(url: str | None = None, who: str = "this service") -> str:
    """Ping Redis at ``url`` (None: ``RVPO_REDIS_URL``). Returns the URL. Raises CLIError."""
    import redis

    if url is None:
        from services.common.settings import CommonSettings

        url = CommonSettings().redis_url
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        raise CLIError(f"{who} needs Redis, and none answers at {url} ({type(exc).__name__})",
                       "start redis-server (`apt-get install redis-server`), set RVPO_REDIS_URL, or run `rvpo up` "
                       "(it starts a private one)") from exc
    return url


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail") or resp.text)
    except ValueError:
        return f"HTTP {resp.status_code}"
