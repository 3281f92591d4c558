"""Redelivery of unfinished tasks: nothing lost when Redis restarts, a dead worker's tasks back within seconds.

Celery's Redis transport emulates acknowledgements: a delivered message waits in the ``unacked`` hash, scored
with its delivery time in the ``unacked_index`` sorted set, until the worker acknowledges it; any worker's
periodic sweep (``restore_visible``) puts back on the queue every message older than the visibility timeout.
Three pieces on top of that:

- :class:`UnackedLease` (a consumer bootstep): every ``RVPO_BROKER_LEASE_RENEW_S`` the worker's main process
  re-scores the messages it still holds (reserved or running) to "now" (``ZADD XX``). A live worker's task is
  therefore never older than one renewal interval, so the visibility timeout can be short
  (``RVPO_BROKER_VISIBILITY_TIMEOUT_S``, 30 s) whatever the task time limits: a SIGKILLed or partitioned
  worker stops renewing, and its tasks are re-queued one visibility timeout after its last renewal.
- After a broker connection loss, Celery cancels the running late-ack tasks
  (``worker_cancel_long_running_tasks_on_connection_loss``); their messages stay unacknowledged in Redis.
  When the consumer starts again on the new connection, :class:`UnackedLease` re-queues at once every message
  it held on the old connection and holds no more (:meth:`UnackedLease.requeue_orphans`), instead of letting
  them wait for the visibility timeout.
- :class:`RequeueOnRedisLoss` (the app's base task class): a task that cannot reach Redis for its own reads and
  writes rejects its message with ``requeue=True`` instead of failing (a failed late-ack task is
  acknowledged: that is how results were lost). If Redis is still down, the reject cannot be written either:
  the message stays unacknowledged and is re-queued by the orphan restore or the sweep.

Why this is safe: results are written with HSETNX under deterministic fields (services/worker/tasks.py), so a
task that runs twice - a sweep that raced a renewal, a restore after the task had in fact written its result -
changes nothing; the second run finds the result and returns.

- :class:`RedisTransport` (the worker's broker transport): kombu's Redis transport with one fix. When the
  connection is lost while the consumer's channel waits in BRPOP, Celery closes the connection twice; on the
  second close the channel, its transport already detached, tries to restore its unacknowledged messages and
  fails with ``AttributeError: 'NoneType' object has no attribute 'hostname'`` - not a connection error, so
  the worker stops ("Unrecoverable error") instead of reconnecting. Here that case is a connection error, which
  the close ignores; the messages stay unacknowledged in Redis and are re-queued as above.

Also required, set in services/worker/celery_app.py: no Celery result backend. Cancelling a task on connection
loss first writes its state to the result backend; with Redis down that write raised, the cancellation was
abandoned half-way and the terminated task was then acknowledged as revoked - the lost results of issue 14.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import Task, bootsteps, signals
from celery.exceptions import Reject
from celery.worker import state
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

#: Errors meaning "Redis is unreachable right now" (BusyLoadingError, while it loads its data after a restart,
#: is a ConnectionError).
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
#: Pause before a task that could not reach Redis gives its message back (no hot loop of redeliveries).
REQUEUE_PAUSE_S = 1.0


class RequeueOnRedisLoss(Task):
    """Base task class: Redis unreachable inside the task => ``Reject(requeue=True)``, never a failed task."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except REDIS_DOWN as exc:
            log.warning("task %s[%s]: Redis unreachable (%s); giving the message back", self.name,
                        self.request.id, exc)
            time.sleep(REQUEUE_PAUSE_S)
            raise Reject(f"redis unreachable: {exc}", requeue=True) from exc


class _Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        if self.connection.client is None:  # the kombu connection was closed under this channel
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous)


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport; a channel whose connection was already closed raises a connection error (which
    the closing code ignores) instead of an AttributeError that stops the worker."""

    Channel = _Channel


def held_tags() -> set[str]:
    """Delivery tags of the messages this worker process holds: reserved (waiting for a pool slot) or running,
    not yet acknowledged."""
    for _ in range(3):  # the sets are WeakSets: a request collected mid-iteration raises RuntimeError
        try:
            requests = list(state.reserved_requests) + list(state.active_requests)
            break
        except RuntimeError:
            continue
    else:
        return set()
    tags = set()
    for req in requests:
        msg = getattr(req, "message", None)
        tag = getattr(msg, "delivery_tag", None)
        if tag is not None and not req.acknowledged:
            tags.add(tag.decode() if isinstance(tag, bytes) else str(tag))
    return tags


class UnackedLease(bootsteps.StartStopStep):
    """Consumer bootstep: renew the visibility lease of held messages; re-queue orphans after a reconnect."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, c, **kwargs):
        super().__init__(c, **kwargs)
        self.tref = None
        self.client: redis.Redis | None = None
        #: tag -> last time this worker held it (received or renewed); kept for one visibility timeout
        self.recent: dict[str, float] = {}
        signals.task_received.connect(self._on_received, weak=False)

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self, c) -> None:
        s = c.app.rvpo_settings
        if s.broker_lease_renew_s <= 0:
            return
        self.settings = s
        self.key = f"{c.app.conf.broker_transport_options['global_keyprefix']}unacked_index"
        if self.client is None:
            self.client = redis.Redis.from_url(s.redis_url, socket_timeout=2, socket_connect_timeout=1)
        self.requeue_orphans(c)
        self.renew()
        self.tref = c.timer.call_repeatedly(s.broker_lease_renew_s, self.renew)

    def stop(self, c) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, c) -> None:
        self.stop(c)
        if self.client is not None:
            self.client.close()

    # -- work -----------------------------------------------------------------------------------------------
    def _on_received(self, sender=None, request=None, **_) -> None:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            self.recent[tag.decode() if isinstance(tag, bytes) else str(tag)] = time.time()

    def renew(self) -> None:
        """Re-score every held message to now (only messages still unacknowledged: ``ZADD XX``)."""
        now = time.time()
        tags = held_tags()
        for tag in tags:
            self.recent[tag] = now
        horizon = now - self.settings.broker_visibility_timeout_s
        for tag in [t for t, seen in self.recent.items() if seen < horizon]:
            del self.recent[tag]
        if not tags:
            return
        try:
            self.client.zadd(self.key, {tag: now for tag in tags}, xx=True)
        except redis.RedisError as exc:
            log.warning("could not renew the lease of %d task(s): %s", len(tags), exc)

    def requeue_orphans(self, c) -> None:
        """Re-queue the messages held on the previous connection and no longer held (cancelled on connection
        loss, or finished with an acknowledgement that never reached Redis)."""
        orphans = set(self.recent) - held_tags()
        if not orphans:
            return
        qos = c.task_consumer.channel.qos
        unacked = self.key[: -len("unacked_index")] + "unacked"
        n = 0
        for tag in orphans:
            try:
                if self.client.hexists(unacked, tag):  # else acknowledged (or re-queued) meanwhile
                    qos.restore_by_tag(tag)
                    n += 1
            except redis.RedisError as exc:
                log.warning("could not re-queue task message %s: %s (the sweep will)", tag, exc)
                continue
            del self.recent[tag]
        if n:
            log.warning("re-queued %d unacknowledged task message(s) of the lost broker connection", n)
