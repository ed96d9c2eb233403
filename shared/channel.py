"""``ChannelListener``: one Redis pub/sub subscription, kept alive across Redis restarts.

Used by the API (jobs that finished: wake held status requests) and by workers (jobs that
were queued: wake the polling loop at once instead of at its next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from qiskit_runtime_server.shared.aio import cancel_and_wait

logger = logging.getLogger("qrs")


class ChannelListener:
    """Calls ``on_message(text)`` for every message published on ``channel``."""

    def __init__(self, redis: Redis, channel: str, on_message: Callable[[str], None]) -> None:
        self._redis = redis
        self._channel = channel
        self._on_message = on_message
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe (waiting up to 5 s for the subscription) and listen in the background."""
        self._task = asyncio.create_task(self._listen(), name=f"listen:{self._channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        data = message.get("data")
                        self._on_message(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted or dropped us: subscribe again shortly
                logger.warning("subscription to %s lost; retrying", self._channel, exc_info=True)
                await asyncio.sleep(0.5)
