"""The arq queue shared by the API (enqueue) and the workers (consume).

The API enqueues only a job id; the worker loads the record, params and options from the
JobStore. The arq job id equals the runtime job id, so a repeated enqueue of the same job is a
no-op. A new job is queued by :func:`queue_commands` inside the transaction that stores its
record (``JobStore.create``): a record exists only together with its queue entry, so a failed
submission leaves nothing that the orphan sweep could run after the client has re-POSTed it.

Connections ride out a Redis restart: every command (and every MULTI/EXEC pipeline) is retried
on connection errors with a capped exponential back-off for about ``REDIS_RETRY_SECONDS``, so
API and workers keep going when Redis comes back instead of failing requests or exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import fakeredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import Serializer, serialize_job
from arq.utils import timestamp_ms
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError, WatchError

from qiskit_runtime_server.shared import keys

RUN_JOB = "runtime.run_job"

# How long one Redis command keeps retrying while Redis is unreachable (restart, failover).
REDIS_RETRY_SECONDS = 30
_BACKOFF_CAP = 1.0


def redis_settings(redis_url: str) -> RedisSettings:
    """arq ``RedisSettings`` for ``redis_url`` with retries on connection errors and time-outs."""
    settings = RedisSettings.from_dsn(redis_url)
    settings.retry_on_error = [ConnectionError, TimeoutError, OSError]
    settings.retry = Retry(ExponentialBackoff(cap=_BACKOFF_CAP, base=0.05), int(REDIS_RETRY_SECONDS / _BACKOFF_CAP))
    settings.conn_retries = REDIS_RETRY_SECONDS
    return settings


async def connect(redis_url: str | None) -> ArqRedis:
    """An ``ArqRedis`` pool on ``redis_url``; ``None`` gives a fresh in-memory (fakeredis) server.

    Raises:
        redis.exceptions.ConnectionError: the Redis at ``redis_url`` stays unreachable for
            about ``REDIS_RETRY_SECONDS``.
    """
    if redis_url is None:
        fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return ArqRedis(connection_pool=fake.connection_pool)
    return await create_pool(redis_settings(redis_url), retry=3)


async def enqueue_run(pool: ArqRedis, queue_name: str, job_id: str, attempts: int = 5) -> None:
    """Queue the execution of runtime job ``job_id``.

    Idle workers are woken through ``qrs:enqueued``. arq answers ``None`` both for "already
    queued or run" and when the connection broke inside
    its WATCH/MULTI transaction; arq's job and result keys tell the two apart, and the lost
    case is retried.

    Raises:
        redis.exceptions.ConnectionError: Redis stayed unreachable.
    """
    for attempt in range(attempts):
        try:
            await pool.enqueue_job(RUN_JOB, job_id, _job_id=job_id, _queue_name=queue_name)
            async with pool.pipeline(transaction=False) as pipe:
                pipe.exists(job_key_prefix + job_id, result_key_prefix + job_id)
                # Ring the workers' doorbell (worker/doorbell.py): an idle worker starts now,
                # not at its next poll.
                pipe.publish(keys.ENQUEUED_CHANNEL, queue_name)
                queued, _ = await pipe.execute()
            if queued:
                return
        except WatchError:
            pass
        await asyncio.sleep(0.1 * (attempt + 1))
    raise ConnectionError(f"job {job_id} could not be queued")


def queue_commands(
    pipe: Any, queue_name: str, job_id: str, serializer: Serializer | None = None, defer_seconds: float = 0.0
) -> None:
    """Queue on ``pipe`` (a MULTI) what ``enqueue_job(RUN_JOB, job_id, _job_id=job_id)`` writes,
    and ring the workers' doorbell (published when the transaction commits).

    ``defer_seconds``: what ``enqueue_job(..., _defer_by=...)`` does, the entry's score is the
    time it becomes due, so no worker takes the job earlier (IBM-like timing's queue time,
    ``shared/timing.py``); the job key keeps the enqueue time.

    arq's job key (``arq:job:{id}``, serialized with arq's own :func:`arq.jobs.serialize_job`
    and the pool's serializer) and the entry of ``queue_name``, scored by the enqueue time in
    milliseconds as arq does. Unlike ``enqueue_job`` the job key gets no expiry: arq deletes it
    when the job ends, and a live job's keys never expire, so an eviction policy limited to
    keys with a TTL (docs/deployment.md, "Retention") can never drop a queued job.

    Why not ``ArqRedis.enqueue_job`` itself: it runs its own WATCH/MULTI transaction on its own
    connection (three round trips: WATCH, the EXISTS of the job and result keys, then MULTI),
    so the queue entry could not be written in the transaction that stores the job's record,
    and it always gives the job key an expiry. The job key's format stays arq's: it is made by
    arq's own serializer.
    """
    now_ms = timestamp_ms()
    pipe.set(job_key_prefix + job_id, serialize_job(RUN_JOB, (job_id,), {}, None, now_ms, serializer=serializer))
    pipe.zadd(queue_name, {job_id: now_ms + max(0, round(defer_seconds * 1000))})
    # An idle worker starts now, not at its next poll (worker/doorbell.py).
    pipe.publish(keys.ENQUEUED_CHANNEL, queue_name)


async def ring_doorbell(pool: ArqRedis, queue_name: str) -> None:
    """Wake idle workers on ``queue_name`` (``worker/doorbell.py``); best effort, as they also poll."""
    with contextlib.suppress(RedisError):
        await pool.publish(keys.ENQUEUED_CHANNEL, queue_name)
