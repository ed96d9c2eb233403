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
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

from arq import Retry
from arq.constants import retry_key_prefix
from redis.exceptions import RedisError

from qiskit_runtime_server.shared import faults
from qiskit_runtime_server.shared.faults import FaultStore
from qiskit_runtime_server.shared.models import (
    REASON_EXECUTION_ERROR,
    REASON_INFRASTRUCTURE,
    REASON_RAN_TOO_LONG,
    JobRecord,
    JobStatus,
)
from qiskit_runtime_server.shared.routing import Router
from qiskit_runtime_server.shared.settings import Settings
from qiskit_runtime_server.shared.store import Claim, JobStore, StaleClaim
from qiskit_runtime_server.worker.cancellation import POLL_INTERVAL, run_unless_cancelled
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
    settled: NotRequired[bool]  # the job needs no hand-back at its end (final, or another worker's)
    router: NotRequired[Router]
    forwarded: NotRequired[set[str]]
    fenced: NotRequired[set[str]]  # jobs whose late result was refused (worker/app.py skips arq's cleanup)
    faults: NotRequired[FaultStore]  # only when fault injection is on (shared/faults.py)


@dataclass(frozen=True)
class Ending:
    """How a run ended, as :meth:`JobStore.finish` records it: final state, result text, the
    record's extra fields (``reason``, ``quantum_seconds``...) and the job's log lines."""

    status: JobStatus
    result: bytes
    fields: dict[str, object] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def _gave_up(settings: Settings) -> Ending:
    return Ending(
        JobStatus.FAILED,
        b"The job was interrupted by infrastructure faults too many times.",
        {
            "reason": f"The job could not run after {settings.max_attempts} attempts (worker lost).",
            "reason_code": REASON_INFRASTRUCTURE,
        },
        [f"{_now()} ERROR giving up after {settings.max_attempts} attempts"],
    )


def _ran_too_long(limit: float) -> Ending:
    reason = f"Job ran longer than its maximum execution time of {limit} seconds."
    return Ending(
        JobStatus.CANCELLED,
        reason.encode(),
        {"reason": reason, "reason_code": REASON_RAN_TOO_LONG},
        [f"{_now()} ERROR {reason}"],
    )


def _program_error(exc: ProgramError) -> Ending:
    # Also a simulation process that died running this input (JobCrashed): the same input would
    # kill the next one, so it is not retried.
    message = plain_text(str(exc))
    return Ending(
        JobStatus.FAILED,
        f"Error in job execution: {message}".encode(),
        {"reason": f"Error in job execution: {message}", "reason_code": REASON_EXECUTION_ERROR},
        [f"{_now()} ERROR {message}"],
    )


async def _injected_fault(ctx: WorkerContext, program_id: str, backend: str, instance: str) -> Ending | None:
    """The ending a ``job_failure`` or ``job_cancel`` fault rule gives the job that just started
    (docs/faults.md), or ``None``: the job runs. Only when fault injection is on for this worker."""
    store = ctx.get("faults")
    if store is None:
        return None
    event = {"backend": backend, "program": program_id, "instance": instance}
    rules = await store.snapshot(faults.JOB_EFFECTS)
    candidates = [r for effect in (faults.JOB_FAILURE, faults.JOB_CANCEL) for r in rules.live(effect, event)]
    rule = await store.first_firing(sorted(candidates, key=lambda r: (r.created or 0.0, r.id)))
    if rule is None:
        return None
    reason = faults.job_reason(rule)
    fields: dict[str, object] = {"reason": reason}
    if rule.reason_code is not None:
        fields["reason_code"] = rule.reason_code
    status = JobStatus.FAILED if rule.effect == faults.JOB_FAILURE else JobStatus.CANCELLED
    return Ending(status, reason.encode(), fields, [f"{_now()} ERROR {reason} (fault rule {rule.id})"])


def _completed(outcome: Any, job_id: str, worker_id: str, attempt: int) -> Ending:
    log = [f"{_now()} WARNING {warning}" for warning in outcome.warnings]
    log.append(
        f"{_now()} INFO job {job_id} completed on worker {worker_id} (attempt {attempt}): "
        f"{outcome.num_pubs} PUB(s) in {outcome.quantum_seconds:.3f} s"
    )
    fields = {
        "quantum_seconds": outcome.quantum_seconds,
        "num_pubs": outcome.num_pubs,
        "qiskit_version": outcome.qiskit_version,
        "predicted_seconds": outcome.predicted_seconds,
    }
    if outcome.simulation_seconds is not None:  # IBM-like timing: quantum_seconds is the QPU time
        fields.update(simulation_seconds=outcome.simulation_seconds, qpu_seconds=outcome.qpu_seconds)
    return Ending(JobStatus.COMPLETED, outcome.result, fields, log)


