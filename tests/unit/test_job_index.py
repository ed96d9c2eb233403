"""The GET /jobs indexes answer every filter combination exactly like a scan would."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.job_index import JobQuery
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.store import JobStore

INSTANCE = "crn:v1:test:a/acct:one::"
OTHER = "crn:v1:test:a/acct:two::"


@pytest.fixture(params=["fakeredis", "redis"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    if request.param == "fakeredis":
        client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    else:
        client = Redis.from_url(request.getfixturevalue("real_redis_url"))
        await client.flushdb()
    yield client
    await client.aclose()


def matches(record: JobRecord, query: JobQuery) -> bool:
    return (
        record.instance == query.instance
        and (query.backend is None or record.backend == query.backend)
        and (query.program is None or record.program_id == query.program)
        and set(query.tags) <= set(record.tags)
        and (query.session_id is None or record.session_id == query.session_id)
        and (query.pending is None or query.pending != record.status.final)
        and (query.created_after is None or record.created >= query.created_after)
        and (query.created_before is None or record.created <= query.created_before)
    )


async def populate(store: JobStore) -> list[JobRecord]:
    rng = random.Random(5)
    records = []
    for i in range(60):
        record = JobRecord(
            id=f"job{i:03d}",
            program_id=rng.choice(["sampler", "estimator"]),
            backend=rng.choice(["fake_a", "fake_b", "fake_c"]),
            instance=OTHER if i % 7 == 0 else INSTANCE,
            created=1_000.0 + i,
            tags=sorted(rng.sample(["x", "y", "z"], rng.randint(0, 2))),
            session_id=rng.choice([None, "s1", "s2"]),
        )
        await store.create(record, b"{}")
        records.append(record)
    # Some jobs end in each final state; their state index must follow.
    for record in records[::3]:
        await store.finish(record.id, JobStatus.COMPLETED, b"ok")
    for record in records[1::5]:
        await store.cancel(record.id)
    return [r for r in await store.many([r.id for r in records])]


async def test_every_filter_combination_matches_a_scan(redis: Redis) -> None:
    store = JobStore(redis)
    records = await populate(store)
    options = itertools.product(
        [None, "fake_b"], [None, "sampler"], [(), ("x",), ("x", "y")], [None, "s1"], [None, True, False]
    )
    for backend, program, tags, session, pending in options:
        for after, before, ascending in [(None, None, False), (1_010.0, 1_040.0, True)]:
            query = JobQuery(
                instance=INSTANCE,
                limit=5,
                offset=2,
                backend=backend,
                program=program,
                tags=tags,
                session_id=session,
                pending=pending,
                created_after=after,
                created_before=before,
                ascending=ascending,
            )
            expected = sorted((r for r in records if matches(r, query)), key=lambda r: r.created, reverse=not ascending)
            page, count = await store.find(query)
            assert count == len(expected), query
            assert [r.id for r in page] == [r.id for r in expected[2:7]], query
    # The scratch intersections are gone after each request.
    assert not [k async for k in redis.scan_iter(keys.listing_scratch("*"))]


async def test_tags_delete_and_isolation_keep_indexes_consistent(redis: Redis) -> None:
    store = JobStore(redis)
    records = await populate(store)
    mine = [r for r in records if r.instance == INSTANCE]
    target = mine[0]
    await store.set_tags(target.id, ["new"])
    page, count = await store.find(JobQuery(instance=INSTANCE, tags=("new",)))
    assert count == 1 and page[0].id == target.id
    for old_tag in target.tags:
        page, _ = await store.find(JobQuery(instance=INSTANCE, tags=(old_tag,), limit=1000))
        assert target.id not in {r.id for r in page}
    assert await store.delete(target.id)
    assert await store.get(target.id) is None
    assert await store.delete(target.id) is False
    _, count = await store.find(JobQuery(instance=INSTANCE, limit=1000))
    assert count == len(mine) - 1
    _, other_count = await store.find(JobQuery(instance=OTHER, limit=1000))
    assert other_count == len(records) - len(mine)
    # Deletion leaves no index entry behind anywhere.
    async for key in redis.scan_iter(f"{keys.PREFIX}jobs:*"):
        assert await redis.zscore(key, target.id) is None


async def test_cancel_only_changes_non_final_jobs(redis: Redis) -> None:
    store = JobStore(redis)
    record = JobRecord(id="j1", program_id="sampler", backend="fake_a", instance=INSTANCE, created=1.0)
    await store.create(record, b"{}")
    cancelled = await store.cancel("j1")
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert await store.cancel("j1") is None
    assert await store.pending_count("fake_a") == 0
    page, count = await store.find(JobQuery(instance=INSTANCE, pending=False))
    assert count == 1 and page[0].status == JobStatus.CANCELLED
