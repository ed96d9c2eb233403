"""The all-in-one server's workers: how many (``QRS_WORKERS``), each one's memory and threads.

``qiskit-runtime-server`` with no subcommand runs the API and ``QRS_WORKERS`` workers (default:
one per usable CPU core) in one process and one event loop, each worker with its own worker id
and its own simulation process, so that independent jobs (a Batch's, or jobs without a
session) run side by side as they do on IBM. A dedicated Session's jobs still run one at a time
(worker/session_order.py). The rules below are explained in docs/workers.md.

Memory: the workers share what one job could use before, so that N jobs running at once cannot
take more than one could. With ``QRS_JOB_MEMORY_LIMIT`` unset that is half the machine's
memory (the budget ``B``): each of ``n`` workers' jobs gets ``(B - (n - 1) * P) // n`` MiB, ``P``
(:data:`SIMULATION_PROCESS_MB`) being what each further simulation process holds before any
job, and ``n`` is lowered until every job gets at least :data:`MIN_JOB_MEMORY_MB`. A
``QRS_JOB_MEMORY_LIMIT`` that is set is one job's own limit, given to every worker: ``n`` is
lowered until ``n * limit + (n - 1) * P`` fits in the machine's physical memory.

Threads: with ``n > 1`` workers on ``C`` cores each simulation gets ``max(1, C // n)`` OpenMP
threads (worker/runner.py's ``OMP_NUM_THREADS``; one set by the user wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from qiskit_runtime_server.shared.aio import cancel_and_wait
from qiskit_runtime_server.shared.logs import worker_id_var
from qiskit_runtime_server.shared.settings import Settings

if TYPE_CHECKING:  # the CLI imports this module for the plan; arq only when workers start
    from arq import Worker
    from arq.connections import ArqRedis

logger = logging.getLogger("qrs.worker")

# The least memory one job is given when the default budget is divided: 1 GiB holds a
# 26-qubit statevector, the caches a job adds to its process, and the 127-qubit noise models.
MIN_JOB_MEMORY_MB = 1024
# What one more simulation process holds before its first job (qiskit and Aer imported, the
# fake backends' data): about 125 MiB resident measured, rounded up. Its caches grow within
# its job limit (worker/simulation_process.py's limit_memory counts from the start-up size).
SIMULATION_PROCESS_MB = 256
# The least the default per-job budget is, as worker/engines/aer.py's default_memory_limit_mb.
_MIN_BUDGET_MB = 256


@dataclass(frozen=True)
class WorkerPlan:
    """How the all-in-one server runs its workers.

    Attributes:
        workers: how many workers (each with one simulation process).
        job_memory_limit: MiB one job may use, given to every worker's simulation process as
            ``QRS_JOB_MEMORY_LIMIT``; 0 (one worker, limit unset): the default, half the machine.
        threads: OpenMP threads per simulation; 0 leaves Aer's default (every core).
        notes: why fewer workers than asked run, for the start-up log (empty when none).
    """

    workers: int
    job_memory_limit: int
    threads: int
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        memory = f"{self.job_memory_limit} MiB" if self.job_memory_limit else "half of the machine's memory"
        threads = f"{self.threads} OpenMP thread(s)" if self.threads else "every core"
        plural = "s" if self.workers != 1 else ""
        return f"{self.workers} worker{plural}; each job may use {memory} and {threads}"


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. ``taskset`` or a cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def physical_memory_mb() -> int:
    """This machine's physical memory in MiB (8 GiB when the system does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return 8 * 1024


# What a worker container holds besides one job's memory: the worker process, its simulation
# process before any job, and the 512 MiB that process may pass the job's cap by before its
# data-size limit stops it (worker/simulation_process.py). docker-compose.yml and
# deploy/kubernetes give a worker QRS_JOB_MEMORY_LIMIT plus this.
WORKER_OVERHEAD_MB = 1024


