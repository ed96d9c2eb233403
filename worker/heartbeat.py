"""Worker heartbeats: each worker publishes a :class:`shared.workers.WorkerInfo` every third of
a lease, so ``/workers``, ``/ready`` and ``/metrics`` see which workers are alive, on which
device and host, and what they are running. A worker whose heartbeat stops drops out after one
lease (``QRS_JOB_LEASE``), which is also when its job becomes available to the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from qiskit_runtime_server.shared import workers
from qiskit_runtime_server.shared.aio import cancel_and_wait
from qiskit_runtime_server.shared.settings import Settings
from qiskit_runtime_server.worker.leases import LeaseKeeper

logger = logging.getLogger("qrs.worker")


async def finish_despite_cancellation(work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work`` to its end even if the calling task is cancelled, once or more, meanwhile.

    arq cancels a job's task on SIGTERM, and on some Pythons (Debian's 3.11.2: ``wait_for``
    passes the cancellation on late) the cancellation lands in the ``on_job_end`` hook, in the
    middle of a Redis round trip; the hook then never finished and arq never handed the job
    back. ``work`` runs as its own task behind :func:`asyncio.shield`.

    Returns:
        ``True`` when the caller was cancelled meanwhile (the cancellation is absorbed and
        ``Task.uncancel`` is called, so the caller decides whether to raise it again).
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            await asyncio.shield(task)
            return cancelled
        except asyncio.CancelledError:
            if task.done():  # the work itself was cancelled (loop shutting down)
                return True
            cancelled = True
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()


class Heartbeat:
    """Publishes this worker's registry entry until :meth:`stop`."""

    def __init__(self, redis: Redis, settings: Settings, worker_id: str, leases: LeaseKeeper) -> None:
        self.redis, self.settings, self.leases = redis, settings, leases
        self.jobs_done = 0
        self._task: asyncio.Task[None] | None = None
        self.info = workers.WorkerInfo(
            id=worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            device=settings.device,
            queue=settings.queue_name,
            started=time.time(),
            heartbeat=time.time(),
            visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES") or None,
        )

    async def beat(self) -> None:
        """Publish the entry now (also called when a job starts or ends, so it is current)."""
        jobs = self.leases.current_jobs
        info = self.info
        info.heartbeat, info.current_job, info.jobs_done = time.time(), jobs[0] if jobs else None, self.jobs_done
        await workers.publish(self.redis, info, ttl=self.settings.job_lease)

    async def beat_now(self) -> None:
        """:meth:`beat`, best effort: arq's job hooks must not fail on a Redis hiccup.

        Also not on a cancellation: the publish runs to its end even when the calling task is
        cancelled meanwhile (see :func:`finish_despite_cancellation`), and that cancellation is
        raised again afterwards, for the caller to take or pass on.
        """
        if await finish_despite_cancellation(self._beat_logged()):
            raise asyncio.CancelledError

    async def _beat_logged(self) -> None:
        try:
            await self.beat()
        except RedisError as exc:
            logger.warning("heartbeat failed: %s", exc)

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating and leave the registry (clean shutdown)."""
        await cancel_and_wait(self._task)
        with contextlib.suppress(RedisError):
            await workers.remove(self.redis, self.info.id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_lease / 3)
            await self.beat_now()
