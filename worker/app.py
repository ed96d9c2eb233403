"""Builds the arq ``Worker``: functions, start-up (child runner) and shutdown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from arq import Worker
from arq.connections import ArqRedis, log_redis_info
from arq.typing import WorkerCoroutine
from arq.worker import func
from redis import exceptions as redis_errors

from qiskit_runtime_server.shared.logs import job_id_var
from qiskit_runtime_server.shared.queue import RUN_JOB
from qiskit_runtime_server.shared.settings import Settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.doorbell import Doorbell
from qiskit_runtime_server.worker.heartbeat import Heartbeat
from qiskit_runtime_server.worker.leases import LeaseKeeper
from qiskit_runtime_server.worker.recovery import OrphanSweeper
from qiskit_runtime_server.worker.runner import ProgramRunner
from qiskit_runtime_server.worker.tasks import run_job

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

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        if self.doorbell is not None:
            self.doorbell.ring()  # the slot is free: look for the next queued job now

    async def finish_job(self, job_id: str, finish: bool, *args: Any, **kwargs: Any) -> None:
        """arq's end-of-job cleanup, skipped for a job whose result was fenced: its queue entry,
        retry counter and in-progress key belong to the worker that took it over; deleting them
        would drop that worker's lease and let the orphan sweep queue the job once more with its
        attempt count reset."""
        fenced: set[str] = self.ctx.get("fenced", set())
        if job_id in fenced:
            fenced.discard(job_id)
            return
        await super().finish_job(job_id, finish, *args, **kwargs)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        try:
            await super().start_jobs(job_ids)
        except (redis_errors.WatchError, redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            logger.warning("Redis connection lost while claiming a job (%s); retrying", exc)
            self._release_sem_dec_counter_on_complete()


class EmbeddedWorker(QrsWorker):
    """The worker that runs on fakeredis inside the API process (``INFO`` is not in fakeredis)."""

    log_redis_info = False


def build_worker(settings: Settings, pool: ArqRedis, *, embedded: bool = False) -> Worker:
    """An arq worker consuming ``settings.queue_name`` on ``pool``, one job at a time.

    One job at a time because each worker owns one simulation process (one GPU when pinned);
    scale by adding workers. Jobs are claimed for one lease (``settings.job_lease``) renewed
    while they run (``worker/leases.py``), and the worker publishes heartbeats
    (``worker/heartbeat.py``); non-final jobs that arq lost are queued again
    (``worker/recovery.py``). On SIGTERM it stops taking jobs, lets the running one finish for
    up to ``settings.shutdown_grace`` seconds, then hands it back to the queue and exits.
    """
    runner = ProgramRunner(settings.device, settings.preload, settings.job_memory_limit)
    worker_id = settings.effective_worker_id
    leases = LeaseKeeper(pool, settings.job_lease, worker_id)
    heartbeat = Heartbeat(pool, settings, worker_id, leases)
    sweeper = OrphanSweeper(pool, settings.queue_name, settings.job_lease)
    doorbell = Doorbell(pool, settings.queue_name)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx.update(store=JobStore(pool, settings.job_retention), runner=runner, settings=settings, worker_id=worker_id)
        await runner.start()
        await doorbell.start()
        await heartbeat.start()
        sweeper.start()
        logger.info("worker %s ready (device %s, queue %s)", worker_id, settings.device, settings.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await doorbell.stop()
        await sweeper.stop()
        await leases.close()
        await heartbeat.stop()
        await runner.close()

    async def job_start(ctx: dict[str, Any]) -> None:
        job_id_var.set(ctx["job_id"])  # the job's task and arq's own job lines inherit it
        leases.hold(ctx["job_id"])
        await heartbeat.beat_now()

    async def job_end(ctx: dict[str, Any]) -> None:
        await leases.release(ctx["job_id"])
        if not ctx.get("waiting_turn"):  # handed back until its session's turn (worker/tasks.py)
            heartbeat.jobs_done += 1
        await heartbeat.beat_now()

    cls = EmbeddedWorker if embedded else QrsWorker
    worker = cls(
        # cast: arq's WorkerCoroutine protocol takes ctx as a plain dict, ours is a TypedDict.
        functions=[func(cast(WorkerCoroutine, run_job), name=RUN_JOB, timeout=settings.max_execution_time + 60)],
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
    worker.doorbell = doorbell
    return worker
