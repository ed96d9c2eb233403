"""``FinishedJobs``: wakes status requests waiting on jobs when workers finish them.

Workers publish a job's id on ``qrs:finished`` when it reaches a final state (``JobStore``).
A status request for an unfinished job waits here, until the job is ``QRS_STATUS_HOLD``
seconds old, instead of polling Redis; one subscription serves every request of the API process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.channel import ChannelListener


class FinishedJobs:
    """Futures per job id, resolved when the job's id is published on ``qrs:finished``."""

    def __init__(self, redis: Redis) -> None:
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._listener = ChannelListener(redis, keys.FINISHED_CHANNEL, self._finished)

    async def start(self) -> None:
        await self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    def _finished(self, job_id: str) -> None:
        for future in self._waiters.pop(job_id, []):
            if not future.done():
                future.set_result(None)

    async def wait(self, job_id: str, seconds: float, finished: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Return when ``job_id`` is published as finished, or after ``seconds``.

        The waiter is registered first, then ``finished`` (a re-read of the record) is asked: a
        job that finished just before is seen at once, and one that finishes later wakes the
        waiter, so no publication falls in between.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        try:
            if finished is not None and await finished():
                return
            await asyncio.wait_for(future, timeout=seconds)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[job_id]
