"""Builds the arq ``Worker``: functions, start-up (child runner) and shutdown.

The changes to arq's own ``Worker`` are all in ``worker/arq_overrides.py``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import msgspec
from arq import Worker
from arq.connections import ArqRedis
from arq.typing import WorkerCoroutine
from arq.worker import func
from redis.exceptions import RedisError

from qiskit_runtime_server.shared import faults
from qiskit_runtime_server.shared.logs import job_id_var
from qiskit_runtime_server.shared.queue import RUN_JOB
from qiskit_runtime_server.shared.routing import Router, worker_class
from qiskit_runtime_server.shared.settings import Settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.arq_overrides import QrsWorker
from qiskit_runtime_server.worker.doorbell import Doorbell
from qiskit_runtime_server.worker.embedded import container_memory_mb, container_memory_warning
from qiskit_runtime_server.worker.heartbeat import Heartbeat, finish_despite_cancellation
from qiskit_runtime_server.worker.leases import LeaseKeeper
from qiskit_runtime_server.worker.recovery import OrphanSweeper
from qiskit_runtime_server.worker.runner import ProgramRunner
from qiskit_runtime_server.worker.tasks import run_job

logger = logging.getLogger("qrs.worker")


class EmbeddedWorker(QrsWorker):
    """A worker that runs inside the API process, one of ``QRS_WORKERS`` (worker/embedded.py).

    On fakeredis (``INFO`` is not in fakeredis), or on ``REDIS_URL``; it shares the API's pool.
    """

    log_redis_info = False
    owns_pool = False


def build_worker(settings: Settings, pool: ArqRedis, *, embedded: bool = False, simulation_threads: int = 0) -> Worker:
    """An arq worker consuming its device class's queue on ``pool``, one job at a time.

    The class is ``settings.queue_class`` or ``settings.device``; a GPU-class worker also takes
    CPU-class work when idle, a CPU-class one GPU-class work while no GPU-class worker is live
    (``shared/routing.py``).

    One job at a time because each worker owns one simulation process (one GPU when pinned);
    scale by adding workers (the all-in-one server runs ``QRS_WORKERS`` of these in its one
    process, ``worker/embedded.py``; ``simulation_threads`` is their OpenMP threads per
    simulation, see :class:`~worker.runner.ProgramRunner`). Jobs are claimed for one lease
    (``settings.job_lease``) renewed while they run (``worker/leases.py``), and the worker
    publishes heartbeats (``worker/heartbeat.py``); non-final jobs that arq lost are queued
    again (``worker/recovery.py``). On SIGTERM it stops taking jobs, lets the running one finish for
    up to ``settings.shutdown_grace`` seconds, then hands it back to the queue and exits.
    """
    if not embedded and (problem := container_memory_warning(settings.job_memory_limit, container_memory_mb())):
        logger.warning("%s", problem)
    runner = ProgramRunner(settings.device, settings.preload, settings.job_memory_limit, simulation_threads)
    worker_id = settings.effective_worker_id
    router = Router(pool, settings.queue_name, worker_class(settings.queue_class, settings.device))
    forwarded: set[str] = set()
    leases = LeaseKeeper(pool, settings.job_lease, worker_id)
    # The registry's "queue" is the queue this worker consumes: routing looks for GPU-class ones.
    heartbeat = Heartbeat(pool, msgspec.structs.replace(settings, queue_name=router.own), worker_id, leases)
    sweeper = OrphanSweeper(pool, settings.queue_name, settings.job_lease)
    doorbell = Doorbell(pool, router.own, router.other)

    fault_store = faults.FaultStore(pool) if faults.enabled(settings) else None
    configured_faults = faults.configured_rules(settings)

    async def startup(ctx: dict[str, Any]) -> None:
        if fault_store is not None:
            await faults.install_configured(fault_store, configured_faults)
            ctx["faults"] = fault_store
        ctx.update(
            store=JobStore(pool, settings.job_retention),
            runner=runner,
            settings=settings,
            worker_id=worker_id,
            router=router,
            forwarded=forwarded,
        )
        await runner.start()
        await doorbell.start()
        await heartbeat.start()
        sweeper.start()
        logger.info("worker %s ready (device %s, queue %s)", worker_id, settings.device, router.own)

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
        # arq hands the job back (finish_job) only after this hook returns, so the hook runs to
        # its end even when the job's task is cancelled again in it (SIGTERM); the job's own
        # cancellation was already taken by arq, so nothing more is raised.
        await finish_despite_cancellation(end_of_job(ctx))

    async def end_of_job(ctx: dict[str, Any]) -> None:
        job_id = ctx["job_id"]
        await leases.release(job_id)
        handed_back = None
        if not ctx.get("settled"):  # run_job made the job final or found it not ours: nothing to hand back
            try:
                # Still Running on this worker: the task ended without a final state, so arq keeps
                # the job queued (SIGTERM hand-back, a retry) or the orphan sweep queues it again.
                handed_back = await ctx["store"].requeue(
                    job_id,
                    worker_id,
                    log=[f"{_now()} WARNING job {job_id} handed back to the queue by worker {worker_id}"],
                )
            except RedisError as exc:
                logger.warning("could not mark job %s queued again: %s", job_id, exc)
        # Not a job done: handed back until its session's turn (worker/tasks.py), or forwarded
        # to its device class's queue (shared/routing.py).
        if handed_back is None and not ctx.get("waiting_turn") and job_id not in forwarded:
            heartbeat.jobs_done += 1
        await heartbeat.beat_now()

    def _now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    cls = EmbeddedWorker if embedded else QrsWorker
    worker = cls(
        # cast: arq's WorkerCoroutine protocol takes ctx as a plain dict, ours is a TypedDict.
        functions=[func(cast(WorkerCoroutine, run_job), name=RUN_JOB, timeout=settings.max_execution_time + 60)],
        redis_pool=pool,
        queue_name=router.own,
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
    worker.router, worker.forwarded = router, forwarded
    return worker
