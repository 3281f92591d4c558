"""Shared fixtures. Real Redis on 127.0.0.1:6379 is required (it runs on every dev and CI machine)."""

from __future__ import annotations

import pytest
import redis

from tests.procs import REDIS_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:  # a clear message beats a cascade of connection errors
        pytest.fail(f"Redis is required at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2 model + locally trained tokenizer, saved once per test session."""
    from rvpo.demo.tinymodel import build_tiny_qwen2

    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))
