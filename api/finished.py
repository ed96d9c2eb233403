"""``FinishedJobs``: one Redis subscription per API process that wakes requests waiting on jobs.

Workers publish a job's id on ``qrs:finished`` when it reaches a final state (``JobStore``).
A status request for an unfinished job waits here, up to ``QRS_STATUS_HOLD`` seconds, instead
of polling Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis

from shared import keys

logger = logging.getLogger("qrs.api")


class FinishedJobs:
    """Futures per job id, resolved when the job's id is published on ``qrs:finished``."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.FINISHED_CHANNEL)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        data = message.get("data")
                        job_id = data.decode() if isinstance(data, bytes) else str(data)
                        for future in self._waiters.pop(job_id, []):
                            if not future.done():
                                future.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted or dropped us: subscribe again shortly
                logger.warning("finished-jobs subscription lost; retrying", exc_info=True)
                await asyncio.sleep(0.5)

    async def wait(self, job_id: str, seconds: float) -> None:
        """Return when ``job_id`` is published as finished, or after ``seconds``.

        Register first, then let the caller re-read the record: a job that finished in between
        is seen either way.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        try:
            await asyncio.wait_for(future, timeout=seconds)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[job_id]
