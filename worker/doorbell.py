"""``Doorbell``: lets a worker's polling loop sleep until a job is queued.

arq polls its queue every ``poll_delay`` seconds. The API publishes the queue name on
``qrs:enqueued`` after each enqueue, so an idle worker starts a new job within a millisecond
or two instead of up to a poll later; the poll stays as the fallback for delayed retries and
for a lost subscription, and can be slow (``QRS_POLL_DELAY``, 0.05 s) without costing latency.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.channel import ChannelListener


class Doorbell:
    """An ``asyncio.Event`` set whenever a job is queued on ``queue_name``."""

    def __init__(self, redis: Redis, queue_name: str, *also: str) -> None:
        # ``also``: further queues whose jobs this worker may take (shared/routing.py).
        self._queue_names = frozenset((queue_name, *also))
        self._rung = asyncio.Event()
        self._listener = ChannelListener(redis, keys.ENQUEUED_CHANNEL, self._ring)

    def _ring(self, queue_name: str) -> None:
        if queue_name in self._queue_names:
            self._rung.set()

    def ring(self) -> None:
        """Wake the loop from inside the worker (a job ended and freed the slot)."""
        self._rung.set()

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    async def wait(self, timeout: float) -> None:
        """Return when the bell rings or after ``timeout`` seconds, whichever is first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._rung.wait(), timeout)
        self._rung.clear()
