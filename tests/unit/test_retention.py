"""Retention: finished jobs and closed sessions expire after
``QRS_JOB_RETENTION`` while live ones never do, expired jobs leave every index without a
keyspace scan, usage counters expire, large ignored options are not copied into results, and
the compose Redis is bounded with a policy that can evict only expiring (finished) data."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import fakeredis
import httpx
import msgspec
import pytest
import yaml
from redis.asyncio import Redis
from redis.exceptions import RedisError

from qiskit_runtime_server.shared import job_index, keys
from qiskit_runtime_server.shared.job_index import JobQuery
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.sessions import SessionRecord, SessionStore
from qiskit_runtime_server.shared.settings import DEFAULT_INSTANCE, load_settings
from qiskit_runtime_server.shared.store import USAGE_TTL, JobStore, usage_period
from tests.conftest import free_port
from tests.unit.conftest import in_process_api

INSTANCE = "crn:v1:test:a/acct:retention::"
RETENTION = 100
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1]}}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


def job(job_id: str, created: float | None = None, **kw: object) -> JobRecord:
    base = JobRecord(
        id=job_id, program_id="sampler", backend="fake_a", instance=INSTANCE, created=created or time.time()
    )
    return msgspec.structs.replace(base, **kw)


def job_keys(job_id: str) -> list[str]:
    return [keys.job(job_id), keys.job_params(job_id), keys.job_result(job_id), keys.job_logs(job_id)]


def test_retention_is_a_setting_of_30_days_by_default() -> None:
    assert load_settings({}).job_retention == 30 * 86_400
    assert load_settings({"QRS_JOB_RETENTION": "3600"}).job_retention == 3600


async def test_a_finished_job_expires_after_the_retention_and_a_live_one_never(redis: Redis) -> None:
    store = JobStore(redis, retention=RETENTION)
    await store.create(job("j1"), b"{}")
    await store.start("j1", "w1", 1, log=["started"])
    assert [await redis.ttl(k) for k in job_keys("j1") if await redis.exists(k)] == [-1, -1, -1]
    await store.finish("j1", JobStatus.COMPLETED, b"result", log=["done"], quantum_seconds=1.5)
    ttls = [await redis.ttl(k) for k in job_keys("j1")]
    assert all(0 < t <= RETENTION for t in ttls), ttls
    usage = keys.usage(INSTANCE, usage_period(time.time()))
    assert 0 < await redis.ttl(usage) <= USAGE_TTL
    # A tag change on the finished job neither makes it permanent nor counts it again.
    await store.set_tags("j1", ["later"])
    assert 0 < await redis.ttl(keys.job("j1")) <= RETENTION
    assert await store.usage_seconds(INSTANCE, usage_period(time.time())) == 1.5
    assert (await redis.hgetall(keys.JOB_STATS))[b"finished|sampler|Completed"] == b"1"


async def test_a_log_line_written_after_the_end_expires_with_the_job(redis: Redis) -> None:
    store = JobStore(redis, retention=RETENTION)
    await store.create(job("j2"), b"{}")
    await store.cancel("j2")
    await store.log("j2", "cancelled by the user")
    assert 0 < await redis.ttl(keys.job_logs("j2")) <= RETENTION
    await store.delete("j2")
    await store.log("j2", "too late")
    assert not await redis.exists(keys.job_logs("j2"))


async def test_expired_jobs_leave_every_index_without_a_keyspace_scan(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(redis, retention=1)
    old = time.time() - 10
    await store.create(job("done", old, tags=["only-done"], session_id="s1"), b"{}")
    await store.create(job("live", old + 1, tags=["shared"], session_id="s1"), b"{}")
    await store.create(job("late", old + 2, tags=["shared"]), b"{}")
    await store.finish("done", JobStatus.COMPLETED, b"r")
    await store.finish("late", JobStatus.COMPLETED, b"r")
    await asyncio.sleep(1.1)  # "done" and "late" expire; "live" is queued and never does
    assert not await redis.exists(keys.job("done"))

    async def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("retention must not scan the keyspace")

    monkeypatch.setattr(type(redis), "scan", no_scan)
    monkeypatch.setattr(type(redis), "scan_iter", no_scan)
    monkeypatch.setattr(job_index, "TRIM_INTERVAL", 0.0)
    removed = await job_index.trim(redis, 1, time.time())
    # done: all, backend, program, tag, session, state=final; late: the same but no session.
    # Each also leaves the dashboard's 7 sets (all instances: all, backend, program; per instance
    # and for all: state, state+backend; shared/stats.py).
    assert removed == 6 + 5 + 2 * 7
    ids, count = await job_index.find(redis, JobQuery(instance=INSTANCE))
    assert (ids, count) == (["live"], 1)
    assert await job_index.session_job_ids(redis, INSTANCE, "s1") == ["live"]
    gone = keys.job_filter(INSTANCE, "tag", "only-done")
    assert not await redis.exists(gone)
    registry = {k.decode() for k in await redis.zrange(keys.INDEXES, 0, -1)}
    assert gone not in registry and keys.job_filter(INSTANCE, "state", "final") not in registry
    assert keys.instance_jobs(INSTANCE) in registry  # still holds "live"


async def test_housekeeping_closes_sessions_that_ended_unread(redis: Redis) -> None:
    store = JobStore(redis, retention=RETENTION)
    sessions = SessionStore(redis, store)
    now = time.time()

    def session(session_id: str, created: float) -> SessionRecord:
        return SessionRecord(
            id=session_id, instance=INSTANCE, backend="fake_a", mode="batch", max_ttl=100, interactive_ttl=0,
            created=created,
        )  # fmt: skip

    await sessions.create(session("ended", now - 1000))
    await sessions.create(session("open", now))
    assert await sessions.housekeeping(now)
    ended = await sessions.get("ended")
    assert ended is not None and ended.closed_at is not None
    assert 0 < await redis.ttl(keys.session("ended")) <= RETENTION
    assert await redis.ttl(keys.session("open")) == -1
    assert [m.decode() for m in await redis.zrange(keys.OPEN_SESSIONS, 0, -1)] == ["open"]
    assert not await sessions.housekeeping(now + 1)  # at most once a minute per process


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api({"QRS_JOB_RETENTION": str(RETENTION)}) as client:
        yield client


async def test_a_closed_session_and_its_cancelled_jobs_expire(http: httpx.AsyncClient) -> None:
    redis = http.app_state["pool"]  # type: ignore[attr-defined]
    created = await http.post("/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila"})
    session_id = created.json()["id"]
    assert await redis.ttl(keys.session(session_id)) == -1
    job_id = (await http.post("/api/v1/jobs", json={**JOB, "session_id": session_id})).json()["id"]
    assert await redis.ttl(keys.job(job_id)) == -1
    assert (await http.delete(f"/api/v1/sessions/{session_id}/close")).status_code == 204
    assert 0 < await redis.ttl(keys.session(session_id)) <= RETENTION
    assert 0 < await redis.ttl(keys.job(job_id)) <= RETENTION
    # A late PATCH changes nothing, so the closed session keeps expiring.
    await http.patch(f"/api/v1/sessions/{session_id}", json={"accepting_jobs": True})
    assert 0 < await redis.ttl(keys.session(session_id)) <= RETENTION


async def test_a_cancelled_job_expires_with_its_cancellation_log(http: httpx.AsyncClient) -> None:
    redis = http.app_state["pool"]  # type: ignore[attr-defined]
    job_id = (await http.post("/api/v1/jobs", json=JOB, headers={"Service-CRN": DEFAULT_INSTANCE})).json()["id"]
    assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).status_code == 204
    for key in job_keys(job_id):
        assert 0 < await redis.ttl(key) <= RETENTION, key


def test_large_ignored_options_are_named_not_copied_into_the_result() -> None:
    from qiskit_runtime_server.worker.programs.options import parse_options

    raw = {
        "dynamical_decoupling": {"enable": True, "sequence_type": "XX"},
        "huge": "x" * 10**6,
        "values": list(range(10**5)),
        "twirling": {"enable_gates": True, "blob": "y" * 10**5},
        "environment": {"job_tags": ["a"]},  # handled by the client, not ignored
    }
    raw.update({f"extra{i}": i for i in range(200)})
    ignored = parse_options(raw, estimator=False).ignored
    assert ignored["dynamical_decoupling"] == {"enable": True, "sequence_type": "XX"}
    assert ignored["twirling"]["enable_gates"] is True
    assert {"huge", "values", "twirling"} <= set(ignored) and "environment" not in ignored
    assert len(repr(ignored)) < 8_192


def test_compose_redis_is_bounded_and_evicts_only_expiring_keys() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = [str(arg) for arg in compose["services"]["redis"]["command"]]
    assert command[command.index("--maxmemory") + 1].startswith("${REDIS_MAXMEMORY:-")
    # volatile-*: only keys with a TTL (finished jobs, closed sessions) can be evicted. Not
    # volatile-ttl: the 15 s job leases would be the first to go.
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    for service in ("api", "worker"):
        assert "QRS_JOB_RETENTION" in compose["services"][service]["environment"]


async def test_api_writes_run_the_housekeeping(http: httpx.AsyncClient) -> None:
    redis = http.app_state["pool"]  # type: ignore[attr-defined]
    sessions: SessionStore = http.app_state["sessions"]  # type: ignore[attr-defined]
    old = SessionRecord(
        id="unread", instance=DEFAULT_INSTANCE, backend="fake_manila", mode="batch", max_ttl=10,
        interactive_ttl=0, created=time.time() - 100,
    )  # fmt: skip
    await sessions.create(old)
    assert (await http.post("/api/v1/jobs", json=JOB)).status_code == 200
    assert 0 < await redis.ttl(keys.session("unread")) <= RETENTION


async def test_a_full_redis_with_the_compose_policy_evicts_finished_jobs_only(tmp_path: Path) -> None:
    """A real ``redis-server`` with the compose file's eviction policy and a 4 MB bound: live
    jobs (queued, with their arq entries) survive a flood of finished ones; old finished ones go."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = [str(arg) for arg in compose["services"]["redis"]["command"]]
    policy = command[command.index("--maxmemory-policy") + 1]
    port = free_port()
    args = ["--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    proc = subprocess.Popen(
        ["redis-server", *args, "--maxmemory", "4mb", "--maxmemory-policy", policy],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pool = None
        for _ in range(50):
            try:
                pool = await connect(f"redis://127.0.0.1:{port}/0")
                break
            except RedisError:  # not listening yet
                await asyncio.sleep(0.1)
        assert pool is not None
        store = JobStore(pool, retention=RETENTION)
        params = b'{"pubs": ["' + b"x" * 20_000 + b'"]}'
        live = [f"live{i}" for i in range(40)]
        for job_id in live:
            await store.create(job(job_id), params, queue_name="q")
        for i in range(400):  # 8 MB of finished jobs into 4 MB
            await store.create(job(f"done{i}"), params)
            await store.finish(f"done{i}", JobStatus.COMPLETED, b"r" * 1000)
        info = await pool.info("stats")
        assert info["evicted_keys"] > 0
        for job_id in live:
            assert await store.get(job_id) is not None
            assert await store.params(job_id) == params
        assert await pool.zcard("q") == len(live)
        assert await store.get("done399") is not None  # the most recent finished ones stay
        await pool.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
