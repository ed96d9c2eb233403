"""Operations: /ready, /workers, /metrics, worker heartbeats and leases, JSON logs, and the
GPU path as far as it runs on a CPU machine (pinning and device reporting, start-up check)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from arq.constants import in_progress_key_prefix

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.logs import ContextFilter, JsonFormatter, job_id_var
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.settings import load_settings
from qiskit_runtime_server.shared.store import JobStore
from qiskit_runtime_server.worker.heartbeat import Heartbeat
from qiskit_runtime_server.worker.leases import LeaseKeeper
from tests.unit.conftest import in_process_api


@pytest.fixture
async def pool():  # type: ignore[no-untyped-def]
    redis = await connect(None)
    yield redis
    await redis.aclose()


@pytest.fixture
async def http(pool) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with in_process_api(pool=pool, api_key=None) as client:
        yield client


async def test_not_ready_without_a_live_worker(http: httpx.AsyncClient) -> None:
    response = await http.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "workers": 0, "reasons": ["no live worker"]}
    assert (await http.get("/health")).status_code == 200


async def test_gpu_worker_reports_device_and_pinned_gpu(
    http: httpx.AsyncClient, pool, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    settings = load_settings({"QRS_DEVICE": "GPU"})
    leases = LeaseKeeper(pool, settings.job_lease, "gpu1")
    heartbeat = Heartbeat(pool, settings, "gpu1", leases)
    await heartbeat.start()
    try:
        assert (await http.get("/ready")).json() == {"status": "ready", "workers": 1}
        leases.hold("job-1")
        await heartbeat.beat()
        (entry,) = (await http.get("/workers")).json()["workers"]
        assert entry["id"] == "gpu1" and entry["device"] == "GPU" and entry["visible_devices"] == "0"
        assert entry["current_job"] == "job-1"
        assert entry["last_heartbeat"].endswith("Z")
        metrics = (await http.get("/metrics")).text
        assert 'qrs_workers_live{device="GPU"} 1.0' in metrics
        assert 'qrs_workers_busy{device="GPU"} 1.0' in metrics
        await leases.release("job-1")
    finally:
        await heartbeat.stop()
    assert (await http.get("/workers")).json() == {"workers": []}


async def test_heartbeat_expires_after_one_lease(pool) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings({"QRS_JOB_LEASE": "7"})
    heartbeat = Heartbeat(pool, settings, "w", LeaseKeeper(pool, settings.job_lease, "w"))
    await heartbeat.beat()
    assert 0 < await pool.pttl(keys.worker("w")) <= 7000


async def test_lease_is_renewed_while_held_and_left_to_arq_after(pool) -> None:  # type: ignore[no-untyped-def]
    key = in_progress_key_prefix + "job-2"
    await pool.set(key, b"1", px=50_000_000)  # arq's default: the whole time-out
    leases = LeaseKeeper(pool, 3.0, "w")
    leases.hold("job-2")
    await _until(lambda: pool.pttl(key), lambda ttl: ttl <= 3000)
    assert leases.current_jobs == ["job-2"]
    await leases.release("job-2")
    assert leases.current_jobs == []


async def _until(read, check, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await read()
        if check(value):
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_metrics_count_jobs_by_state_program_and_backend(http: httpx.AsyncClient, pool) -> None:  # type: ignore[no-untyped-def]
    store = JobStore(pool)
    now = time.time()
    for i, program in enumerate(["sampler", "sampler", "estimator"]):
        record = JobRecord(id=f"j{i}", program_id=program, backend="fake_manila", instance="i", created=now)
        await store.create(record, b"{}")
    await store.start("j0", "w", 1)
    await store.finish("j0", JobStatus.COMPLETED, b"{}")
    await store.start("j1", "w", 1)
    commands = spy_commands(pool)
    metrics = (await http.get("/metrics")).text
    assert "SMEMBERS" in commands and "SCAN" not in commands
    assert 'qrs_jobs{backend="fake_manila",program="sampler",state="Running"} 1.0' in metrics
    assert 'qrs_jobs{backend="fake_manila",program="estimator",state="Queued"} 1.0' in metrics
    assert 'qrs_queue_depth{backend="fake_manila"} 1.0' in metrics
    assert 'qrs_jobs_finished_total{program="sampler",state="Completed"} 1.0' in metrics
    assert 'qrs_job_run_seconds_count{program="sampler"} 1.0' in metrics
    assert 'qrs_job_run_seconds_bucket{le="+Inf",program="sampler"} 1.0' in metrics


def test_json_log_lines_carry_the_job_id() -> None:
    record = logging.LogRecord("qrs.worker", logging.INFO, __file__, 1, "job %s done", ("abc",), None)
    token = job_id_var.set("abc")
    try:
        ContextFilter("w1").filter(record)
    finally:
        job_id_var.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job abc done" and line["level"] == "INFO"
    assert line["job_id"] == "abc" and line["worker_id"] == "w1" and line["ts"].endswith("Z")


def test_gpu_worker_without_a_gpu_stops_at_start_up() -> None:
    from qiskit_runtime_server.worker.device import aer_devices

    if "GPU" in aer_devices():
        pytest.skip("this machine has a GPU")
    env = {"REDIS_URL": "redis://127.0.0.1:1/0", "QRS_DEVICE": "GPU", "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "qiskit_runtime_server", "worker"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "QRS_DEVICE=GPU but qiskit-aer here can only use CPU" in done.stderr


async def test_sweep_requeues_jobs_that_arq_lost(pool) -> None:  # type: ignore[no-untyped-def]
    from arq.constants import job_key_prefix

    from qiskit_runtime_server.shared.queue import enqueue_run
    from qiskit_runtime_server.worker.recovery import requeue_orphans

    store = JobStore(pool)
    old = time.time() - 60
    for job_id in ("lost", "queued", "young", "done"):
        created = time.time() if job_id == "young" else old
        record = JobRecord(id=job_id, program_id="sampler", backend="fake_manila", instance="i", created=created)
        await store.create(record, b"{}")
    await enqueue_run(pool, "q", "queued")
    await store.finish("done", JobStatus.COMPLETED, b"{}")
    await store.start("lost", "dead-worker", 1)  # Running, but arq has no trace of it

    commands = spy_commands(pool)
    assert await requeue_orphans(pool, "q", min_age=15) == ["lost"]
    assert await pool.exists(job_key_prefix + "lost")
    assert await requeue_orphans(pool, "q", min_age=15) == []
    assert commands and "SCAN" not in commands


def spy_commands(redis) -> list[str]:  # type: ignore[no-untyped-def]
    """Record the name of every command ``redis`` sends from now on (pipelines included)."""
    seen: list[str] = []
    plain, pipeline = redis.execute_command, redis.pipeline

    async def execute_command(*args, **options):  # type: ignore[no-untyped-def]
        seen.append(str(args[0]).upper())
        return await plain(*args, **options)

    def spied_pipeline(*args, **options):  # type: ignore[no-untyped-def]
        pipe = pipeline(*args, **options)
        queue = pipe.pipeline_execute_command

        def queued(*cmd, **kw):  # type: ignore[no-untyped-def]
            seen.append(str(cmd[0]).upper())
            return queue(*cmd, **kw)

        pipe.pipeline_execute_command = queued
        return pipe

    redis.execute_command, redis.pipeline = execute_command, spied_pipeline
    return seen


GUARDED = {"QRS_API_KEYS": "alice=crn:a;ops=crn:a", "QRS_ADMIN_KEYS": "ops"}


@pytest.mark.parametrize("path", ["/workers", "/metrics"])
async def test_workers_and_metrics_need_an_admin_key_with_access_control_on(path: str) -> None:
    async with in_process_api(GUARDED, api_key=None) as http:
        missing = await http.get(path)
        assert missing.status_code == 401 and missing.json()["errors"][0]["code"] == "unauthorized"
        unknown = await http.get(path, headers={"Authorization": "apikey nobody"})
        assert unknown.status_code == 401
        user = await http.get(path, headers={"Authorization": "apikey alice"})
        assert user.status_code == 403 and "QRS_ADMIN_KEYS" in user.json()["errors"][0]["message"]
        assert (await http.get(path, headers={"Authorization": "apikey ops"})).status_code == 200
        token = (await http.post("/identity/token", data={"apikey": "ops"})).json()["access_token"]
        assert (await http.get(path, headers={"Authorization": f"Bearer {token}"})).status_code == 200
        # Probes stay open.
        assert (await http.get("/health")).status_code == 200
        assert (await http.get("/ready")).status_code == 503


@pytest.mark.parametrize("path", ["/workers", "/metrics"])
async def test_open_metrics_setting_and_open_mode_keep_them_open(path: str) -> None:
    async with in_process_api({**GUARDED, "QRS_OPEN_METRICS": "true"}, api_key=None) as http:
        assert (await http.get(path)).status_code == 200
    async with in_process_api({"QRS_ADMIN_KEYS": "ops"}, api_key=None) as http:
        assert (await http.get(path)).status_code == 200
    # Access control on and no admin key configured: nobody (but QRS_OPEN_METRICS) reads them.
    async with in_process_api({"QRS_API_KEYS": "alice=crn:a"}, api_key=None) as http:
        assert (await http.get(path, headers={"Authorization": "apikey alice"})).status_code == 403
