"""Storage integrity: instance names cannot reach other instances'
keys, a job stored but never acknowledged never runs, and session state changes are
compare-and-set, so a closed session never reopens and never runs a job admitted during the close.

The race tests run many parallel requests (``asyncio.gather``) through the in-process API on
the real Redis (``REDIS_TEST_URL``), where the API's connections really interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from qiskit_runtime_server.shared import job_index, keys
from qiskit_runtime_server.shared.models import JobStatus
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.settings import DEFAULT_INSTANCE
from qiskit_runtime_server.worker.recovery import requeue_orphans
from tests.unit.conftest import in_process_api

VICTIM = DEFAULT_INSTANCE
JOB = {"program_id": "sampler", "backend": "fake_manila", "params": {"pubs": [1]}}
QUEUE = "qrs:queue"


async def _submit(http: httpx.AsyncClient, instance: str = VICTIM, **extra: Any) -> httpx.Response:
    return await http.post("/api/v1/jobs", json={**JOB, **extra}, headers={"Service-CRN": instance})


async def _job_ids(pool: ArqRedis) -> set[str]:
    """Ids of every stored job record (a test-only scan)."""
    found = set()
    async for key in pool.scan_iter(match=f"{keys.PREFIX}job:*"):
        name = key.decode()
        if name.count(":") == 2:
            found.add(name.rsplit(":", 1)[1])
    return found


# --- instance names in keys -------------------------------------------------------------------


async def test_an_instance_named_like_a_filter_key_does_not_list_the_victims_jobs(client: httpx.AsyncClient) -> None:
    victim_job = (await _submit(client)).json()["id"]
    attacker = f"{VICTIM}:backend:fake_manila"
    listing = await client.get("/api/v1/jobs", headers={"Service-CRN": attacker})
    assert listing.status_code == 200
    assert victim_job not in [j["id"] for j in listing.json()["jobs"]]
    assert listing.json()["count"] == 0
    # The victim still sees its job through that filter.
    own = await client.get("/api/v1/jobs", params={"backend": "fake_manila"}, headers={"Service-CRN": VICTIM})
    assert [j["id"] for j in own.json()["jobs"]] == [victim_job]


async def test_an_instance_named_like_a_session_index_cannot_inject_a_job(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/sessions", json={"mode": "batch", "backend": "fake_manila"}, headers={"Service-CRN": VICTIM}
    )
    session_id = created.json()["id"]
    attacker = f"{VICTIM}:session:{session_id}"
    injected = (await _submit(client, attacker)).json()["id"]
    redis = client.app_state["pool"]  # type: ignore[attr-defined]
    assert injected not in await job_index.session_job_ids(redis, VICTIM, session_id)
    listing = await client.get("/api/v1/jobs", params={"session_id": session_id}, headers={"Service-CRN": VICTIM})
    assert listing.json()["count"] == 0
    details = await client.get(f"/api/v1/sessions/{session_id}", headers={"Service-CRN": VICTIM})
    assert details.json()["state"] == "open"  # no job joined it
    # Closing the victim's session does not cancel the attacker's job either.
    await client.delete(f"/api/v1/sessions/{session_id}/close", headers={"Service-CRN": VICTIM})
    job = await client.get(f"/api/v1/jobs/{injected}", headers={"Service-CRN": attacker})
    assert job.json()["status"] == "Queued"


def test_every_key_part_is_encoded() -> None:
    hostile = "a:b*c%d\ud800"
    assert keys.instance_jobs(hostile).count(":") == 2
    assert keys.job_filter(hostile, "tag", hostile).count(":") == 4
    assert keys.usage(hostile, "2026-12").count(":") == 3
    for build in (keys.job, keys.session, keys.pending):
        assert build(hostile).count(":") == 2 and "*" not in build(hostile)
    assert keys.job_params(hostile).count(":") == 3
    # Server-made ids and backend names are unchanged.
    assert keys.job("d0abc") == "qrs:job:d0abc" and keys.pending("fake_manila") == "qrs:pending:fake_manila"


# --- store + enqueue ----------------------------------------------------------------------------


@pytest.fixture
async def fake_pool() -> AsyncIterator[ArqRedis]:
    pool = await connect(None)
    yield pool
    await pool.aclose()


async def test_a_job_whose_enqueue_fails_is_never_run_after_the_client_retries(
    fake_pool: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops before the batch that writes the arq queue reaches Redis: the
    client gets a 5xx and re-POSTs; exactly one job (the one it got an id for) may run."""
    real_execute = Pipeline.execute
    failures = {"left": 1}

    async def execute(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        queues = [args for args, _ in self.command_stack if args[0] == "ZADD" and args[1] in (QUEUE, QUEUE.encode())]
        if queues and failures["left"]:
            failures["left"] -= 1
            await self.reset()
            raise RedisConnectionError("connection lost before EXEC")
        return await real_execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", execute)
    async with in_process_api(pool=fake_pool) as http:
        try:
            failed = await _submit(http)
            assert failed.status_code >= 500
        except RedisConnectionError:
            pass  # ASGITransport re-raises what the 500 handler answered for
        retried = await _submit(http)
        assert retried.status_code == 200
        job_id = retried.json()["id"]
    assert await _job_ids(fake_pool) == {job_id}
    # The orphan sweep finds nothing to run besides the acknowledged job, which is queued.
    assert await requeue_orphans(fake_pool, QUEUE, min_age=0) == []
    queued = await fake_pool.zrange(QUEUE, 0, -1)
    assert [q.decode() for q in queued] == [job_id]


async def test_a_stored_job_is_queued_for_arq_in_the_same_write(fake_pool: ArqRedis) -> None:
    async with in_process_api(pool=fake_pool) as http:
        job_id = (await _submit(http)).json()["id"]
    from arq.jobs import Job

    info = await Job(job_id, fake_pool, _queue_name=QUEUE).info()
    assert info is not None and info.function == "runtime.run_job" and info.args == (job_id,)
    assert await fake_pool.ttl(keys.job(job_id)) == -1  # a live job never expires


# --- sessions under compare-and-set ------------------------------------------------------------


@pytest.fixture
async def real_http(real_redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    pool = await connect(real_redis_url)
    try:
        async with in_process_api({"REDIS_URL": real_redis_url}, pool=pool) as http:
            yield http
    finally:
        await pool.flushdb()
        await pool.aclose()


async def _new_session(http: httpx.AsyncClient) -> str:
    created = await http.post("/api/v1/sessions", json={"mode": "dedicated", "backend": "fake_manila"})
    return str(created.json()["id"])


async def test_patch_racing_close_never_reopens_the_session(real_http: httpx.AsyncClient) -> None:
    reopened = 0
    for _ in range(30):
        session_id = await _new_session(real_http)
        base = f"/api/v1/sessions/{session_id}"
        patches = [real_http.patch(base, json={"accepting_jobs": True}) for _ in range(8)]
        await asyncio.gather(*patches[:4], real_http.delete(f"{base}/close"), *patches[4:])
        details = (await real_http.get(base)).json()
        late = await _submit(real_http, session_id=session_id)
        if details["state"] != "closed" or details["accepting_jobs"] or late.status_code == 200:
            reopened += 1
    assert reopened == 0


async def test_no_job_admitted_while_its_session_closes_is_left_to_run(real_http: httpx.AsyncClient) -> None:
    left_queued = []
    for _ in range(40):
        session_id = await _new_session(real_http)
        posts = [_submit(real_http, session_id=session_id) for _ in range(10)]
        close = real_http.delete(f"/api/v1/sessions/{session_id}/close")
        answers = await asyncio.gather(*posts[:5], close, *posts[5:])
        for answer in answers:
            if answer.request.method == "POST":
                assert answer.status_code in (200, 409), answer.text
        for answer in answers:
            if answer.request.method == "POST" and answer.status_code == 200:
                job = (await real_http.get(f"/api/v1/jobs/{answer.json()['id']}")).json()
                if job["status"] != JobStatus.CANCELLED.value:
                    left_queued.append(job["id"])
    assert left_queued == []