def _settled(ctx: WorkerContext, state: str) -> str:
    """Mark the job as needing no hand-back check at its end (``worker/app.py``): this task
    made it final, found it final or gone, or lost it to another worker."""
    ctx["settled"] = True
    return state


async def run_job(ctx: WorkerContext, job_id: str) -> str:
    """Run runtime job ``job_id`` and record its final state; returns that state's name.

    Every way the run can end is an :class:`Ending` (completed, failed by its input, ran too
    long, given up after too many attempts), recorded by one fenced :meth:`JobStore.finish`.

    Raises:
        arq.Retry: the simulation process could not take the job (not its fault), or an earlier
            job of its dedicated session is not final yet; arq runs it again later.
    """
    store, settings = ctx["store"], ctx["settings"]
    attempt = int(ctx.get("job_try", 1))  # type: ignore[call-overload]
    record, params = await store.load(job_id)
    if record is None or record.status.final:
        return _settled(ctx, "skipped")
    claim: Claim | None = None
    if attempt > settings.max_attempts:
        ending = _gave_up(settings)
    else:
        turn = await check_turn(store, record)
        if turn is Turn.SKIP:
            return _settled(ctx, "skipped")
        if turn is Turn.WAIT:
            # Hand the job back, deferred, instead of holding this worker until its turn. arq counts
            # every start as a try (INCR of its retry key); a wait is not an attempt, so undo that.
            await store.redis.decr(retry_key_prefix + job_id)
            enqueued = ctx.get("enqueue_time")
            waited = (datetime.now(UTC) - enqueued).total_seconds() if isinstance(enqueued, datetime) else 0.0
            ctx["waiting_turn"] = True  # for the job_end hook: not a job done
            raise Retry(defer=recheck_delay(waited))
        if await _forwarded_to_gpu(ctx, job_id, record.program_id, record.backend, params):
            return "forwarded"
        started = (
            f"{_now()} INFO job {job_id} started on worker {ctx['worker_id']} (attempt {attempt}): "
            f"program {record.program_id}, backend {record.backend}, device {settings.device}"
        )
        record = await store.start(job_id, ctx["worker_id"], attempt, log=[started])
        if record is None:
            return _settled(ctx, "skipped")
        claim = Claim(ctx["worker_id"], attempt)
        injected = await _injected_fault(ctx, record.program_id, record.backend, record.instance)
        if injected is not None:
            ending = injected
        else:
            cap = _prediction_cap(record.cost, settings)
            timing = record.qpu_overhead is not None
            request = _request(
                job_id, record.program_id, record.backend, params, settings, max_seconds=cap, timing=timing
            )
            limit = min(record.cost or settings.max_execution_time, settings.max_execution_time)
            ended = await _run(ctx, request, limit)
            if ended is not None and not isinstance(ended, Ending) and record.qpu_overhead is not None:
                ended = await _hold_for_qpu_time(store, record, claim, ended, limit)
            if ended is None:
                return "stopped"
            ending = ended if isinstance(ended, Ending) else _completed(ended, job_id, ctx["worker_id"], attempt)
    if not await finish_fenced(store, claim, job_id, ending.status, ending.result, log=ending.log, **ending.fields):
        ctx.get("fenced", set()).add(job_id)
        return _settled(ctx, "fenced")
    return _settled(ctx, ending.status.value)


def _request(
    job_id: str, program_id: str, backend: str, params: bytes | None, settings: Settings, **extra: Any
) -> ExecutionRequest:
    return ExecutionRequest(
        job_id=job_id,
        program_id=program_id,
        backend=backend,
        params=params or b"{}",
        device=settings.device,
        defaults=Defaults(settings.default_shots, settings.default_precision, settings.max_shots),
        limits=settings.job_limits,
        processes=settings.piece_processes,
        **extra,
    )


