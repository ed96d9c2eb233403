"""A worker stopped mid-job: arq's job hooks survive cancellation, the job goes back to ``Queued``.

On SIGTERM arq cancels the running job's task; on some Pythons (Debian's 3.11.2) the
cancellation reaches the ``on_job_end`` hook as well, while it publishes the heartbeat. The hook
must still finish (heartbeat, lease) and let arq hand the job back (``finish_job``); the job's
record goes back to ``Queued`` until a worker picks it up again.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import msgspec
import pytest
from arq.constants import in_progress_key_prefix, job_key_prefix
from fakeredis import FakeAsyncRedis

from qiskit_runtime_server.shared import keys, workers
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.app import build_worker
from qiskit_runtime_server.worker.recovery import requeue_orphans


def _record(job_id: str) -> JobRecord:
    return JobRecord(
        id=job_id, program_id="sampler", backend="fake_manila", instance="i", created=0.0, status=JobStatus.QUEUED
    )


async def _stored_job(pool: FakeAsyncRedis, job_id: str, worker_id: str) -> JobStore:
    store = JobStore(pool)
    await store.create(_record(job_id), b"{}")
    await store.start(job_id, worker_id, 1)
    return store


async def test_job_end_finishes_while_its_task_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = FakeAsyncRedis()
    settings = load_settings({"QRS_WORKER_ID": "w1", "QRS_JOB_LEASE": "3"})
    worker = build_worker(settings, pool, embedded=True)  # type: ignore[arg-type]
    store = await _stored_job(pool, "j1", "w1")
    worker.ctx.update(store=store)  # what the start-up hook adds
    publishing = asyncio.Event()
    real_publish = workers.publish

    async def slow_publish(redis, info, ttl):  # type: ignore[no-untyped-def]
        publishing.set()
        await asyncio.sleep(0.2)  # a Redis round trip, long enough to be cancelled in
        await real_publish(redis, info, ttl)

    monkeypatch.setattr(workers, "publish", slow_publish)
    ctx = {**worker.ctx, "job_id": "j1", "job_try": 1}
    assert worker.on_job_start is not None and worker.on_job_end is not None
    await worker.on_job_start(ctx)
    publishing.clear()
    hook = asyncio.create_task(worker.on_job_end(ctx))
    await publishing.wait()
    hook.cancel()  # arq's shutdown cancelling the job's task again, in the hook
    await asyncio.sleep(0.05)
    hook.cancel()
    await asyncio.wait_for(hook, 2)  # returns: arq goes on to finish_job
    assert not hook.cancelled()
    entry = msgspec.json.decode(await pool.get(keys.worker("w1")))
    assert entry.get("current_job") is None  # the end-of-job heartbeat was published
    # The job was not finished: it is handed back, so it reads Queued until picked up again.
    record = await store.get("j1")
    assert record is not None and record.status is JobStatus.QUEUED


async def test_requeue_moves_running_back_to_queued_and_start_to_running() -> None:
    pool = FakeAsyncRedis()
    store = await _stored_job(pool, "j2", "w1")
    requeued = await store.requeue("j2", "w1", log=["handed back"])
    assert requeued is not None and requeued.status is JobStatus.QUEUED and requeued.worker_id is None
    assert await store.logs("j2") == ["handed back"]
    assert await store.pending_count("fake_manila") == 1
    assert await store.requeue("j2", "w1") is None  # already queued
    restarted = await store.start("j2", "w2", 2)
    assert restarted is not None and restarted.status is JobStatus.RUNNING and restarted.worker_id == "w2"
    assert await store.requeue("j2", "w1") is None  # another worker holds it now
    await store.finish("j2", JobStatus.COMPLETED, b"{}")
    assert await store.requeue("j2") is None  # final stays final


async def test_sweep_marks_a_job_waiting_out_a_dead_workers_lease_queued() -> None:
    pool = FakeAsyncRedis()
    store = await _stored_job(pool, "j3", "dead-worker")
    await pool.set(job_key_prefix + "j3", b"x")  # still in arq's queue; its lease (in-progress key) expired
    assert await requeue_orphans(pool, "q", min_age=0, backends=["fake_manila"]) == []  # type: ignore[arg-type]
    record = await store.get("j3")
    assert record is not None and record.status is JobStatus.QUEUED
    await pool.set(in_progress_key_prefix + "j3", b"w2")
    await store.start("j3", "w2", 2)
    await requeue_orphans(pool, "q", min_age=0, backends=["fake_manila"])  # type: ignore[arg-type]
    record = await store.get("j3")
    assert record is not None and record.status is JobStatus.RUNNING  # held: left alone


def test_worker_ids_are_unique_per_process_start() -> None:
    code = "from qiskit_runtime_server.shared.settings import load_settings as l; print(l({}).effective_worker_id)"
    ids = [subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()]
    ids.append(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip())
    for worker_id in ids:
        assert re.fullmatch(r".+-\d+-[0-9a-f]{6}", worker_id), worker_id
    # Same host, and in a container the same pid every time (init: true): the suffix differs.
    assert ids[0].rsplit("-", 1)[1] != ids[1].rsplit("-", 1)[1]
    settings = load_settings({})
    assert settings.effective_worker_id == settings.effective_worker_id  # stable within the process


def test_worker_health_probe_is_silent(real_redis_url: str) -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "qiskit_runtime_server", "worker-health"],
        env={"REDIS_URL": real_redis_url, "QRS_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode in (0, 1)  # 0 if a test's worker on this host is still registered
    assert probe.stdout == "" and probe.stderr == ""


async def test_sigterm_hand_back_through_arq_leaves_the_job_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """arq's own SIGTERM path: grace, cancel, on_job_end, finish_job, shutdown hook."""
    import dataclasses
    import signal

    from qiskit_runtime_server.shared.queue import RUN_JOB, connect, enqueue_run

    pool = await connect(None)  # ArqRedis on fakeredis
    settings = load_settings({"QRS_WORKER_ID": "w1", "QRS_JOB_LEASE": "3", "QRS_SHUTDOWN_GRACE": "1"})
    worker = build_worker(settings, pool, embedded=True)
    started = asyncio.Event()

    async def busy_job(ctx, job_id):  # type: ignore[no-untyped-def]
        await ctx["store"].start(job_id, ctx["worker_id"], 1)
        started.set()
        await asyncio.sleep(60)

    async def no_runner(ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.update(store=JobStore(pool), settings=settings, worker_id="w1")

    worker.functions[RUN_JOB] = dataclasses.replace(worker.functions[RUN_JOB], coroutine=busy_job)
    monkeypatch.setattr(worker, "on_startup", no_runner)
    monkeypatch.setattr(worker, "on_shutdown", None)
    store = JobStore(pool)
    await store.create(_record("j4"), b"{}")
    await enqueue_run(pool, settings.queue_name, "j4")
    run = asyncio.create_task(worker.async_run())
    await asyncio.wait_for(started.wait(), 10)
    worker.handle_sig_wait_for_completion(signal.SIGTERM)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 10)
    record = await store.get("j4")
    assert record is not None and record.status is JobStatus.QUEUED
    assert await pool.zscore(settings.queue_name, "j4") is not None  # still in arq's queue
