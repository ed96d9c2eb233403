"""Job leases: a crashed worker's job runs again within one lease, not after arq's time-out.

arq marks a job it starts with ``arq:in-progress:{id}`` and, while that key exists, no other
worker picks the job up. arq gives the key the job's whole time-out (hours here), so a worker
killed with ``kill -9`` would strand its job for that long. The worker instead creates the key
with a time to live of one lease (``QRS_JOB_LEASE``, 15 s; see ``worker/app.py``) and this
keeper renews it every third of a lease while the job runs. When the worker dies the renewals
stop, the key expires, and the next worker polling the queue takes the job over (arq counts
it as a new try; ``worker/tasks.py`` fails it after ``QRS_MAX_ATTEMPTS``). A worker that was
only cut off, not dead, may still finish its attempt after the takeover: its final write is
fenced by the job store (the record names the new attempt), so the job completes once.
"""

from __future__ import annotations

import asyncio
import logging

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from qiskit_runtime_server.shared.aio import cancel_and_wait

logger = logging.getLogger("qrs.worker")


class LeaseKeeper:
    """Renews the in-progress keys of the jobs this worker is running.

    Args:
        redis: the worker's Redis client.
        lease: seconds a job stays claimed without renewal.
        worker_id: written into the key, so an operator can see who holds a job.
    """

    def __init__(self, redis: Redis, lease: float, worker_id: str) -> None:
        self.redis, self.lease, self.worker_id = redis, lease, worker_id
        self._renewers: dict[str, asyncio.Task[None]] = {}

    @property
    def current_jobs(self) -> list[str]:
        """Ids of the jobs held now."""
        return list(self._renewers)

    def hold(self, job_id: str) -> None:
        """Start renewing ``job_id``'s lease (arq ``on_job_start``)."""
        if job_id not in self._renewers:
            self._renewers[job_id] = asyncio.create_task(self._renew(job_id), name=f"lease-{job_id}")

    async def release(self, job_id: str) -> None:
        """Stop renewing; arq deletes the key itself when the job ends (``on_job_end``)."""
        task = self._renewers.pop(job_id, None)
        await cancel_and_wait(task)

    async def close(self) -> None:
        for job_id in self.current_jobs:
            await self.release(job_id)

    async def _renew(self, job_id: str) -> None:
        key = in_progress_key_prefix + job_id
        ms = int(self.lease * 1000)
        while True:
            # arq's claim has just given the key one lease (``in_progress_timeout_s``): the
            # first renewal is due a third of a lease later, not at once.
            await asyncio.sleep(self.lease / 3)
            try:
                renewed = await self.redis.pexpire(key, ms)
                if not renewed and not await self.redis.set(key, self.worker_id, px=ms, nx=True):
                    # Our lease lapsed (Redis was unreachable longer than a lease) and another
                    # worker took the job: both run it, and the job store's fence
                    # (JobStore.finish with this attempt's Claim) refuses our result.
                    logger.warning(
                        "lease of job %s lapsed and was taken over; this worker's result will be fenced",
                        job_id,
                        extra={"job_id": job_id},
                    )
            except RedisError as exc:
                logger.warning("could not renew the lease of job %s: %s", job_id, exc, extra={"job_id": job_id})
