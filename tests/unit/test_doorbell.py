"""The enqueue doorbell wakes a worker's loop; other queues' bells do not."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.queue import connect, enqueue_run
from qiskit_runtime_server.worker.doorbell import Doorbell


async def test_enqueue_rings_the_doorbell_of_its_queue_only() -> None:
    pool = await connect(None)
    mine, other = Doorbell(pool, "q-mine"), Doorbell(pool, "q-other")
    await mine.start()
    await other.start()
    try:
        await enqueue_run(pool, "q-mine", "job-1")
        await asyncio.wait_for(mine.wait(60), timeout=5)  # woken, not timed out after 60 s
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.wait(60), timeout=0.3)
    finally:
        await mine.stop()
        await other.stop()


async def test_local_ring_and_fallback_timeout() -> None:
    redis = fakeredis.FakeAsyncRedis()
    bell = Doorbell(redis, "q")
    await bell.start()
    try:
        bell.ring()
        await asyncio.wait_for(bell.wait(60), timeout=5)
        await bell.wait(0.01)  # nothing rang: returns after its own timeout
        await redis.publish(keys.ENQUEUED_CHANNEL, "q")
        await asyncio.wait_for(bell.wait(60), timeout=5)
    finally:
        await bell.stop()
