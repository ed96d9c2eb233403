"""``FinishedJobs``: wakes status requests waiting on jobs when workers finish them.

Workers publish a job's id on ``qrs:finished`` when it reaches a final state (``JobStore``).
A status request for an unfinished job waits here, up to ``QRS_STATUS_HOLD`` seconds, instead
of polling Redis; one subscription serves every request of the API process.
"""

from __future__ import annotations

import asyncio

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
