"""Redis traffic of one job's stored path, counted in process: the API's create (record, indexes,
dashboard counters, arq queue entry, doorbell), and the worker's read, start and finish.

Commands are counted as redis-py packs them, round trips as it sends them (a pipeline or a
MULTI/EXEC block is one send). ``python -m bench.redis_ops`` counts the whole deployment
(arq's claim, heartbeats, the client's requests) on the real Redis; this test keeps the part
this project writes from growing back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from qiskit_runtime_server.api.metrics import render_metrics
from qiskit_runtime_server.shared import keys, stats
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import connect
from qiskit_runtime_server.shared.store import Claim, JobStore

# The job's stored path (create, load, start, finish): measured 124 commands in 6 round trips.
MAX_COMMANDS = 124
MAX_ROUND_TRIPS = 6


class Counter:
    def __init__(self) -> None:
        self.commands = 0
        self.round_trips = 0


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    count = Counter()
    pack_command = AbstractConnection.pack_command  # pack_commands (pipelines) calls it per command
    send = AbstractConnection.send_packed_command

    def one(self: AbstractConnection, *args: Any) -> Any:
        count.commands += 1
        return pack_command(self, *args)

    async def sent(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        count.round_trips += 1
        await send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "pack_command", one)
    monkeypatch.setattr(AbstractConnection, "send_packed_command", sent)
    yield count


async def test_one_job_stays_within_its_redis_budget(counter: Counter) -> None:
    pool = await connect(None)
    store = JobStore(pool)
    record = JobRecord(id="j1", program_id="sampler", backend="fake_manila", instance="crn:x", created=time.time())
    await pool.ping()
    counter.commands = counter.round_trips = 0

    await store.create(record, b"{}", queue_name="qrs:queue")
    loaded, params = await store.load("j1")
    assert loaded is not None and params == b"{}"
    assert await store.start("j1", "w1", 1, log=["started"]) is not None
    claim = Claim("w1", 1)
    done = await store.finish("j1", JobStatus.COMPLETED, b"result", claim=claim, quantum_seconds=0.01, log=["done"])
    assert done is not None and done.status is JobStatus.COMPLETED

    assert counter.round_trips <= MAX_ROUND_TRIPS, counter.round_trips
    assert counter.commands <= MAX_COMMANDS, counter.commands
    await pool.aclose()


async def test_histogram_buckets_written_once_are_summed_cumulatively_when_read() -> None:
    pool = await connect(None)
    store = JobStore(pool)
    for i, seconds in enumerate((0.05, 0.3, 0.3, 2000.0)):
        record = JobRecord(id=f"j{i}", program_id="sampler", backend="fake_manila", instance="crn:x", created=1.0)
        await store.create(record, b"{}")
        await store.start(f"j{i}", "w", 1)
        await pool.set(keys.job(f"j{i}"), _with_running(await pool.get(keys.job(f"j{i}")), time.time() - seconds))
        await store.finish(f"j{i}", JobStatus.COMPLETED, b"r", claim=Claim("w", 1))
    fields = await pool.hgetall(keys.JOB_STATS)
    assert sum(int(v) for f, v in fields.items() if f.startswith(b"runb|")) == 4  # one field written per job
    await pool.hset(keys.JOB_STATS, "run|sampler|+Inf", 3)  # a cumulative bucket of an earlier version
    text = (await render_metrics(pool, "qrs:queue", backends=[])).decode()
    assert 'qrs_job_run_seconds_bucket{le="0.1",program="sampler"} 1.0' in text
    assert 'qrs_job_run_seconds_bucket{le="0.5",program="sampler"} 3.0' in text
    assert 'qrs_job_run_seconds_bucket{le="1800.0",program="sampler"} 3.0' in text
    assert 'qrs_job_run_seconds_bucket{le="+Inf",program="sampler"} 7.0' in text
    await pool.aclose()


def test_totals_over_backends_are_summed_when_read() -> None:
    stored = {"backend|a|Queued": 2.0, "backend|b|Queued": 1.0, "state|Queued": 99.0, "created|a": 4.0, "created": 1.0}
    stored |= {"final|a|Completed": 2.0, "final|b|Completed": 3.0, "final|Completed": 7.0, "run_s|a": 1.5}
    assert stats.with_totals(stored) == {
        "backend|a|Queued": 2.0,
        "backend|b|Queued": 1.0,
        "state|Queued": 3.0,
        "created|a": 4.0,
        "created": 4.0,
        "final|a|Completed": 2.0,
        "final|b|Completed": 3.0,
        "final|Completed": 5.0,
        "run_s|a": 1.5,
    }


def _with_running(raw: bytes, running: float) -> bytes:
    import msgspec

    record = msgspec.json.decode(raw, type=JobRecord)
    return msgspec.json.encode(msgspec.structs.replace(record, running=running))
