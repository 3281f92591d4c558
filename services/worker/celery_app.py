"""The Celery application: broker on Redis, configured for at-least-once without duplicates.

``acks_late`` + ``reject_on_worker_lost`` + prefetch 1: a task is acknowledged only after it finished, so a
worker that dies (SIGKILL, OOM, node loss) leaves it unacknowledged and Redis re-delivers it. A live worker
renews the visibility lease of the tasks it holds, so the visibility timeout is short (30 s) and a dead
worker's tasks come back within it; after a Redis outage the tasks Celery cancelled are re-queued at once
(services/worker/redelivery.py). Results go to deterministic Redis fields with HSETNX
(services/worker/tasks.py), so a re-delivered task changes nothing. There is no Celery result backend: the job
store holds the results, and a backend write is what made a cancelled task count as revoked (and be
acknowledged) when Redis went away. Every Redis key of Celery and kombu carries ``RVPO_KEY_PREFIX``
(``global_keyprefix``) so deployments and tests sharing one Redis never see each other.

Run: ``celery -A services.worker.celery_app:celery_app worker --pool prefork --concurrency 8``.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from services.common.jobs import celery_key_prefix
from services.worker.redelivery import UnackedLease
from services.worker.settings import WorkerSettings


def make_celery(settings: WorkerSettings | None = None) -> Celery:
    """Build the Celery app from ``settings`` (default: the environment)."""
    s = settings or WorkerSettings()
    prefix = celery_key_prefix(s.key_prefix)
    app = Celery("rvpo", broker=s.redis_url, include=["services.worker.tasks"],
                 task_cls="services.worker.redelivery:RequeueOnRedisLoss")
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=s.worker_concurrency,
        task_soft_time_limit=s.task_soft_time_limit_s,
        task_time_limit=s.task_time_limit_s,
        task_default_queue=s.celery_queue,
        task_queues=[Queue(s.celery_queue, routing_key=s.celery_queue)],
        task_default_routing_key=s.celery_queue,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport="services.worker.redelivery:RedisTransport",
        broker_transport_options={
            "visibility_timeout": s.broker_visibility_timeout_s,
            "unacked_restore_interval": s.broker_restore_interval_s,
            "unacked_restore_throttle": 1,
            # a worker killed while it holds the sweep's mutex must not stop every sweep for 5 minutes
            "unacked_mutex_expire": max(10, int(s.broker_visibility_timeout_s)),
            "global_keyprefix": prefix,
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
        },
        worker_hijack_root_logger=False,
    )
    app.steps["consumer"].add(UnackedLease)
    app.rvpo_settings = s
    return app


celery_app = make_celery()
