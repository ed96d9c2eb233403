"""Store rules for private jobs and the listing rule for jobs on mock devices, on fakeredis and
the real Redis (``REDIS_TEST_URL``)."""

from __future__ import annotations

import itertools

from redis.asyncio import Redis

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.job_index import JobQuery
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.store import JobStore
from tests.unit.test_job_index import INSTANCE, matches, populate, redis  # noqa: F401 (fixture)


def _record(job_id: str, **extra: object) -> JobRecord:
    fields: dict = {"program_id": "sampler", "backend": "fake_a", "instance": INSTANCE, "created": 1.0, **extra}
    return JobRecord(id=job_id, **fields)


async def test_private_params_deleted_when_final_and_result_read_once(redis: Redis) -> None:  # noqa: F811
    store = JobStore(redis)
    await store.create(_record("p1", private=True), b'{"pubs": []}')
    await store.start("p1", "w1", 1)
    assert await store.params("p1") == b'{"pubs": []}'  # the worker reads them while running
    await store.finish("p1", JobStatus.COMPLETED, b"result")
    assert await store.params("p1") is None
    assert await store.take_result("p1") == b"result"
    assert await store.take_result("p1") is None
    assert await store.result("p1") is None
    assert (await store.get("p1")).status == JobStatus.COMPLETED  # type: ignore[union-attr]
    # A private job cancelled in the queue loses its params too; a public one keeps them.
    await store.create(_record("p2", private=True), b"{}")
    await store.cancel("p2")
    assert await store.params("p2") is None
    await store.create(_record("j3"), b"{}")
    await store.finish("j3", JobStatus.COMPLETED, b"result")
    assert await store.params("j3") == b"{}" and await store.result("j3") == b"result"


async def test_mock_jobs_listed_only_on_request(redis: Redis) -> None:  # noqa: F811
    store = JobStore(redis)
    records = await populate(store)
    mocks = []
    for i in range(8):
        mock = _record(f"mock{i}", backend=["mock_a", "mock_b"][i % 2], created=1_000.5 + 7 * i, tags=["x"])
        await store.create(mock, b"{}")
        mocks.append(mock)
    await store.finish("mock0", JobStatus.COMPLETED, b"ok")
    everything = await store.many([r.id for r in records + mocks])
    options = itertools.product([None, "fake_b", "mock_a"], [(), ("x",)], [None, False], [False, True])
    for backend, tags, pending, include_mocks in options:
        query = JobQuery(
            instance=INSTANCE,
            limit=4,
            offset=1,
            backend=backend,
            tags=tags,
            pending=pending,
            include_mocks=include_mocks,
        )
        shown = include_mocks or backend == "mock_a"
        expected = sorted(
            (r for r in everything if matches(r, query) and (shown or not r.backend.startswith("mock_"))),
            key=lambda r: r.created,
            reverse=True,
        )
        page, count = await store.find(query)
        assert count == len(expected), query
        assert [r.id for r in page] == [r.id for r in expected[1:5]], query
    assert not [k async for k in redis.scan_iter(keys.listing_scratch("*"))]
    # Deleting the mock jobs leaves the fast path (no mock index left to subtract).
    for mock in mocks:
        await store.delete(mock.id)
    assert not await redis.exists(keys.job_filter(INSTANCE, "class", "mock"))
