"""The arq queue shared by the API (enqueue) and the workers (consume).

The API enqueues only a job id; the worker loads the record, params and options from the
JobStore. The arq job id equals the runtime job id, so a repeated enqueue of the same job (the
client re-POSTs on 5xx) is a no-op.
"""

from __future__ import annotations

import fakeredis
from arq.connections import ArqRedis, RedisSettings, create_pool

RUN_JOB = "runtime.run_job"


async def connect(redis_url: str | None) -> ArqRedis:
    """An ``ArqRedis`` pool on ``redis_url``; ``None`` gives a fresh in-memory (fakeredis) server.

    Raises:
        redis.exceptions.ConnectionError: the Redis at ``redis_url`` cannot be reached.
    """
    if redis_url is None:
        fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return ArqRedis(connection_pool=fake.connection_pool)
    return await create_pool(RedisSettings.from_dsn(redis_url), retry=3)


async def enqueue_run(pool: ArqRedis, queue_name: str, job_id: str) -> None:
    """Queue the execution of runtime job ``job_id``."""
    await pool.enqueue_job(RUN_JOB, job_id, _job_id=job_id, _queue_name=queue_name)
