"""Celery worker settings (environment, prefix ``RVPO_``), read by pydantic-settings.

The time limits are ordered so that nothing hangs and nothing is delivered twice while it still runs:
``worker_judge_timeout_s`` / ``worker_rules_timeout_s`` (one HTTP call) < ``task_soft_time_limit_s``
< ``task_time_limit_s`` < ``broker_visibility_timeout_s`` (after which the Redis transport hands an
unacknowledged task to another worker). :class:`WorkerSettings` refuses any other order.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from contracts.processes import local_url
from services.common.settings import QueueSettings


class WorkerSettings(QueueSettings):
    """Settings of the Celery worker.

    Environment: ``RVPO_JUDGE_SERVICE_URL``, ``RVPO_RULES_SERVICE_URL``, ``RVPO_WORKER_CONCURRENCY``,
    ``RVPO_BROKER_VISIBILITY_TIMEOUT_S``, ``RVPO_BROKER_RESTORE_INTERVAL_S``,
    ``RVPO_TASK_SOFT_TIME_LIMIT_S``, ``RVPO_TASK_TIME_LIMIT_S``, ``RVPO_RESULT_EXPIRES_S``,
    ``RVPO_WORKER_JUDGE_TIMEOUT_S``, ``RVPO_WORKER_RULES_TIMEOUT_S``, ``RVPO_WORKER_HTTP_MAX_RETRIES`` (plus the shared
    ``RVPO_CELERY_QUEUE``, ``RVPO_REDIS_URL``, ``RVPO_API_TOKEN``, ``RVPO_KEY_PREFIX``).

    Raises:
        pydantic.ValidationError: when the time limits are not strictly increasing as described above.
    """

    judge_service_url: str = Field(local_url("judge"), description="Base URL of the judge service.")
    rules_service_url: str = Field(local_url("rules"), description="Base URL of the rules service.")
    worker_concurrency: int = Field(8, ge=1, description="Prefork processes per worker (each runs one task).")
    broker_visibility_timeout_s: float = Field(
        200.0, gt=0, description="Seconds before Redis re-delivers a task whose worker never acknowledged it.")
    broker_restore_interval_s: float = Field(
        10.0, gt=0, description="Seconds between a worker's sweeps for unacknowledged tasks to re-deliver.")
    task_soft_time_limit_s: float = Field(150.0, gt=0, description="Soft limit: the task writes NaN + reason.")
    task_time_limit_s: float = Field(170.0, gt=0, description="Hard limit: the task's process is killed.")
    result_expires_s: int = Field(86400, gt=0, description="Seconds Celery keeps a task's result in Redis.")
    worker_judge_timeout_s: float = Field(120.0, gt=0, description="Timeout of one HTTP call to the judge.")
    worker_rules_timeout_s: float = Field(30.0, gt=0, description="Timeout of one HTTP call to the rules service.")
    worker_http_max_retries: int = Field(
        2, ge=0, description="Retries of a call that failed to connect or got 502/503/504.")

    @model_validator(mode="after")
    def _limits_ordered(self) -> "WorkerSettings":
        slowest_call = max(self.worker_judge_timeout_s, self.worker_rules_timeout_s)
        if not slowest_call < self.task_soft_time_limit_s < self.task_time_limit_s < self.broker_visibility_timeout_s:
            raise ValueError(
                "need max(RVPO_WORKER_JUDGE_TIMEOUT_S, RVPO_WORKER_RULES_TIMEOUT_S) < RVPO_TASK_SOFT_TIME_LIMIT_S < "
                "RVPO_TASK_TIME_LIMIT_S < RVPO_BROKER_VISIBILITY_TIMEOUT_S, got "
                f"{slowest_call} < {self.task_soft_time_limit_s} < {self.task_time_limit_s} < "
                f"{self.broker_visibility_timeout_s}"
            )
        return self
