"""Settings every service shares, read from the environment (prefix ``RVPO_``) by pydantic-settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Base class for each service's settings; subclasses add their own ``RVPO_*`` fields.

    Environment: ``RVPO_REDIS_URL``, ``RVPO_API_TOKEN``, ``RVPO_KEY_PREFIX``.
    """

    model_config = SettingsConfigDict(env_prefix="RVPO_", extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the queue, job store and cache.")
    api_token: str | None = Field(None, description="When set, every non-probe endpoint needs this bearer token.")
    key_prefix: str = Field("rvpo", description="Prefix of every Redis key (isolates deployments and tests).")


class QueueSettings(CommonSettings):
    """The Celery queue, shared by the gateway (publishes) and the worker (consumes): ``RVPO_CELERY_QUEUE``."""

    celery_queue: str = Field("rvpo", description="Celery queue the gateway publishes to and workers consume.")
