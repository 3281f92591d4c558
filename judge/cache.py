"""Redis verdict cache. Key = ``{prefix}:{sha256(...)}`` of (backend model, template version, conversation,
completion, criterion, points) - exactly what the verdict depends on (tags and the nonce do not). Only
non-null verdicts are stored, with a TTL. A Redis failure is counted and treated as a miss: grading goes on."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from judge import metrics

log = logging.getLogger(__name__)


def cache_key(prefix: str, *, model: str, template_version: str, prompt: Sequence[Mapping],
              completion: str, criterion: str, points: float) -> str:
    """Cache key of one verdict. ``prompt`` is the list of {role, content}; points are hashed as floats
    (7 and 7.0 are the same item)."""
    payload = json.dumps(
        [model, template_version, [[m["role"], m["content"]] for m in prompt], completion, criterion,
         float(points)],
        ensure_ascii=False, separators=(",", ":"),
    )
    return f"{prefix}:{hashlib.sha256(payload.encode()).hexdigest()}"


class VerdictCache:
    """MGET / pipelined SET EX over redis.asyncio."""

    def __init__(self, redis_url: str, ttl_s: int):
        self.ttl_s = ttl_s
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    async def get_many(self, keys: Sequence[str]) -> list[dict | None]:
        """Cached verdict dicts (``criteria_met``, ``explanation``, ``raw``) or None per key."""
        if not keys:
            return []
        try:
            values = await self.redis.mget(list(keys))
        except RedisError as exc:
            metrics.CACHE_ERRORS.labels("get").inc()
            log.warning("verdict cache read failed: %s", exc)
            return [None] * len(keys)
        out = []
        for v in values:
            try:
                out.append(json.loads(v) if v is not None else None)
            except ValueError:
                out.append(None)
        hits = sum(o is not None for o in out)
        metrics.CACHE_LOOKUPS.labels("hit").inc(hits)
        metrics.CACHE_LOOKUPS.labels("miss").inc(len(out) - hits)
        return out

    async def set_many(self, entries: Mapping[str, dict]) -> None:
        """Store each verdict dict under its key for ``ttl_s`` seconds."""
        if not entries:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, value in entries.items():
                    pipe.set(key, json.dumps(value, ensure_ascii=False), ex=self.ttl_s)
                await pipe.execute()
        except RedisError as exc:
            metrics.CACHE_ERRORS.labels("set").inc()
            log.warning("verdict cache write failed: %s", exc)

    async def aclose(self) -> None:
        await self.redis.aclose()
