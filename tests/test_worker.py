"""Celery worker: SIGKILL mid-job then a new worker (every item scored exactly once), idempotent re-delivery,
failures turned into NaN + reasons, and the configuration the at-least-once guarantee rests on."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest
import redis

from services.worker.settings import WorkerSettings
from tests.gateway_fixtures import bfcl_item, bfcl_rows, correct_call_text, read_jsonl, running_stack
from tests.procs import REDIS_URL, free_port, unique

# Redis re-delivers a task 6 s after its worker last renewed its lease (every 1 s while the worker lives).
WORKER_ENV = {"RVPO_BROKER_VISIBILITY_TIMEOUT_S": "6", "RVPO_BROKER_LEASE_RENEW_S": "1",
              "RVPO_BROKER_RESTORE_INTERVAL_S": "1",
              "RVPO_TASK_SOFT_TIME_LIMIT_S": "4.5", "RVPO_TASK_TIME_LIMIT_S": "5",
              "RVPO_WORKER_JUDGE_TIMEOUT_S": "4", "RVPO_WORKER_RULES_TIMEOUT_S": "2"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url):
    with running_stack(tmp_path_factory.mktemp("worker-logs"), worker_env=WORKER_ENV, worker_concurrency=2) as s:
        yield s


def slow_items(n: int) -> list[dict]:
    """Items for both sources whose two rubric criteria each make the fake LLM hang on the first request
    (`[[fake:hang*1]]`): the judge times out after 0.8 s, backs off 0.5 s and gets the answer, so a judge task
    takes >= 1.3 s - long enough to kill the worker in the middle of one. Later requests are forced to
    "met" for the first criterion and "not met" for the second."""
    hb = read_jsonl("healthbench_sample.jsonl")[5:5 + n]
    rows = bfcl_rows("simple_python", n)
    items = []
    for h, row in zip(hb, rows):
        completion = correct_call_text(row["ground_truth"])
        rubrics = [dict(c, criterion=c["criterion"] + f" [[fake:hang*1]][[fake:{verdict}]]")
                   for c, verdict in zip(h["rubrics"][:2], ("true", "false"))]
        items.append(dict(bfcl_item(row, completion), rubrics=rubrics))
    return items


def test_sigkill_mid_job_then_new_worker_scores_every_item_exactly_once(stack):
    items = slow_items(6)
    resp = httpx.post(stack.urls["gateway"] + "/v1/score", json={"items": items}, timeout=30)
    assert resp.status_code == 202
    job_id = resp.json()["job_id"]
    # wait until a judge task is running (started, no result yet), then SIGKILL the worker's whole process group
    deadline = time.monotonic() + 30
    while True:
        attempts, res = stack.job_hash(job_id, "attempts"), stack.job_hash(job_id, "res")
        if any(f.endswith(":judge") and f not in res for f in attempts):
            break
        assert time.monotonic() < deadline, "no task started"
        time.sleep(0.05)
    stack.procs["worker"].kill(signal.SIGKILL)
    assert stack.procs["worker"].popen.poll() is not None
    attempts_at_kill = {f: int(v) for f, v in stack.job_hash(job_id, "attempts").items()}
    done_at_kill = set(stack.job_hash(job_id, "res"))
    interrupted = {f for f in attempts_at_kill if f not in done_at_kill}
    assert interrupted, "the kill should interrupt at least one task"
    assert len(done_at_kill) < 2 * len(items)

    stack.start_worker("worker2", concurrency=2, extra_env=WORKER_ENV)
    stack.wait_worker("worker2")
    job = httpx.get(f"{stack.urls['gateway']}/v1/jobs/{job_id}", params={"wait": 60}, timeout=90).json()
    assert job["status"] == "done", job

    # every (item, source) has exactly one result, with the right values
    res = {f: json.loads(v) for f, v in stack.job_hash(job_id, "res").items()}
    assert set(res) == {f"{i}:{s}" for i in range(len(items)) for s in ("judge", "rules")}
    for i, (item, got) in enumerate(zip(items, job["items"])):
        assert got["channels"]["rubric/00"] == item["rubrics"][0]["points"]  # forced met: points * 1
        assert got["channels"]["rubric/01"] == 0.0  # forced not met
        assert got["channels"]["rules/function_name"] == 1.0 and got["bfcl"]["valid"] is True
    # exactly once: tasks finished before the kill never ran again; the interrupted ones ran once more; the ones
    # never started ran once. So the attempt counts add up to one per task plus one per interrupted task.
    attempts = {f: int(v) for f, v in stack.job_hash(job_id, "attempts").items()}
    for f in done_at_kill:
        assert attempts[f] == attempts_at_kill[f] == 1, f
    for f in interrupted:
        assert attempts[f] == 2 and res[f]["attempt"] == 2, f
    assert sum(attempts.values()) == len(res) + len(interrupted)


def test_redelivered_finished_task_changes_nothing(stack):
    """Publish the task of an already-scored (item, source) again, as a broker re-delivery would."""
    from services.worker.celery_app import make_celery
    from services.worker.tasks import TASK_NAME

    row = bfcl_rows("simple_python", 1)[0]
    item = bfcl_item(row, correct_call_text(row["ground_truth"]))
    job = httpx.post(stack.urls["gateway"] + "/v1/score", params={"wait": 30}, json={"items": [item]},
                     timeout=60).json()
    assert job["status"] == "done"
    before = stack.job_hash(job["job_id"], "res"), stack.job_hash(job["job_id"], "attempts")
    app = make_celery(WorkerSettings(key_prefix=stack.prefix, celery_queue=stack.queue))
    task_id = f"again-{job['job_id']}"
    app.send_task(TASK_NAME, args=[job["job_id"], 0, "rules"], queue=stack.queue, task_id=task_id)
    # no Celery result backend (results live in the job store): the worker's log line says what the task returned
    deadline = time.monotonic() + 30
    while not (line := next((ln for p in stack.procs.values() for ln in p.log_text().splitlines()
                             if f"[{task_id}] succeeded" in ln), None)):
        assert time.monotonic() < deadline, "the re-delivered task never ran"
        time.sleep(0.1)
    assert "'written': False" in line and "'skipped': 'already scored'" in line
    assert (stack.job_hash(job["job_id"], "res"), stack.job_hash(job["job_id"], "attempts")) == before


# ----------------------------------------------------------------------------------------------------------
# The task body in this process (real Redis, real sockets): failures become NaN + reasons, never exceptions
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture()
def task_env(monkeypatch, redis_url):
    from services.common.jobs import JobStore
    from services.worker import tasks

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = WorkerSettings(key_prefix=unique("t-wk"), rules_service_url=dead, judge_service_url=dead,
                              worker_http_max_retries=1)
    monkeypatch.setattr(tasks, "SETTINGS", settings)

    def make_job(items: list[dict], deadline_s: float) -> str:
        import redis.asyncio as aioredis

        async def create() -> None:
            client = aioredis.Redis.from_url(REDIS_URL)
            await JobStore(client, settings.key_prefix, 60).create("job1", items, deadline_s)
            await client.aclose()

        asyncio.run(create())
        return "job1"

    yield tasks, make_job, settings
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{settings.key_prefix}:*"))
    if keys:
        r.delete(*keys)


def test_unreachable_service_gives_nan_with_reason(task_env):
    tasks, make_job, settings = task_env
    item = {"id": "x", "prompt": "p", "completion": "c", "tools": [], "ground_truth": [],
            "rubrics": [{"criterion": "a", "points": 1.0}, {"criterion": "b", "points": -2.0}]}
    job_id = make_job([item], 30)
    for source, names in (("rules", 9), ("judge", 2)):
        out = tasks.score.run(job_id, 0, source)
        assert out["written"] is True and out["ok"] is False
        stored = json.loads(redis.Redis.from_url(REDIS_URL).hget(f"{settings.key_prefix}:job:{job_id}:res",
                                                                   f"0:{source}"))
        assert len(stored["channels"]) == names and all(v is None for v in stored["channels"].values())
        assert all(r.startswith(f"{source}_unreachable:") for r in stored["reasons"].values())
        # a second delivery of the same task finds the result and leaves it alone
        assert tasks.score.run(job_id, 0, source)["skipped"] == "already scored"


def test_task_after_the_deadline_does_not_call_the_service(task_env):
    tasks, make_job, settings = task_env
    job_id = make_job([{"id": "x", "prompt": "p", "completion": "c", "tools": []}], 0.05)
    time.sleep(0.1)
    t0 = time.monotonic()
    tasks.score.run(job_id, 0, "rules")
    assert time.monotonic() - t0 < 0.5
    stored = json.loads(redis.Redis.from_url(REDIS_URL).hget(f"{settings.key_prefix}:job:{job_id}:res", "0:rules"))
    assert all(r.startswith("deadline_exceeded:") for r in stored["reasons"].values())


def test_task_that_cannot_reach_redis_gives_its_message_back(monkeypatch):
    """Redis unreachable inside the task: Reject(requeue=True) - a failed late-ack task would be acknowledged,
    its result lost (issue 14)."""
    from celery.exceptions import Reject

    from services.worker import redelivery, tasks

    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    monkeypatch.setattr(tasks, "SETTINGS", WorkerSettings(redis_url=dead, key_prefix=unique("t-wk")))
    monkeypatch.setattr(tasks, "_clients", {})
    monkeypatch.setattr(redelivery, "REQUEUE_PAUSE_S", 0.0)
    with pytest.raises(Reject) as info:
        tasks.score("job1", 0, "rules")  # through the app's base task class, as the worker calls it
    assert info.value.requeue is True and "redis unreachable" in str(info.value.reason)


def test_time_limits_must_be_ordered():
    with pytest.raises(ValueError, match="RVPO_TASK_SOFT_TIME_LIMIT_S"):
        WorkerSettings(task_soft_time_limit_s=10, task_time_limit_s=5)
    with pytest.raises(ValueError, match="RVPO_BROKER_LEASE_RENEW_S=0"):  # lease off: the old ordering
        WorkerSettings(broker_lease_renew_s=0, task_time_limit_s=170, broker_visibility_timeout_s=160)
    with pytest.raises(ValueError, match="3 x RVPO_BROKER_LEASE_RENEW_S"):
        WorkerSettings(broker_lease_renew_s=11, broker_visibility_timeout_s=30)
    # with the lease on the visibility timeout may be far below the task time limit
    assert WorkerSettings(broker_lease_renew_s=5, broker_visibility_timeout_s=15).task_time_limit_s == 170
    with pytest.raises(ValueError, match="RVPO_WORKER_JUDGE_TIMEOUT_S"):
        WorkerSettings(worker_judge_timeout_s=300)


def test_celery_configuration_for_at_least_once():
    from services.worker.celery_app import make_celery

    s = WorkerSettings(key_prefix="pfx", celery_queue="qq")
    conf = make_celery(s).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert conf.broker_transport_options["visibility_timeout"] >= 3 * s.broker_lease_renew_s > 0
    # no result backend: cancelling a task on a Redis outage must not need a write to Redis (issue 14)
    assert conf.result_backend is None and conf.task_ignore_result
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.task_default_queue == "qq"
    assert conf.broker_transport_options["global_keyprefix"] == "pfx:celery:"


def test_any_exception_becomes_nan_with_a_reason_at_once(task_env):
    """An item the gateway would refuse (NaN points) written straight into Redis: httpx cannot encode it
    (ValueError, not a service error). The task still writes null channels with the reason, at once, so the job
    does not wait for its deadline."""
    tasks, make_job, settings = task_env
    job_id = make_job([{"id": "x", "prompt": "p", "completion": "c",
                        "rubrics": [{"criterion": "a", "points": 1.0}, {"criterion": "b", "points": 2.0}]}], 30)
    r = redis.Redis.from_url(REDIS_URL)
    poisoned = {"id": "x", "prompt": "p", "completion": "c",
                "rubrics": [{"criterion": "a", "points": float("nan")}, {"criterion": "b", "points": 2.0}]}
    r.hset(f"{settings.key_prefix}:job:{job_id}:items", "0", json.dumps(poisoned))  # json.dumps writes NaN
    t0 = time.monotonic()
    out = tasks.score.run(job_id, 0, "judge")
    assert time.monotonic() - t0 < 2.0 and out["written"] is True and out["ok"] is False
    stored = json.loads(r.hget(f"{settings.key_prefix}:job:{job_id}:res", "0:judge"))
    assert set(stored["channels"]) == {"rubric/00", "rubric/01"} and not any(stored["channels"].values())
    assert all(reason.startswith("worker_error: ValueError") for reason in stored["reasons"].values()), stored


def test_a_channel_closed_after_its_connection_is_a_connection_error(redis_url):
    """The second close Celery makes after a connection loss (the first one having dropped the channel's pools
    and detached the transport) must fail as a connection error - which the closing code ignores - not as an
    AttributeError that stops the worker ("Unrecoverable error", seen in the Redis-restart scenario)."""
    from kombu import Connection

    from services.worker.redelivery import RedisTransport

    conn = Connection(redis_url, transport=RedisTransport,
                      transport_options={"global_keyprefix": f"{unique('t-wk')}:celery:"})
    channel = conn.default_channel
    channel.qos._delivered["tag-1"] = None  # one unacknowledged message to restore on close
    channel._disconnect_pools()
    conn.transport.client = None  # what kombu's Connection._do_close_transport does
    with pytest.raises(redis.exceptions.ConnectionError):
        channel.close()
    conn.maybe_close_channel(channel)  # the closing code: ignores it
