"""Verdict cache (judge.cache): what the key depends on, a real Redis round trip with TTL, and a Redis outage
treated as a miss (grading goes on)."""

from __future__ import annotations

import asyncio

from judge.cache import VerdictCache, cache_key
from tests.procs import free_port, unique

BASE = dict(model="m", template_version="v1", prompt=[{"role": "user", "content": "hi"}], completion="c",
            criterion="crit", points=5)


def test_key_depends_on_exactly_the_graded_inputs():
    k = cache_key("p", **BASE)
    assert k.startswith("p:") and len(k) == len("p:") + 64
    changed = [dict(BASE, model="m2"), dict(BASE, template_version="v2"),
               dict(BASE, prompt=[{"role": "user", "content": "hi!"}]),
               dict(BASE, prompt=[{"role": "system", "content": "hi"}]), dict(BASE, completion="c2"),
               dict(BASE, criterion="crit2"), dict(BASE, points=-5)]
    keys = {cache_key("p", **kw) for kw in changed}
    assert len(keys) == len(changed) and k not in keys
    assert cache_key("p", **dict(BASE, points=5.0)) == k  # 5 and 5.0 are the same item
    assert cache_key("q", **BASE) != k


def test_round_trip_with_ttl(redis_url):
    prefix = unique("rvpo:judge:test-cache")

    async def main():
        cache = VerdictCache(redis_url, ttl_s=30)
        k1, k2 = cache_key(prefix, **BASE), cache_key(prefix, **dict(BASE, criterion="other"))
        try:
            await cache.set_many({k1: {"criteria_met": True, "explanation": "e", "raw": "r"}})
            got = await cache.get_many([k1, k2])
            ttl = await cache.redis.ttl(k1)
            await cache.redis.delete(k1)
        finally:
            await cache.aclose()
        return got, ttl

    got, ttl = asyncio.run(main())
    assert got == [{"criteria_met": True, "explanation": "e", "raw": "r"}, None]
    assert 0 < ttl <= 30


def test_redis_outage_is_a_miss_not_an_error():
    async def main():
        cache = VerdictCache(f"redis://127.0.0.1:{free_port()}/0", ttl_s=30)  # nothing listens there
        try:
            await cache.set_many({"k": {"criteria_met": True}})
            return await cache.get_many(["k", "k2"])
        finally:
            await cache.aclose()

    assert asyncio.run(main()) == [None, None]