async def _run(ctx: WorkerContext, request: ExecutionRequest, limit: int) -> Any:
    """Run ``request`` in the simulation process, stopped when the job is cancelled.

    Returns the program's outcome, the :class:`Ending` of a run that failed or ran too long, or
    ``None`` when the run was stopped on purpose (the job was cancelled or deleted meanwhile).
    """
    store, runner = ctx["store"], ctx["runner"]
    try:
        return await asyncio.wait_for(run_unless_cancelled(runner, request, store, request.job_id), timeout=limit)
    except TimeoutError:
        await runner.stop()
        return _ran_too_long(limit)
    except ProgramError as exc:
        return _program_error(exc)
    except RunnerStopped:
        return None
    except asyncio.CancelledError:
        # arq cancels the task on shutdown and hands the job back to the queue; stop the
        # simulation too, or it would keep the CPU/GPU busy for a job that will run elsewhere.
        await runner.stop()
        raise
    except RunnerCrashed as exc:
        # The process died before it took the job: not the input's doing.
        await store.log(request.job_id, f"{_now()} WARNING {exc} before the job started; the job will be retried")
        raise Retry(defer=1) from exc


async def _hold_for_qpu_time(store: JobStore, record: JobRecord, claim: Claim, outcome: Any, limit: int) -> Any:
    """IBM-like timing (docs/timing.md): keep the simulated job ``Running`` until it has run for
    its QPU time, then return its outcome with that time as its usage.

    The QPU time is the duration model's (``Outcome.qpu_seconds``; the simulation time for a
    program it does not model) plus the record's per-job overhead; it is written into the
    record first, as the job's ``estimated_running_time_seconds``. The wait checks the record
    every ``POLL_INTERVAL`` seconds, as a running simulation does (``worker/cancellation.py``).

    Returns:
        The outcome with ``quantum_seconds`` the QPU time (the simulation time moves to
        ``simulation_seconds``); the :class:`Ending` of a job whose QPU time is past its
        ``max_execution_time``, cancelled at that limit; ``None`` when the job was cancelled or
        deleted while held.
    """
    modelled = outcome.qpu_seconds if outcome.qpu_seconds is not None else outcome.quantum_seconds
    qpu = round(modelled + (record.qpu_overhead or 0.0), 3)
    with contextlib.suppress(RedisError):  # only the estimate is lost; the hold goes on
        await store.annotate(record.id, claim, qpu_seconds=qpu)
    started = record.running or time.time()
    deadline = started + min(qpu, float(limit))
    while (left := deadline - time.time()) > 0:
        await asyncio.sleep(min(POLL_INTERVAL, left))
        try:
            current = await store.get(record.id)
        except RedisError:  # a Redis blip must not end the job; look again next tick
            continue
        if current is None or current.status.final:
            if current is not None:
                await store.log(record.id, f"{_now()} INFO QPU time stopped: the job is {current.status.value}")
            return None
    if qpu > limit:
        ending = _ran_too_long(limit)
        ending.fields.update(quantum_seconds=float(limit), simulation_seconds=outcome.quantum_seconds)
        return ending
    return dataclasses.replace(
        outcome, quantum_seconds=qpu, qpu_seconds=qpu, simulation_seconds=outcome.quantum_seconds
    )


def _prediction_cap(cost: int | None, settings: Settings) -> float:
    """The most simulation time a job may be predicted to need: its ``max_execution_time``
    (``cost``), the server's ``QRS_MAX_EXECUTION_TIME`` and ``QRS_MAX_JOB_SECONDS``, whichever is
    lowest."""
    limits = [float(settings.max_execution_time), float(settings.max_job_seconds)]
    if cost:
        limits.append(float(cost))
    return min(limits)


async def _forwarded_to_gpu(
    ctx: WorkerContext, job_id: str, program_id: str, backend: str, params: bytes | None
) -> bool:
    """On a CPU-class worker while a GPU-class one is live: classify the job in the simulation
    process and, when it is GPU-class, mark it for the GPU queue (moved when arq ends this run,
    ``QrsWorker.finish_job``). A job that cannot be classified runs here (its run reports why)."""
    router, forwarded = ctx.get("router"), ctx.get("forwarded")
    if router is None or forwarded is None or not await router.should_classify():
        return False
    store, settings = ctx["store"], ctx["settings"]
    request = _request(job_id, program_id, backend, params, settings, classify=True)
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
    store: JobStore, claim: Claim | None, job_id: str, status: JobStatus, result: bytes, **kw: object
) -> bool:
    """:meth:`JobStore.finish` for the attempt ``claim``; ``False`` when the write was fenced.

    Without ``claim`` (a job given up before it started) the write is not fenced.

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
