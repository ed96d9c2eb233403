"""Every change this project makes to arq's ``Worker``, in one place (tested against arq 0.28).

arq is in maintenance mode and its ``Worker`` has no extension points for what the workers need
(docs/architecture.md, "arq: overridden, not replaced"), so :class:`QrsWorker` overrides some of
its methods, two of them private. pyproject.toml bounds arq to the minor release these were
written against, and ``tests/unit/test_library_contracts.py`` fails when the signatures,
attributes or Redis key layout they rely on change. What each override is for:

* ``main`` (rewritten): arq's loop sleeps ``poll_delay`` between polls; ours sleeps on the
  doorbell (``worker/doorbell.py``), so a queued job starts at once; it also seeds ``ctx``
  with the shared ``fenced`` set and skips ``INFO`` on fakeredis. arq's burst mode and its own
  pool creation are left out (the pool is always given).
* ``_poll_iteration`` (private, extended): first lets an idle slot take the other device
  class's work (``shared/routing.py``); a Redis error past the client's retries is logged and
  polling goes on, where arq's loop would end the worker.
* ``_release_sem_dec_counter_on_complete`` (private, extended): rings the doorbell when a job's
  slot is free, so the next queued job starts without waiting for the poll delay.
* ``start_jobs`` (wrapped): a connection lost between arq's WATCH and EXEC raises from inside
  it after it counted the job as started; the slot is given back (the job stays queued).
* ``finish_job`` (wrapped): a job forwarded to the GPU-class queue is moved there instead of
  being cleaned up, and a job whose result was fenced is left to the worker that took it over.
* ``close`` (a copy of arq 0.28's, changed): awaits the job tasks without raising, so a task
  cancelled inside arq's shielded ``finish_job`` does not skip the shutdown hook, and leaves a
  shared pool open (``owns_pool``).

Besides these, ``worker/app.py`` sets ``in_progress_timeout_s`` (arq claims a job for its whole
time-out; we claim it for one lease, ``worker/leases.py``), and other modules read or write arq's
Redis keys directly with arq's own prefixes (``arq.constants``): ``shared/queue.py`` (job key
and queue entry in the JobStore's MULTI), ``shared/routing.py`` (moving entries between
queues), ``worker/leases.py`` (renewing the in-progress key), ``worker/recovery.py`` (the
orphan sweep) and ``worker/tasks.py`` (the retry counter).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from arq import Worker
from arq.connections import log_redis_info
from redis import exceptions as redis_errors

from qiskit_runtime_server.shared.routing import Router
from qiskit_runtime_server.worker.doorbell import Doorbell

logger = logging.getLogger("qrs.worker")


class QrsWorker(Worker):
    """arq's ``Worker``, woken by the doorbell and surviving a Redis restart while claiming a job.

    * Its loop sleeps on a :class:`~worker.doorbell.Doorbell` (rung by the API after each
      enqueue, and locally when a job ends and frees the slot) rather than a fixed poll delay.
    * The connection retries of ``shared.queue`` cover plain commands and MULTI/EXEC, but a
      connection lost between WATCH and EXEC raises ``WatchError`` from inside arq's
      ``start_jobs``, after it counted the job as started; that would end the polling loop (and
      leave the slot taken). The slot is given back and the job stays queued for the next poll.
    """

    doorbell: Doorbell | None = None
    log_redis_info = True
    # Whether close() closes the Redis pool: the all-in-one server's workers share the API's
    # pool, which worker/embedded.py closes once all of them are closed.
    owns_pool = True
    # Device-class routing (shared/routing.py): arq ids that run_job forwarded to the GPU queue.
    router: Router | None = None
    forwarded: set[str]

    # Rewritten: arq's main with the doorbell instead of its fixed poll delay (module docstring).
    async def main(self) -> None:
        if self.log_redis_info:
            await log_redis_info(self.pool, logger.info)
        self.ctx["redis"] = self.pool
        # Ids of jobs whose result this worker had fenced (worker/tasks.py adds them; the
        # per-job ctx is a shallow copy, so the set is shared).
        self.ctx["fenced"] = set()
        if self.on_startup:
            await self.on_startup(self.ctx)
        while True:
            await self._poll_iteration()
            if self.doorbell is None:
                await asyncio.sleep(self.poll_delay_s)
            else:
                await self.doorbell.wait(self.poll_delay_s)

    # Private, extended: the other class's work first; a Redis partition does not end the loop.
    async def _poll_iteration(self) -> None:
        if self.router is not None and self.job_counter < self.max_jobs:
            try:
                await self.router.take_other_work()  # an idle slot takes the other class's work
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                logger.warning("could not look at the other device class's queue (%s)", exc)
        try:
            await super()._poll_iteration()
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            # Redis unreachable past the client's retries (a partition): keep polling instead of
            # letting arq's loop end the worker; its running job's lease lapses and the job runs
            # elsewhere, and this worker picks up work again once Redis answers.
            logger.warning("cannot poll the queue (%s); retrying", exc)

    # Private, extended: arq's done-callback of a job task; a free slot rings the doorbell.
    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        if self.doorbell is not None:
            self.doorbell.ring()  # the slot is free: look for the next queued job now

    # Wrapped: forwarded and fenced jobs skip arq's cleanup.
    async def finish_job(self, job_id: str, finish: bool, *args: Any, **kwargs: Any) -> None:
        """arq's end-of-job cleanup, replaced in two cases.

        A job forwarded to the GPU-class queue (shared/routing.py) is moved there instead: same
        job, other queue. A job whose result was fenced is left alone: its queue entry, retry
        counter and in-progress key belong to the worker that took it over; deleting them would
        drop that worker's lease and let the orphan sweep queue the job once more with its
        attempt count reset.
        """
        if self.router is not None and job_id in self.forwarded:
            self.forwarded.discard(job_id)
            await self.router.forward_to_gpu(job_id)
            return
        fenced: set[str] = self.ctx.get("fenced", set())
        if job_id in fenced:
            fenced.discard(job_id)
            return
        await super().finish_job(job_id, finish, *args, **kwargs)

    # Wrapped: a connection lost inside arq's claim gives the slot back.
    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except (redis_errors.WatchError, redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            logger.warning("Redis connection lost while claiming a job (%s); retrying", exc)
            self._release_sem_dec_counter_on_complete()

    # A copy of arq 0.28's close, changed: job tasks awaited without raising; a shared pool kept open.
    async def close(self) -> None:
        """arq's ``close`` (arq 0.28), also after a job task ended cancelled.

        arq gathers the job tasks, and one cancelled while in arq's shielded ``finish_job``
        makes that gather raise, skipping the shutdown hook (the worker then stayed listed in
        ``/workers`` for a lease). Their ends are awaited here without raising.
        """
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)  # embedded: cancel the running job, as arq does
        if self._pool is None:
            return
        if self.tasks:
            await asyncio.wait(list(self.tasks.values()))
            for task in self.tasks.values():
                if not task.cancelled() and task.exception() is not None:
                    logger.error("job task failed at shutdown", exc_info=task.exception())
            self.tasks.clear()
        await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        if self.owns_pool:
            await self.pool.aclose(close_connection_pool=True)
        self._pool = None
