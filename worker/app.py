"""Builds the arq ``Worker``: functions, start-up (child runner) and shutdown."""

from __future__ import annotations

import logging
from typing import Any

from arq import Worker
from arq.connections import ArqRedis
from arq.utils import poll
from arq.worker import func
from redis import exceptions as redis_errors

from shared.logs import job_id_var
from shared.queue import RUN_JOB
from shared.settings import Settings
from shared.store import JobStore
from worker.heartbeat import Heartbeat
from worker.leases import LeaseKeeper
from worker.recovery import OrphanSweeper
from worker.runner import ProgramRunner
from worker.tasks import run_job

logger = logging.getLogger("qrs.worker")


class QrsWorker(Worker):
    """arq's ``Worker``, surviving a Redis restart while it claims a job.

    The connection retries of ``shared.queue`` cover plain commands and MULTI/EXEC, but a
    connection lost between WATCH and EXEC raises ``WatchError`` from inside arq's
    ``start_jobs``, after it counted the job as started; that would end the polling loop (and
    leave the slot taken). The slot is given back and the job stays queued for the next poll.
    """

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except (redis_errors.WatchError, redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            logger.warning("Redis connection lost while claiming a job (%s); retrying", exc)
            self._release_sem_dec_counter_on_complete()


class EmbeddedWorker(QrsWorker):
    """A ``Worker`` that runs on fakeredis inside the API process.

    arq's ``main`` logs ``INFO`` from Redis at start-up, a command fakeredis does not have;
    everything else is arq's own polling loop.
    """

    async def main(self) -> None:
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        async for _ in poll(self.poll_delay_s):
            await self._poll_iteration()


def build_worker(settings: Settings, pool: ArqRedis, *, embedded: bool = False) -> Worker:
    """An arq worker consuming ``settings.queue_name`` on ``pool``, one job at a time.

    One job at a time because each worker owns one simulation process (one GPU when pinned);
    scale by adding workers. Jobs are claimed for one lease (``settings.job_lease``) renewed
    while they run (``worker/leases.py``), and the worker publishes heartbeats
    (``worker/heartbeat.py``); non-final jobs that arq lost are queued again
    (``worker/recovery.py``). On SIGTERM it stops taking jobs, lets the running one finish for
    up to ``settings.shutdown_grace`` seconds, then hands it back to the queue and exits.
    """
    runner = ProgramRunner()
    worker_id = settings.effective_worker_id
    leases = LeaseKeeper(pool, settings.job_lease, worker_id)
    heartbeat = Heartbeat(pool, settings, worker_id, leases)
    sweeper = OrphanSweeper(pool, settings.queue_name, settings.job_lease)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx.update(store=JobStore(pool), runner=runner, settings=settings, worker_id=worker_id)
        runner.start()
        await heartbeat.start()
        sweeper.start()
        logger.info("worker %s ready (device %s, queue %s)", worker_id, settings.device, settings.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await sweeper.stop()
        await leases.close()
        await heartbeat.stop()
        runner.close()

    async def job_start(ctx: dict[str, Any]) -> None:
        job_id_var.set(ctx["job_id"])  # the job's task and arq's own job lines inherit it
        leases.hold(ctx["job_id"])
        await heartbeat.beat_now()

    async def job_end(ctx: dict[str, Any]) -> None:
        await leases.release(ctx["job_id"])
        heartbeat.jobs_done += 1
        await heartbeat.beat_now()

    cls = EmbeddedWorker if embedded else QrsWorker
    worker = cls(
        functions=[func(run_job, name=RUN_JOB, timeout=settings.max_execution_time + 60)],
        redis_pool=pool,
        queue_name=settings.queue_name,
        on_startup=startup,
        on_shutdown=shutdown,
        on_job_start=job_start,
        on_job_end=job_end,
        max_jobs=1,
        poll_delay=settings.poll_delay,
        max_tries=settings.max_attempts + 1,
        # Our JobRecord is the result of record; arq's own result key would be a second copy.
        keep_result=0,
        handle_signals=not embedded,
        job_completion_wait=int(settings.shutdown_grace),
    )
    # arq claims a job for its whole time-out plus 10 s; claim it for one lease instead.
    worker.in_progress_timeout_s = settings.job_lease
    return worker
