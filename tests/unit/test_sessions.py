"""The session state machine (open -> active -> inactive -> closed) and closing behaviour."""

from __future__ import annotations

import time

import fakeredis
import msgspec

from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.sessions import (
    BATCH,
    DEDICATED,
    SessionActivity,
    SessionRecord,
    SessionStore,
    activity,
    state_of,
)
from qiskit_runtime_server.shared.store import JobStore

INSTANCE = "crn:v1:test:a/acct:one::"


def session(mode: str = DEDICATED, **kw: object) -> SessionRecord:
    base = SessionRecord(
        id="s1", instance=INSTANCE, backend="fake_a", mode=mode, max_ttl=100, interactive_ttl=10, created=1000.0
    )
    return msgspec.structs.replace(base, **kw)


def job(i: int, status: JobStatus, running: float | None = None, finished: float | None = None) -> JobRecord:
    return JobRecord(
        id=f"j{i}",
        program_id="sampler",
        backend="fake_a",
        instance=INSTANCE,
        created=1000.0 + i,
        status=status,
        session_id="s1",
        running=running,
        finished=finished,
    )


def test_open_until_the_first_job_starts() -> None:
    assert state_of(session(), SessionActivity(), 1001.0) == "open"
    queued = activity([job(1, JobStatus.QUEUED)])
    assert state_of(session(), queued, 1001.0) == "open"


def test_active_while_jobs_run_then_inactive_after_the_interactive_ttl() -> None:
    running = activity([job(1, JobStatus.RUNNING, running=1002.0)])
    assert running.activated_at == 1002.0 and running.running == 1
    assert state_of(session(), running, 1003.0) == "active"
    done = activity([job(1, JobStatus.COMPLETED, running=1002.0, finished=1005.0)])
    assert done.last_job_completed == 1005.0
    assert state_of(session(), done, 1010.0) == "active"  # within interactive_ttl (10 s)
    assert state_of(session(), done, 1015.0) == "inactive"  # deactivated, not closed (IBM)
    again = activity([job(1, JobStatus.COMPLETED, running=1002.0, finished=1005.0), job(2, JobStatus.QUEUED)])
    assert state_of(session(), again, 1020.0) == "active"  # resumed by a new job
    # Batches have no interactive window.
    assert state_of(session(BATCH), done, 1006.0) == "inactive"


def test_max_ttl_counts_from_activation() -> None:
    running = activity([job(1, JobStatus.RUNNING, running=1050.0)])
    assert state_of(session(), running, 1149.0) == "active"
    assert state_of(session(), running, 1150.0) == "closed"
    assert state_of(session(), SessionActivity(), 1100.0) == "closed"  # never activated: from creation


def test_not_accepting_closes_once_the_last_job_is_done() -> None:
    closing = session(accepting_jobs=False)
    running = activity([job(1, JobStatus.RUNNING, running=1002.0)])
    assert state_of(closing, running, 1003.0) == "active"
    done = activity([job(1, JobStatus.COMPLETED, running=1002.0, finished=1004.0)])
    assert state_of(closing, done, 1005.0) == "closed"
    assert state_of(session(closed_at=1003.0), running, 1003.5) == "closed"


async def test_close_cancels_queued_jobs_and_expiry_is_stored() -> None:
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    jobs = JobStore(redis)
    sessions = SessionStore(redis, jobs)
    now = time.time()
    record = session(created=now, max_ttl=1000)
    await sessions.create(record)
    for i in range(3):
        await jobs.create(msgspec.structs.replace(job(i, JobStatus.QUEUED), created=now + i), b"{}")
    await jobs.start("j0", "w", 1)
    found = await sessions.refresh("s1")
    assert found is not None and state_of(found[0], found[1], time.time()) == "active"
    await sessions.close(found[0])
    statuses = {j.id: j.status for j in await sessions.session_jobs(record)}
    assert statuses == {"j0": JobStatus.RUNNING, "j1": JobStatus.CANCELLED, "j2": JobStatus.CANCELLED}
    again = await sessions.refresh("s1")
    assert again is not None and again[0].closed_at is not None and not again[0].accepting_jobs
    # An expired session is closed (and stays closed) by the next reader.
    await sessions.create(msgspec.structs.replace(record, id="s2", created=now - 2000))
    expired = await sessions.refresh("s2")
    assert expired is not None and expired[0].closed_at == now - 2000 + 1000
    await redis.aclose()