def container_memory_mb() -> int | None:
    """This process's cgroup memory limit in MiB (a container's ``mem_limit``), or ``None``."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        # "max" (cgroup v2) or a huge number (v1): no limit.
        return int(text) // 2**20 if text.isdigit() and int(text) < 2**60 else None
    return None


def container_memory_warning(job_memory_limit: int, container_mb: int | None) -> str | None:
    """Why a ``worker`` with ``QRS_JOB_MEMORY_LIMIT=job_memory_limit`` (0: half the machine)
    does not fit in a container limited to ``container_mb`` MiB, or ``None`` when it does."""
    job = job_memory_limit or max(_MIN_BUDGET_MB, physical_memory_mb() // 2)
    if container_mb is None or job + WORKER_OVERHEAD_MB <= container_mb:
        return None
    return (
        f"one job's memory ({job} MiB, QRS_JOB_MEMORY_LIMIT) plus {WORKER_OVERHEAD_MB} MiB for the worker does "
        f"not fit in this container's memory limit ({container_mb} MiB): a large job would be killed by the "
        "kernel instead of failing with a memory error. Raise the container's limit (QRS_WORKER_MEMORY in "
        "docker-compose.yml) or lower QRS_JOB_MEMORY_LIMIT."
    )


def plan_workers(requested: int, job_memory_limit: int, *, cores: int, memory_mb: int) -> WorkerPlan:
    """The workers, per-job memory and threads for ``QRS_WORKERS=requested`` (0: ``cores``)
    and ``QRS_JOB_MEMORY_LIMIT=job_memory_limit`` (0: unset) on a machine with ``cores`` usable
    cores and ``memory_mb`` MiB of physical memory; the rules are in this module's docstring.
    """
    wanted = requested or cores
    asked = f"QRS_WORKERS={requested}" if requested else "one worker per core"
    notes: list[str] = []
    if job_memory_limit:
        workers = _most(wanted, lambda n: n * job_memory_limit + (n - 1) * SIMULATION_PROCESS_MB <= memory_mb)
        limit = job_memory_limit
        if workers < wanted:
            notes.append(
                f"{asked} would run {wanted} workers, but only {workers} job(s) of QRS_JOB_MEMORY_LIMIT="
                f"{job_memory_limit} MiB fit in this machine's {memory_mb} MiB of memory; running {workers} worker(s)"
            )
    else:
        budget = max(_MIN_BUDGET_MB, memory_mb // 2)
        workers = _most(wanted, lambda n: _share(budget, n) >= MIN_JOB_MEMORY_MB)
        limit = 0 if workers == 1 else _share(budget, workers)
        if workers < wanted:
            notes.append(
                f"{asked} would run {wanted} workers, but half of this machine's memory ({budget} MiB) leaves "
                f"{MIN_JOB_MEMORY_MB} MiB or more per job for only {workers}; running {workers} worker(s) "
                "(set QRS_JOB_MEMORY_LIMIT to choose each job's memory instead)"
            )
    threads = max(1, cores // workers) if workers > 1 else 0
    return WorkerPlan(workers, limit, threads, tuple(notes))


def _share(budget: int, workers: int) -> int:
    """Each job's MiB when ``workers`` jobs and their extra simulation processes share ``budget``."""
    return (budget - (workers - 1) * SIMULATION_PROCESS_MB) // workers


def _most(wanted: int, fits: Callable[[int], bool]) -> int:
    """The largest ``n`` in ``1..wanted`` for which ``fits(n)`` holds, else 1."""
    return next((n for n in range(wanted, 1, -1) if fits(n)), 1)


def worker_ids(base: str, workers: int) -> list[str]:
    """The workers' ids: ``base`` (``QRS_WORKER_ID`` or the generated one) alone, or
    ``base-1`` ... ``base-N``."""
    return [base] if workers == 1 else [f"{base}-{i}" for i in range(1, workers + 1)]


@contextlib.asynccontextmanager
async def embedded_workers(settings: Settings, pool: ArqRedis, plan: WorkerPlan) -> AsyncIterator[dict[str, Worker]]:
    """Run ``plan.workers`` workers on ``pool`` (the API's) until the block ends; yields them by id.

    Each runs in its own task, with :data:`~shared.logs.worker_id_var` set to its id for its log
    lines. At the end all are stopped together (a running job is cancelled and handed back, as
    the single embedded worker did), then the shared pool is closed.
    """
    from qiskit_runtime_server.worker.app import build_worker

    ids = worker_ids(settings.effective_worker_id, plan.workers)
    workers: list[Worker] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for worker_id in ids:
            own = msgspec.structs.replace(settings, worker_id=worker_id, job_memory_limit=plan.job_memory_limit)
            worker = build_worker(own, pool, embedded=True, simulation_threads=plan.threads)
            workers.append(worker)
            context = contextvars.copy_context()
            if plan.workers > 1:
                context.run(worker_id_var.set, worker_id)
            tasks.append(asyncio.create_task(worker.async_run(), name=f"worker {worker_id}", context=context))
        yield dict(zip(ids, workers, strict=True))
    finally:
        await asyncio.gather(*(cancel_and_wait(task) for task in tasks))
        closed = await asyncio.gather(*(worker.close() for worker in workers), return_exceptions=True)
        for worker_id, outcome in zip(ids[: len(workers)], closed, strict=True):
            if isinstance(outcome, BaseException):
                logger.error("worker %s did not close cleanly", worker_id, exc_info=outcome)
        await pool.aclose(close_connection_pool=True)
