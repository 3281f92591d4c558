"""Gateway settings (environment, prefix ``RVPO_``), read by pydantic-settings."""

from __future__ import annotations

from pydantic import Field

from contracts.processes import default_port, local_url
from services.common.settings import CommonSettings, QueueSettings


class GatewaySettings(QueueSettings):
    """Settings of the scoring gateway (``services.gateway.app:app``).

    Environment: ``RVPO_GATEWAY_HOST``, ``RVPO_GATEWAY_PORT``, ``RVPO_JOB_DEADLINE_S``, ``RVPO_JOB_TTL_S``,
    ``RVPO_GATEWAY_MAX_WAIT_S``, ``RVPO_GATEWAY_MAX_ITEMS``, ``RVPO_GATEWAY_MAX_BODY_BYTES`` (plus the shared
    ``RVPO_CELERY_QUEUE``, ``RVPO_REDIS_URL``, ``RVPO_API_TOKEN``, ``RVPO_KEY_PREFIX``).
    """

    gateway_host: str = Field("127.0.0.1", description="Interface `rvpo serve gateway` binds.")
    gateway_port: int = Field(default_port("gateway"), ge=1, le=65535,
                              description="Port `rvpo serve gateway` listens on.")
    job_deadline_s: float = Field(
        600.0, gt=0, description="Seconds after submission when missing results become NaN and the job ends.")
    job_ttl_s: int = Field(86400, gt=0, description="Seconds a job and its results stay in Redis.")
    gateway_max_wait_s: float = Field(600.0, ge=0, description="Upper bound of the `?wait=` query parameter.")
    gateway_max_items: int = Field(4096, ge=1, description="Items per `POST /v1/score` (more: 413).")
    gateway_max_body_bytes: int = Field(64 * 2**20, ge=1024, description="Request body size (more: 413).")


class GatewayClientSettings(CommonSettings):
    """What a client of the gateway reads (`rvpo score`, `rvpo train`, the demo, ``trainer.reward_client``):
    ``RVPO_GATEWAY_URL`` and the shared ``RVPO_API_TOKEN`` (sent as the bearer token)."""

    gateway_url: str = Field(local_url("gateway"),
                             description="Gateway URL for clients (`rvpo score`, `rvpo train`, the reward client).")
