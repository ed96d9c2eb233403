"""A dedicated session's job waits for the earlier ones, without holding a worker; batch jobs and
cancelled jobs do not wait."""

from __future__ import annotations

import time

import fakeredis
import pytest

from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.sessions import BATCH, DEDICATED, SessionRecord, SessionStore
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.session_order import Turn, check_turn

INSTANCE = "crn:v1:test:a/acct:one::"


async def setup(mode: str) -> tuple[JobStore, list[JobRecord]]:
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = JobStore(redis)
    now = time.time()
    await SessionStore(redis, store).create(
        SessionRecord(
            id="s1", instance=INSTANCE, backend="fake_a", mode=mode, max_ttl=600, interactive_ttl=60, created=now
        )
    )
    jobs = []
    for i in range(2):
        record = JobRecord(
            id=f"j{i}", program_id="sampler", backend="fake_a", instance=INSTANCE, created=now + i, session_id="s1"
        )
        await store.create(record, b"{}")
        jobs.append(record)
    await store.start("j0", "worker-a", 1)
    return store, jobs


async def test_dedicated_job_waits_for_the_earlier_one() -> None:
    store, jobs = await setup(DEDICATED)
    assert await check_turn(store, jobs[1]) is Turn.WAIT
    await store.finish("j0", JobStatus.COMPLETED, b"ok")
    assert await check_turn(store, jobs[1]) is Turn.RUN


async def test_batch_jobs_do_not_wait() -> None:
    store, jobs = await setup(BATCH)
    assert await check_turn(store, jobs[1]) is Turn.RUN


@pytest.mark.parametrize("action", ["cancel", "delete"])
async def test_a_waiting_job_that_is_cancelled_or_deleted_never_runs(action: str) -> None:
    store, jobs = await setup(DEDICATED)
    assert await check_turn(store, jobs[1]) is Turn.WAIT
    await (store.cancel("j1") if action == "cancel" else store.delete("j1"))
    assert await check_turn(store, jobs[1]) is Turn.SKIP
