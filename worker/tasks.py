"""The arq task ``runtime.run_job``: load the job, run its program in the child, store the outcome.

Fenced: each final write after the job started carries this attempt's :class:`Claim`, so a
worker that was cut off past its lease and comes back with a late result cannot complete a job
another worker has taken over; its write is dropped, and the worker's log and the job's log
say so (:func:`finish_fenced`).

Idempotent: a job that is already final (cancelled, or finished by an earlier attempt) is
skipped, so arq may deliver it more than once ("Jobs may be called more than once!").
Only infrastructure faults are retried (the worker lost, found by its lease or the orphan sweep;
a simulation process that could not take the job); a job whose input cannot run fails on its
first attempt, also when it kills the simulation process (out of memory, a segfault).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import NotRequired, TypedDict

from arq import Retry
from arq.constants import retry_key_prefix

from qiskit_runtime_server.shared.models import (
    REASON_EXECUTION_ERROR,
    REASON_INFRASTRUCTURE,
    REASON_RAN_TOO_LONG,
    JobStatus,
)
from qiskit_runtime_server.shared.routing import Router
from qiskit_runtime_server.shared.settings import Settings
from qiskit_runtime_server.shared.store import Claim, JobStore, StaleClaim
from qiskit_runtime_server.worker.cancellation import run_unless_cancelled
from qiskit_runtime_server.worker.errors import ProgramError, plain_text
from qiskit_runtime_server.worker.jobspec import Defaults, ExecutionRequest
from qiskit_runtime_server.worker.runner import ProgramRunner, RunnerCrashed, RunnerStopped
from qiskit_runtime_server.worker.session_order import Turn, check_turn, recheck_delay

logger = logging.getLogger("qrs.worker")


class WorkerContext(TypedDict):
    """arq's ``ctx`` as our start-up fills it (plus arq's own ``job_id``/``job_try`` per job)."""

    store: JobStore
    runner: ProgramRunner
    settings: Settings
    worker_id: str
    waiting_turn: NotRequired[bool]
    router: NotRequired[Router]
    forwarded: NotRequired[set[str]]
    fenced: NotRequired[set[str]]  # jobs whose late result was refused (worker/app.py skips arq's cleanup)


async def run_job(ctx: WorkerContext, job_id: str) -> str:
    """Run runtime job ``job_id`` and record its final state; returns that state's name.

    Raises:
        arq.Retry: the simulation process could not take the job (not its fault), or an earlier
            job of its dedicated session is not final yet; arq runs it again later.
    """
    store, settings = ctx["store"], ctx["settings"]
    attempt = int(ctx.get("job_try", 1))  # type: ignore[call-overload]
    record = await store.get(job_id)
    if record is None or record.status.final:
        return "skipped"
    if attempt > settings.max_attempts:
        await store.finish(
            job_id,
            JobStatus.FAILED,
            b"The job was interrupted by infrastructure faults too many times.",
            reason=f"The job could not run after {settings.max_attempts} attempts (worker lost).",
            reason_code=REASON_INFRASTRUCTURE,
            log=[f"{_now()} ERROR giving up after {settings.max_attempts} attempts"],
        )
        return JobStatus.FAILED.value
    turn = await check_turn(store, record)
    if turn is Turn.SKIP:
        return "skipped"
    if turn is Turn.WAIT:
        # Hand the job back, deferred, instead of holding this worker until its turn. arq counts
        # every start as a try (INCR of its retry key); a wait is not an attempt, so undo that.
        await store.redis.decr(retry_key_prefix + job_id)
        enqueued = ctx.get("enqueue_time")
        waited = (datetime.now(UTC) - enqueued).total_seconds() if isinstance(enqueued, datetime) else 0.0
        ctx["waiting_turn"] = True  # for the job_end hook: not a job done
        raise Retry(defer=recheck_delay(waited))
    if await _forwarded_to_gpu(ctx, job_id, record.program_id, record.backend):
        return "forwarded"
    started = (
        f"{_now()} INFO job {job_id} started on worker {ctx['worker_id']} (attempt {attempt}): "
        f"program {record.program_id}, backend {record.backend}, device {settings.device}"
    )
    record = await store.start(job_id, ctx["worker_id"], attempt, log=[started])
    if record is None:
        return "skipped"
    claim = Claim(ctx["worker_id"], attempt)
    params = await store.params(job_id) or b"{}"
    request = ExecutionRequest(
        job_id=job_id,
        program_id=record.program_id,
        backend=record.backend,
        params=params,
        device=settings.device,
        defaults=Defaults(settings.default_shots, settings.default_precision, settings.max_shots),
        limits=settings.job_limits,
        max_seconds=_prediction_cap(record.cost, settings),
    )
    limit = min(record.cost or settings.max_execution_time, settings.max_execution_time)
    runner = ctx["runner"]
    try:
        outcome = await asyncio.wait_for(run_unless_cancelled(runner, request, store, job_id), timeout=limit)
    except TimeoutError:
        await runner.stop()
        reason = f"Job ran longer than its maximum execution time of {limit} seconds."
        if not await finish_fenced(
            store,
            claim,
            job_id,
            JobStatus.CANCELLED,
            reason.encode(),
            reason=reason,
            reason_code=REASON_RAN_TOO_LONG,
            log=[f"{_now()} ERROR {reason}"],
        ):
            ctx.get("fenced", set()).add(job_id)
            return "fenced"
        return JobStatus.CANCELLED.value
    except ProgramError as exc:
        # Also a simulation process that died running this input (JobCrashed): the same input
        # would kill the next one, so it is not retried.
        message = plain_text(str(exc))
        if not await finish_fenced(
            store,
            claim,
            job_id,
            JobStatus.FAILED,
            f"Error in job execution: {message}".encode(),
            reason=f"Error in job execution: {message}",
            reason_code=REASON_EXECUTION_ERROR,
            log=[f"{_now()} ERROR {message}"],
        ):
            ctx.get("fenced", set()).add(job_id)
            return "fenced"
        return JobStatus.FAILED.value
    except RunnerStopped:
        return "stopped"
    except asyncio.CancelledError:
        # arq cancels the task on shutdown and hands the job back to the queue; stop the
        # simulation too, or it would keep the CPU/GPU busy for a job that will run elsewhere.
        await runner.stop()
        raise
    except RunnerCrashed as exc:
        # The process died before it took the job: not the input's doing.
        await store.log(job_id, f"{_now()} WARNING {exc} before the job started; the job will be retried")
        raise Retry(defer=1) from exc
    log = [f"{_now()} WARNING {warning}" for warning in outcome.warnings]
    log.append(
        f"{_now()} INFO job {job_id} completed on worker {ctx['worker_id']} (attempt {attempt}): "
        f"{outcome.num_pubs} PUB(s) in {outcome.quantum_seconds:.3f} s"
    )
    if not await finish_fenced(
        store,
        claim,
        job_id,
        JobStatus.COMPLETED,
        outcome.result,
        quantum_seconds=outcome.quantum_seconds,
        num_pubs=outcome.num_pubs,
        qiskit_version=outcome.qiskit_version,
        predicted_seconds=outcome.predicted_seconds,
        log=log,
    ):
        ctx.get("fenced", set()).add(job_id)
        return "fenced"
    return JobStatus.COMPLETED.value


def _prediction_cap(cost: int | None, settings: Settings) -> float:
    """The most simulation time a job may be predicted to need: its ``max_execution_time``
    (``cost``), the server's ``QRS_MAX_EXECUTION_TIME`` and ``QRS_MAX_JOB_SECONDS``, whichever is
    lowest."""
    limits = [float(settings.max_execution_time), float(settings.max_job_seconds)]
    if cost:
        limits.append(float(cost))
    return min(limits)


async def _forwarded_to_gpu(ctx: WorkerContext, job_id: str, program_id: str, backend: str) -> bool:
    """On a CPU-class worker while a GPU-class one is live: classify the job in the simulation
    process and, when it is GPU-class, mark it for the GPU queue (moved when arq ends this run,
    ``QrsWorker.finish_job``). A job that cannot be classified runs here (its run reports why)."""
    router, forwarded = ctx.get("router"), ctx.get("forwarded")
    if router is None or forwarded is None or not await router.should_classify():
        return False
    store, settings = ctx["store"], ctx["settings"]
    request = ExecutionRequest(
        job_id=job_id,
        program_id=program_id,
        backend=backend,
        params=await store.params(job_id) or b"{}",
        device=settings.device,
        defaults=Defaults(settings.default_shots, settings.default_precision, settings.max_shots),
        limits=settings.job_limits,
        classify=True,
    )
    try:
        outcome = await ctx["runner"].run(request)
    except Exception as exc:  # any failure: the real run decides and reports it
        logger.info("job %s not classified (%s); running it here", job_id, exc)
        return False
    if outcome.device_class != "gpu":
        return False
    why = outcome.warnings[0] if outcome.warnings else ""
    await store.log(job_id, f"{_now()} INFO job {job_id} sent to the GPU-class queue by {ctx['worker_id']}: {why}")
    forwarded.add(job_id)
    return True


async def finish_fenced(
    store: JobStore, claim: Claim, job_id: str, status: JobStatus, result: bytes, **kw: object
) -> bool:
    """:meth:`JobStore.finish` for the attempt ``claim``; ``False`` when the write was fenced.

    A fenced write (``StaleClaim``: another worker holds the job now) is logged as a warning by
    this worker and as a line in the job's log, so an operator reading either sees that a late
    result was refused and whose result stands.
    """
    try:
        await store.finish(job_id, status, result, claim=claim, **kw)  # type: ignore[arg-type]
    except StaleClaim as exc:
        logger.warning("fenced: %s", exc, extra={"job_id": job_id})
        await store.log(job_id, f"{_now()} WARNING fenced: {exc}")
        return False
    return True


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
