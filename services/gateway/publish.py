"""Publish a job's tasks to the Celery queue by name (services/common/jobs.py ``TASK_NAME``), without importing
the worker: a producer-only Celery app on the same broker, queue and key prefix the worker consumes from."""

from __future__ import annotations

from functools import cached_property

from celery import Celery
from kombu import Queue
from prometheus_client import Counter

from services.common.jobs import TASK_NAME, celery_key_prefix, task_id
from services.gateway.settings import GatewaySettings

TASKS = Counter("rvpo_gateway_tasks_total", "Celery tasks published", ["source"])


class Publisher:
    """Sends ``rvpo.score`` tasks ``[job_id, index, source]`` to ``RVPO_CELERY_QUEUE`` on ``RVPO_REDIS_URL``."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings

    @cached_property
    def app(self) -> Celery:
        s = self.settings
        app = Celery("rvpo-gateway", broker=s.redis_url)
        app.conf.update(
            task_serializer="json", accept_content=["json"], task_default_queue=s.celery_queue,
            task_queues=[Queue(s.celery_queue, routing_key=s.celery_queue)],  # as the worker declares it
            task_default_routing_key=s.celery_queue,
            broker_connection_retry_on_startup=True,
            broker_transport_options={"global_keyprefix": celery_key_prefix(s.key_prefix),
                                      "socket_timeout": 30, "socket_connect_timeout": 5},
        )
        return app

    def publish(self, job_id: str, plan: list[dict]) -> None:
        """One task per (item, source) of ``plan``, deterministic ids ``<job>:<index>:<source>`` (blocking; run it
        in a thread). One broker connection and kombu's publish batch: the LPUSHes go to Redis in pipelines."""
        queue = self.settings.celery_queue
        with self.app.producer_or_acquire() as producer, producer.batch(max_size=512):
            for i, p in enumerate(plan):
                for source in p["sources"]:
                    self.app.send_task(TASK_NAME, args=[job_id, i, source], task_id=task_id(job_id, i, source),
                                       queue=queue, routing_key=queue, producer=producer)
                    TASKS.labels(source).inc()
