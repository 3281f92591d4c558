"""Celery worker settings (environment, prefix ``RVPO_``), read by pydantic-settings.

The time limits are ordered so that nothing hangs: ``worker_judge_timeout_s`` / ``worker_rules_timeout_s``
(one HTTP call) < ``task_soft_time_limit_s`` < ``task_time_limit_s``. Nothing is delivered twice while it still
runs because a live worker renews the lease of its tasks every ``broker_lease_renew_s``, well inside
``broker_visibility_timeout_s`` (after which the Redis transport hands an unacknowledged task to another
worker); with the lease off (``broker_lease_renew_s = 0``) the visibility timeout must exceed the hard time
limit instead. :class:`WorkerSettings` refuses any other order.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from contracts.processes import local_url
from services.common.settings import QueueSettings


class WorkerSettings(QueueSettings):
    """Settings of the Celery worker.

    Environment: ``RVPO_JUDGE_SERVICE_URL``, ``RVPO_RULES_SERVICE_URL``, ``RVPO_WORKER_CONCURRENCY``,
    ``RVPO_BROKER_VISIBILITY_TIMEOUT_S``, ``RVPO_BROKER_LEASE_RENEW_S``, ``RVPO_BROKER_RESTORE_INTERVAL_S``,
    ``RVPO_TASK_SOFT_TIME_LIMIT_S``, ``RVPO_TASK_TIME_LIMIT_S``,
    ``RVPO_WORKER_JUDGE_TIMEOUT_S``, ``RVPO_WORKER_RULES_TIMEOUT_S``, ``RVPO_WORKER_HTTP_MAX_RETRIES`` (plus the shared
    ``RVPO_CELERY_QUEUE``, ``RVPO_REDIS_URL``, ``RVPO_API_TOKEN``, ``RVPO_KEY_PREFIX``).

    Raises:
        pydantic.ValidationError: when the time limits are not ordered as described above.
    """

    judge_service_url: str = Field(local_url("judge"), description="Base URL of the judge service.")
    rules_service_url: str = Field(local_url("rules"), description="Base URL of the rules service.")
    worker_concurrency: int = Field(8, ge=1, description="Prefork processes per worker (each runs one task).")
    broker_visibility_timeout_s: float = Field(
        30.0, gt=0, description="Seconds after its worker's last lease renewal when Redis re-delivers a task.")
    broker_lease_renew_s: float = Field(
        5.0, ge=0, description="Seconds between a worker's renewals of the lease of the tasks it holds (0: off).")
    broker_restore_interval_s: float = Field(
        5.0, gt=0, description="Seconds between a worker's sweeps for unacknowledged tasks to re-deliver.")
    task_soft_time_limit_s: float = Field(150.0, gt=0, description="Soft limit: the task writes NaN + reason.")
    task_time_limit_s: float = Field(170.0, gt=0, description="Hard limit: the task's process is killed.")
    worker_judge_timeout_s: float = Field(120.0, gt=0, description="Timeout of one HTTP call to the judge.")
    worker_rules_timeout_s: float = Field(30.0, gt=0, description="Timeout of one HTTP call to the rules service.")
    worker_http_max_retries: int = Field(
        2, ge=0, description="Retries of a call that failed to connect or got 502/503/504.")

    @model_validator(mode="after")
    def _limits_ordered(self) -> "WorkerSettings":
        slowest_call = max(self.worker_judge_timeout_s, self.worker_rules_timeout_s)
        if not slowest_call < self.task_soft_time_limit_s < self.task_time_limit_s:
            raise ValueError(
                "need max(RVPO_WORKER_JUDGE_TIMEOUT_S, RVPO_WORKER_RULES_TIMEOUT_S) < RVPO_TASK_SOFT_TIME_LIMIT_S < "
                f"RVPO_TASK_TIME_LIMIT_S, got {slowest_call} < {self.task_soft_time_limit_s} < "
                f"{self.task_time_limit_s}")
        v = self.broker_visibility_timeout_s
        if self.broker_lease_renew_s > 0:
            if not 3 * self.broker_lease_renew_s <= v:
                raise ValueError(
                    "need 3 x RVPO_BROKER_LEASE_RENEW_S <= RVPO_BROKER_VISIBILITY_TIMEOUT_S (a live worker's task "
                    f"must survive two missed renewals), got 3 x {self.broker_lease_renew_s} > {v}")
        elif not self.task_time_limit_s < v:
            raise ValueError(
                "with the lease off (RVPO_BROKER_LEASE_RENEW_S=0) need RVPO_TASK_TIME_LIMIT_S < "
                f"RVPO_BROKER_VISIBILITY_TIMEOUT_S, got {self.task_time_limit_s} >= {v}")
        return self
