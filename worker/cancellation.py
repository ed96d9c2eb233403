"""Stopping a running job when the API cancels or deletes it.

The API never talks to workers directly: ``POST /jobs/{id}/cancel`` (or ``DELETE``) makes the
record final in Redis. While a job runs, its worker re-reads the record every
:data:`POLL_INTERVAL` seconds; once it is final or gone the worker kills the simulation child
(:meth:`ProgramRunner.stop`), so no CPU/GPU keeps working for a cancelled job and the worker is
free for the next one. Polling one small key, rather than arq's ``abort`` or pub/sub, needs no
extra connection per job, survives a missed message, and works the same on fakeredis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from qiskit_runtime_server.shared.aio import cancel_and_wait
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.runner import ProgramRunner

logger = logging.getLogger("qrs.worker")

# Seconds between checks: bounds the cancel latency of a running job.
POLL_INTERVAL = 0.1


async def _watch(runner: ProgramRunner, store: JobStore, job_id: str) -> None:
    while True:
        await asyncio.sleep(POLL_INTERVAL)
        try:
            record = await store.get(job_id)
        except RedisError:  # a Redis blip must not cancel the job; try again next tick
            logger.warning("cannot read job %s to check for cancellation", job_id, exc_info=True)
            continue
        if record is None or record.status.final:
            # Log before stopping: once the child is dead the run ends and this task is cancelled.
            if record is not None:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                await store.log(job_id, f"{stamp} INFO simulation stopped: the job is {record.status.value}")
            await runner.stop()
            return


async def run_unless_cancelled(runner: ProgramRunner, request: Any, store: JobStore, job_id: str) -> Any:
    """``runner.run(request)``, killed as soon as job ``job_id`` is cancelled or deleted.

    Raises:
        RunnerStopped: the job was cancelled or deleted mid-run (its record is already final).
        ProgramError, RunnerCrashed: as :meth:`ProgramRunner.run`.
    """
    watcher = asyncio.create_task(_watch(runner, store, job_id))
    try:
        return await runner.run(request)
    finally:
        await cancel_and_wait(watcher)
