"""The orphan sweep: a job that is not final but that arq no longer holds is queued again.

Leases (``worker/leases.py``) cover a worker that dies with a job; this covers the rarer ways a
job can drop out of arq while its record still says ``Queued`` or ``Running``: the API died
between storing a job and queuing it, the task failed on an unexpected error (Redis away for
longer than the connection retries) so arq recorded a failure and forgot the job, or the job
waited longer than arq's job-key expiry (one day). Every lease one worker (whichever takes the
``qrs:sweep-lock`` first) looks at the pending jobs and re-queues those with neither an arq job
key nor an in-progress key. The pending jobs are read from the per-backend pending sets
(``qrs:pending:{backend}``, one per catalog backend, kept by the job store), never by scanning
the keyspace, so a sweep costs one round trip per pending job, whatever else Redis holds.
Re-queued jobs count as a new attempt, so ``QRS_MAX_ATTEMPTS`` still bounds them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable

from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.aio import cancel_and_wait
from qiskit_runtime_server.shared.backends import BackendCatalog
from qiskit_runtime_server.shared.queue import enqueue_run
from qiskit_runtime_server.shared.store import JobStore

logger = logging.getLogger("qrs.worker")

SWEEP_LOCK = f"{keys.PREFIX}sweep-lock"


@functools.cache
def catalog_backends() -> tuple[str, ...]:
    """Names of the catalog's backends: the only ones ``POST /jobs`` accepts, so the only pending sets."""
    return tuple(BackendCatalog().names())


async def pending_job_ids(redis: Redis, backends: Iterable[str]) -> list[str]:
    """Ids of the queued or running jobs of ``backends``, from their pending sets (no ``SCAN``)."""
    async with redis.pipeline(transaction=False) as pipe:
        for backend in backends:
            pipe.smembers(keys.pending(backend))
        members = await pipe.execute()
    return [m.decode() if isinstance(m, bytes) else m for group in members for m in group]


async def requeue_orphans(
    pool: ArqRedis, queue_name: str, min_age: float, backends: Iterable[str] | None = None
) -> list[str]:
    """Queue again every non-final job older than ``min_age`` seconds that arq does not hold.

    ``backends``: whose pending sets to read; default every backend of the catalog.
    Returns the ids queued again.
    """
    store = JobStore(pool)
    requeued: list[str] = []
    for job_id in await pending_job_ids(pool, catalog_backends() if backends is None else backends):
        if await pool.exists(in_progress_key_prefix + job_id):
            continue  # a live worker holds it
        if await pool.exists(job_key_prefix + job_id):
            # In arq's queue, held by nobody: its worker died and its lease expired, and no
            # worker was free to take it yet. It reads Queued while it waits (Running again
            # when a worker starts it).
            if await store.requeue(job_id, log=[f"{_now()} WARNING job {job_id} lost its worker; queued again"]):
                logger.warning("job %s lost its worker (lease expired); it is queued again", job_id)
            continue
        record = await store.get(job_id)
        if record is None or record.status.final or time.time() - record.created < min_age:
            continue
        # arq refuses to queue an id whose (failed) result it still keeps.
        await pool.delete(result_key_prefix + job_id)
        await store.requeue(job_id)
        await enqueue_run(pool, queue_name, job_id)
        logger.warning("job %s was %s but not queued; queued it again", job_id, record.status.value)
        requeued.append(job_id)
    return requeued


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class OrphanSweeper:
    """Runs :func:`requeue_orphans` once per ``period`` seconds across all workers."""

    def __init__(self, pool: ArqRedis, queue_name: str, period: float) -> None:
        self.pool, self.queue_name, self.period = pool, queue_name, period
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="orphan-sweep")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            try:
                if await self.pool.set(SWEEP_LOCK, b"1", px=int(self.period * 1000), nx=True):
                    await requeue_orphans(self.pool, self.queue_name, min_age=self.period)
            except RedisError as exc:
                logger.warning("orphan sweep failed: %s", exc)
