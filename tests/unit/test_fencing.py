"""Fencing of final writes: a worker whose claim on a job was superseded cannot finish it.

The scenario: worker A runs attempt 1, is cut off from Redis longer than its lease, worker B
takes the job over as attempt 2; A comes back with its (late) result. The job must complete
once, with the result of the worker holding the current claim, and the refusal must be logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.store import Claim, JobStore, StaleClaim
from qiskit_runtime_server.worker.tasks import finish_fenced

A, B = Claim("host-a-1", 1), Claim("host-b-1", 2)


@pytest.fixture
async def store() -> AsyncIterator[JobStore]:
    pool: ArqRedis = await connect(None)
    store = JobStore(pool)
    record = JobRecord(id="j1", program_id="sampler", backend="fake_manila", instance="crn:x", created=time.time())
    await store.create(record, b"{}")
    yield store
    await pool.aclose()


async def test_a_late_result_from_a_superseded_attempt_is_refused_while_the_new_holder_runs(store: JobStore) -> None:
    await store.start("j1", A.worker_id, A.attempt)
    await store.start("j1", B.worker_id, B.attempt)  # A's lease lapsed; B took the job over

    with pytest.raises(StaleClaim) as refused:
        await store.finish("j1", JobStatus.COMPLETED, b"result of A", claim=A)
    assert refused.value.current == B and refused.value.status is JobStatus.RUNNING
    record = await store.get("j1")
    assert record is not None and record.status is JobStatus.RUNNING and await store.result("j1") is None

    assert await store.finish("j1", JobStatus.COMPLETED, b"result of B", claim=B) is not None
    assert await store.result("j1") == b"result of B"


async def test_a_late_result_after_the_new_holder_completed_is_refused(store: JobStore) -> None:
    await store.start("j1", A.worker_id, A.attempt)
    await store.start("j1", B.worker_id, B.attempt)
    await store.finish("j1", JobStatus.COMPLETED, b"result of B", claim=B)

    with pytest.raises(StaleClaim):
        await store.finish("j1", JobStatus.FAILED, b"error of A", claim=A)
    record = await store.get("j1")
    assert record is not None and record.status is JobStatus.COMPLETED and record.worker_id == B.worker_id
    assert await store.result("j1") == b"result of B"


async def test_a_holder_whose_lease_lapsed_without_a_takeover_still_finishes(store: JobStore) -> None:
    await store.start("j1", A.worker_id, A.attempt)
    assert await store.finish("j1", JobStatus.COMPLETED, b"result of A", claim=A) is not None
    assert await store.result("j1") == b"result of A"


async def test_the_same_worker_running_a_later_attempt_fences_its_earlier_one(store: JobStore) -> None:
    await store.start("j1", A.worker_id, 1)
    await store.start("j1", A.worker_id, 2)
    with pytest.raises(StaleClaim):
        await store.finish("j1", JobStatus.COMPLETED, b"attempt 1", claim=Claim(A.worker_id, 1))


async def test_a_fenced_write_is_logged_by_the_worker_and_in_the_jobs_log(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.start("j1", A.worker_id, A.attempt)
    await store.start("j1", B.worker_id, B.attempt)
    with caplog.at_level(logging.WARNING, logger="qrs.worker"):
        assert not await finish_fenced(store, A, "j1", JobStatus.COMPLETED, b"result of A")
    assert any("fenced" in r.getMessage() and A.worker_id in r.getMessage() for r in caplog.records)
    lines = await store.logs("j1")
    assert any("fenced" in line and A.worker_id in line and B.worker_id in line for line in lines)
