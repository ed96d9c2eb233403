"""One worker, two dedicated sessions: a job waiting for its session's turn is handed back to the
queue (deferred), so the worker runs the other session's job meanwhile, and the waiting job runs
once the earlier job of its session is final, as its first attempt."""

from __future__ import annotations

import asyncio
import time

from qiskit_runtime_server.shared.aio import cancel_and_wait
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import RUN_JOB, connect, enqueue_run
from qiskit_runtime_server.shared.sessions import DEDICATED, SessionRecord, SessionStore
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.app import build_worker
from tests.unit.test_memory_limit import sampler_request

INSTANCE = "crn:v1:test:a/acct:one::"
QUEUE = "qrs:test-turns"


async def test_one_worker_runs_another_session_while_a_job_waits_for_its_turn() -> None:
    pool = await connect(None)
    store = JobStore(pool)
    sessions = SessionStore(pool, store)
    now = time.time()
    for sid in ("s1", "s2"):
        await sessions.create(
            SessionRecord(
                id=sid,
                instance=INSTANCE,
                backend="fake_manila",
                mode=DEDICATED,
                max_ttl=600,
                interactive_ttl=60,
                created=now,
            )
        )
    params = sampler_request("x", 10).params
    for i, (job_id, sid) in enumerate([("a1", "s1"), ("a2", "s1"), ("b1", "s2")]):
        record = JobRecord(
            id=job_id,
            program_id="sampler",
            backend="fake_manila",
            instance=INSTANCE,
            created=now + i,
            session_id=sid,
            # a2 waits about 4 s for its turn: longer than its time limit, which counts only its run.
            cost=2 if job_id == "a2" else None,
        )
        await store.create(record, params)
    # a1 comes up only later (as a job deferred by a retry would): a2's turn waits for it.
    await pool.enqueue_job(RUN_JOB, "a1", _job_id="a1", _queue_name=QUEUE, _defer_by=4)
    await enqueue_run(pool, QUEUE, "a2")
    await enqueue_run(pool, QUEUE, "b1")
    settings = load_settings({}, queue_name=QUEUE, max_execution_time=30)
    worker = build_worker(settings, pool, embedded=True)
    task = asyncio.create_task(worker.async_run())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = {j: await store.get(j) for j in ("a1", "a2", "b1")}
            if all(r is not None and r.status.final for r in records.values()):
                break
            await asyncio.sleep(0.1)
    finally:
        await cancel_and_wait(task)
        await worker.close()
    a1, a2, b1 = records["a1"], records["a2"], records["b1"]
    assert a1 and a2 and b1
    assert [r.status for r in (a1, a2, b1)] == [JobStatus.COMPLETED] * 3, [r.reason for r in (a1, a2, b1)]
    assert b1.finished is not None and a1.running is not None and b1.finished < a1.running  # b1 did not wait for s1
    assert a2.running is not None and a1.finished is not None and a2.running >= a1.finished  # order kept
    assert a2.attempts == 1  # the waits were not attempts
