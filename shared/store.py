"""JobStore: job records, params, results and logs in Redis, and their state transitions.

All writers go through this class so that the indexes and the pending counts stay consistent
with the records. State changes are optimistic transactions (WATCH/MULTI): a job that was
cancelled while a worker picked it up never becomes ``Running``, and a final state is never
overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from shared import job_index, keys, stats
from shared.models import JobRecord, JobStatus

_T = TypeVar("_T")

_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(JobRecord).decode

# Cap the log of one job so a chatty or looping worker cannot fill Redis.
MAX_LOG_LINES = 1000


def usage_period(ts: float) -> str:
    """The usage period (calendar month, UTC) that ``ts`` falls in, as ``YYYY-MM``."""
    return time.strftime("%Y-%m", time.gmtime(ts))


class JobStore:
    """Job persistence on an asyncio Redis client (``redis.asyncio.Redis`` or fakeredis)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, record: JobRecord, params: bytes) -> None:
        """Store a new ``Queued`` job with its verbatim params and add it to the indexes."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.job(record.id), _encode(record))
            pipe.set(keys.job_params(record.id), params)
            job_index.add_commands(pipe, record)
            pipe.sadd(keys.pending(record.backend), record.id)
            await pipe.execute()

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(keys.job(job_id))
        return None if raw is None else _decode_record(raw)

    async def params(self, job_id: str) -> bytes | None:
        return await self.redis.get(keys.job_params(job_id))

    async def result(self, job_id: str) -> bytes | None:
        return await self.redis.get(keys.job_result(job_id))

    async def pending_count(self, backend: str) -> int:
        """Number of queued or running jobs on ``backend`` (``length_queue`` of /status)."""
        return int(await self.redis.scard(keys.pending(backend)))

    async def usage_seconds(self, instance: str, period: str) -> float:
        """Simulation seconds consumed by ``instance`` in ``period`` (``YYYY-MM``)."""
        return float(await self.redis.get(keys.usage(instance, period)) or 0.0)

    async def log(self, job_id: str, line: str) -> None:
        """Append a line to the job's log (``GET /jobs/{id}/logs``)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(keys.job_logs(job_id), line)
            pipe.ltrim(keys.job_logs(job_id), -MAX_LOG_LINES, -1)
            await pipe.execute()

    async def logs(self, job_id: str) -> list[str]:
        lines = await self.redis.lrange(keys.job_logs(job_id), 0, -1)
        return [line.decode() if isinstance(line, bytes) else line for line in lines]

    async def _update(
        self,
        job_id: str,
        change: Callable[[JobRecord], JobRecord | None],
        result: bytes | None = None,
        log: Sequence[str] = (),
    ) -> JobRecord | None:
        """Apply ``change`` to the stored record atomically.

        ``change`` returns the new record, or ``None`` to leave the job untouched (then this
        returns ``None``). When the new record is final, the job leaves its backend's pending
        set and ``result`` (if given) is stored in the same transaction. ``log`` lines are
        appended to the job's log in that transaction too (one round trip, not one per line).
        """

        def write(pipe: Pipeline, old: JobRecord) -> JobRecord | None:
            new = change(old)
            if new is None:
                return None
            pipe.set(keys.job(job_id), _encode(new))
            job_index.update_commands(pipe, old, new)
            if log:
                pipe.rpush(keys.job_logs(job_id), *log)
                pipe.ltrim(keys.job_logs(job_id), -MAX_LOG_LINES, -1)
            if new.status.final:
                pipe.srem(keys.pending(new.backend), job_id)
                stats.record_final(pipe, new)
                if result is not None:
                    pipe.set(keys.job_result(job_id), result)
                pipe.publish(keys.FINISHED_CHANNEL, job_id)
                if new.quantum_seconds:
                    period = usage_period(new.finished or time.time())
                    pipe.incrbyfloat(keys.usage(new.instance, period), new.quantum_seconds)
            return new

        return await self._transact(job_id, write)

    async def _transact(self, job_id: str, write: Callable[[Pipeline, JobRecord], _T | None]) -> _T | None:
        """Run ``write`` on the job's current record inside WATCH/MULTI/EXEC, retrying on conflict.

        ``write`` queues its commands (the pipeline is already in MULTI) and returns what to hand
        back, or ``None`` to write nothing. ``None`` also when the job does not exist.
        """
        key = keys.job(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        return None
                    record = _decode_record(raw)
                    pipe.multi()
                    outcome = write(pipe, record)
                    if outcome is None:
                        return None  # leaving the block resets the pipeline: nothing is sent
                    await pipe.execute()
                    return outcome
                except WatchError:
                    continue

    async def start(self, job_id: str, worker_id: str, attempt: int, log: Sequence[str] = ()) -> JobRecord | None:
        """Move a job to ``Running`` on ``worker_id`` (appending ``log``); ``None`` if final or gone.

        A job already ``Running`` is taken over: its worker died and its lease expired.
        """

        def change(record: JobRecord) -> JobRecord | None:
            if record.status.final:
                return None
            return msgspec.structs.replace(
                record,
                status=JobStatus.RUNNING,
                running=record.running or time.time(),
                worker_id=worker_id,
                attempts=attempt,
            )

        return await self._update(job_id, change, log=log)

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        result: bytes,
        *,
        reason: str | None = None,
        reason_code: int | None = None,
        quantum_seconds: float | None = None,
        log: Sequence[str] = (),
        **extra: object,
    ) -> JobRecord | None:
        """Record a final state, its result text and ``log`` lines; ``None`` if already final."""

        def change(record: JobRecord) -> JobRecord | None:
            if record.status.final:
                return None
            return msgspec.structs.replace(
                record,
                status=status,
                reason=reason,
                reason_code=reason_code,
                finished=time.time(),
                quantum_seconds=quantum_seconds,
                **extra,
            )

        return await self._update(job_id, change, result, log)

    async def many(self, job_ids: list[str]) -> list[JobRecord]:
        """The records of ``job_ids`` in that order, skipping ids deleted meanwhile."""
        if not job_ids:
            return []
        raws = await self.redis.mget([keys.job(i) for i in job_ids])
        return [_decode_record(raw) for raw in raws if raw is not None]

    async def find(self, query: job_index.JobQuery) -> tuple[list[JobRecord], int]:
        """``GET /jobs``: one page of records matching ``query`` and the total number of matches."""
        ids, count = await job_index.find(self.redis, query)
        return await self.many(ids), count

    async def cancel(self, job_id: str, reason: str = "Cancelled by the user.") -> JobRecord | None:
        """Move a queued or running job to ``Cancelled``; ``None`` if it is final or gone.

        A queued job is then skipped by the worker that dequeues it; a running one is stopped by
        its worker, which watches the record (``worker/cancellation.py``).
        """

        def change(record: JobRecord) -> JobRecord | None:
            if record.status.final:
                return None
            return msgspec.structs.replace(record, status=JobStatus.CANCELLED, reason=reason, finished=time.time())

        return await self._update(job_id, change, reason.encode())

    async def set_tags(self, job_id: str, tags: list[str]) -> JobRecord | None:
        """Replace the job's tags (``PUT /jobs/{id}/tags``); ``None`` if the job is gone."""
        return await self._update(job_id, lambda record: msgspec.structs.replace(record, tags=tags))

    async def delete(self, job_id: str) -> bool:
        """Remove the job's record, params, result, logs and index entries; ``False`` if it was gone."""

        def write(pipe: Pipeline, record: JobRecord) -> bool:
            pipe.delete(keys.job(job_id), keys.job_params(job_id), keys.job_result(job_id), keys.job_logs(job_id))
            pipe.srem(keys.pending(record.backend), job_id)
            job_index.remove_commands(pipe, record)
            return True

        return bool(await self._transact(job_id, write))
