"""JobStore: job records, params, results and logs in Redis, and their state transitions.

All writers go through this class so that the indexes and the pending counts stay consistent
with the records. State changes are optimistic transactions (WATCH/MULTI): a job that was
cancelled while a worker picked it up never becomes ``Running``, and a final state is never
overwritten.

Retention: a job that becomes final gets a time to live of ``retention`` seconds
(``QRS_JOB_RETENTION``) on its record, params, result and logs, set in the transaction that
makes it final; a live job's keys never expire. Index entries of expired jobs are trimmed by
:func:`shared.job_index.trim`; usage counters expire ``USAGE_TTL`` after their last write.

Private jobs (``EnvironmentOptions.private``): the params are deleted in the transaction that
makes the job final, the result when it is first read (:meth:`JobStore.take_result`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from qiskit_runtime_server.shared import job_index, keys, stats
from qiskit_runtime_server.shared.models import JobRecord, JobStatus
from qiskit_runtime_server.shared.queue import queue_commands
from qiskit_runtime_server.shared.transactions import transact

_T = TypeVar("_T")

_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(JobRecord).decode

# Cap the log of one job so a chatty or looping worker cannot fill Redis.
MAX_LOG_LINES = 1000

# Seconds a finished job is kept (QRS_JOB_RETENTION's default): 30 days.
DEFAULT_RETENTION = 30 * 86_400
# Seconds a monthly usage counter lives after its last write: the current month and a few before.
USAGE_TTL = 100 * 86_400


@dataclass(frozen=True)
class Guard:
    """A key that a write depends on: the write is made only if ``check`` accepts the key's value.

    ``check`` gets the raw value (``None`` when the key is missing) and raises to refuse the
    write; the key is WATCHed, so a change between the check and the write retries both.
    """

    key: str
    check: Callable[[bytes | None], None]


@dataclass(frozen=True)
class Claim:
    """Which attempt of a job a worker runs: the ``worker_id`` and ``attempt`` that
    :meth:`JobStore.start` wrote into the record. A worker passes it back to
    :meth:`JobStore.finish` so that only the current holder can finish the job (fencing)."""

    worker_id: str
    attempt: int


class StaleClaim(Exception):
    """A finish from a worker that no longer holds the job: its lease lapsed (a partition, a
    stall) and another worker took the job over. The write was dropped.

    Attributes:
        claim: the stale finisher's claim.
        current: the claim the record holds now (``None`` when the job never started again).
        status: the job's status at the time of the refusal.
    """

    def __init__(self, job_id: str, claim: Claim, current: Claim | None, status: JobStatus) -> None:
        held = f"{current.worker_id} (attempt {current.attempt})" if current else "nobody"
        super().__init__(
            f"result of job {job_id} from worker {claim.worker_id} (attempt {claim.attempt}) refused: "
            f"the job is held by {held} and is {status.value}"
        )
        self.claim, self.current, self.status = claim, current, status


def _job_keys(job_id: str) -> tuple[str, str, str, str]:
    """The job's record, params, result and logs keys."""
    return keys.job(job_id), keys.job_params(job_id), keys.job_result(job_id), keys.job_logs(job_id)


def usage_period(ts: float) -> str:
    """The usage period (calendar month, UTC) that ``ts`` falls in, as ``YYYY-MM``."""
    return time.strftime("%Y-%m", time.gmtime(ts))


class JobStore:
    """Job persistence on an asyncio Redis client (``redis.asyncio.Redis`` or fakeredis).

    Args:
        redis: the client (the ``ArqRedis`` pool in the API and workers).
        retention: seconds a finished job is kept; 0 keeps finished jobs forever.
    """

    def __init__(self, redis: Redis, retention: float = DEFAULT_RETENTION) -> None:
        self.redis = redis
        self.retention = retention

    async def create(
        self,
        record: JobRecord,
        params: bytes,
        *,
        queue_name: str | None = None,
        guard: Guard | None = None,
        defer_seconds: float = 0.0,
    ) -> None:
        """Store a new ``Queued`` job with its verbatim params, index it and (with ``queue_name``)
        queue it for arq, all in one MULTI/EXEC: either all of it is written or none.
        ``defer_seconds``: no worker takes it before then (IBM-like timing's queue time).

        Redis applies a transaction whole or not at all when the connection breaks, so a
        submission that fails leaves no record that could run later (the client re-POSTs a
        failed submission as a new job). Replaying the transaction is harmless: every command
        writes the same value again.

        Raises:
            redis.exceptions.RedisError: nothing was stored (or, rarely, all of it was and the
                reply was lost for longer than the connection retries).
            Exception: whatever ``guard.check`` raises; nothing was stored.
        """

        def write(pipe: Pipeline, guarded: bytes | None) -> None:
            if guard is not None:
                guard.check(guarded)
            pipe.set(keys.job(record.id), _encode(record))
            pipe.set(keys.job_params(record.id), params)
            job_index.add_commands(pipe, record)
            stats.record_created(pipe, record)
            pipe.sadd(keys.pending(record.backend), record.id)
            if queue_name is not None:
                serializer = getattr(self.redis, "job_serializer", None)
                queue_commands(pipe, queue_name, record.id, serializer, defer_seconds)

        await transact(self.redis, None if guard is None else guard.key, write)

    async def get(self, job_id: str) -> JobRecord | None:
        raw = await self.redis.get(keys.job(job_id))
        return None if raw is None else _decode_record(raw)

    async def load(self, job_id: str) -> tuple[JobRecord | None, bytes | None]:
        """The job's record and params in one round trip (what a worker needs to run it)."""
        raw, params = await self.redis.mget([keys.job(job_id), keys.job_params(job_id)])
        return (None if raw is None else _decode_record(raw)), params

    async def params(self, job_id: str) -> bytes | None:
        raw: bytes | None = await self.redis.get(keys.job_params(job_id))
        return raw

    async def result(self, job_id: str) -> bytes | None:
        raw: bytes | None = await self.redis.get(keys.job_result(job_id))
        return raw

    async def take_result(self, job_id: str) -> bytes | None:
        """Read and delete the job's result in one atomic step (``GETDEL``): a ``private`` job's
        result is handed out once (``EnvironmentOptions.private``). ``None`` when it is gone.

        Two concurrent reads cannot both get it: Redis runs ``GETDEL`` as one command.
        """
        raw: bytes | None = await self.redis.getdel(keys.job_result(job_id))
        return raw

    async def pending_count(self, backend: str) -> int:
        """Number of queued or running jobs on ``backend`` (``length_queue`` of /status)."""
        return int(await cast("Awaitable[int]", self.redis.scard(keys.pending(backend))))

    async def usage_seconds(self, instance: str, period: str) -> float:
        """Simulation seconds consumed by ``instance`` in ``period`` (``YYYY-MM``)."""
        return float(await self.redis.get(keys.usage(instance, period)) or 0.0)

    async def log(self, job_id: str, line: str) -> None:
        """Append a line to the job's log (``GET /jobs/{id}/logs``).

        A line written after the job is final (a cancellation notice) gives the log the
        record's remaining time to live, and one written after the record is gone is dropped.
        """
        key = keys.job_logs(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, line)
            pipe.ltrim(key, -MAX_LOG_LINES, -1)
            pipe.pttl(keys.job(job_id))
            *_, left_ms = await pipe.execute()
        if left_ms > 0:
            await self.redis.pexpire(key, left_ms)
        elif left_ms == -2:
            await self.redis.delete(key)

    async def logs(self, job_id: str) -> list[str]:
        lines = await cast("Awaitable[list[bytes | str]]", self.redis.lrange(keys.job_logs(job_id), 0, -1))
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
            # KEEPTTL: a tag change on a finished job must not make it permanent again.
            pipe.set(keys.job(job_id), _encode(new), keepttl=True)
            job_index.update_commands(pipe, old, new)
            stats.record_change(pipe, old, new)
            if log:
                pipe.rpush(keys.job_logs(job_id), *log)
                pipe.ltrim(keys.job_logs(job_id), -MAX_LOG_LINES, -1)
            if new.status.final and not old.status.final:
                pipe.srem(keys.pending(new.backend), job_id)
                if new.private:
                    # IBM deletes a private job's inputs once it is final.
                    pipe.delete(keys.job_params(job_id))
                stats.record_final(pipe, new)
                if result is not None:
                    pipe.set(keys.job_result(job_id), result)
                if self.retention > 0:
                    ttl = max(1, int(self.retention))
                    for key in _job_keys(job_id):
                        pipe.expire(key, ttl)
                pipe.publish(keys.FINISHED_CHANNEL, job_id)
                if new.quantum_seconds:
                    period = usage_period(new.finished or time.time())
                    usage = keys.usage(new.instance, period)
                    pipe.incrbyfloat(usage, new.quantum_seconds)
                    pipe.expire(usage, USAGE_TTL)
            return new

        return await self._transact(job_id, write)

    async def _transact(self, job_id: str, write: Callable[[Pipeline, JobRecord], _T | None]) -> _T | None:
        """Run ``write`` on the job's current record inside WATCH/MULTI/EXEC (:func:`transact`).

        ``write`` queues its commands (the pipeline is already in MULTI) and returns what to hand
        back, or ``None`` to write nothing. ``None`` also when the job does not exist.
        """

        def attempt(pipe: Pipeline, raw: bytes | None) -> _T | None:
            return None if raw is None else write(pipe, _decode_record(raw))

        return await transact(self.redis, keys.job(job_id), attempt)

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

    async def annotate(self, job_id: str, claim: Claim, **fields: object) -> JobRecord | None:
        """Set ``fields`` on a job that is not final and still held by ``claim``; ``None`` when
        nothing changed (final, taken over or gone). IBM-like timing's QPU-time estimate."""

        def change(record: JobRecord) -> JobRecord | None:
            if record.status.final or (record.worker_id, record.attempts) != (claim.worker_id, claim.attempt):
                return None
            return msgspec.structs.replace(record, **fields)

        return await self._update(job_id, change)

    async def requeue(self, job_id: str, worker_id: str | None = None, log: Sequence[str] = ()) -> JobRecord | None:
        """Move a ``Running`` job back to ``Queued`` (appending ``log``): it waits in the queue again.

        Used when a job is handed back (its worker stopped on SIGTERM, or its simulation process
        could not take it) and by the orphan sweep for a job waiting out a dead worker's lease,
        so the client sees ``QUEUED`` (IBM's state while a job waits) until a worker takes it
        and :meth:`start` makes it ``Running`` again. With ``worker_id``, only a job that worker
        still holds is moved. ``None`` when nothing changed (not running, held by another
        worker, final or gone).
        """

        def change(record: JobRecord) -> JobRecord | None:
            if record.status is not JobStatus.RUNNING or (worker_id is not None and record.worker_id != worker_id):
                return None
            return msgspec.structs.replace(record, status=JobStatus.QUEUED, worker_id=None)

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
        claim: Claim | None = None,
        **extra: object,
    ) -> JobRecord | None:
        """Record a final state, its result text and ``log`` lines; ``None`` if already final.

        With ``claim`` (a worker finishing the attempt it started) the write is fenced: it is
        made only if the record still names that worker and attempt, checked on the WATCHed
        record inside the same transaction as the write, so a worker whose lease lapsed cannot
        overwrite, or pre-empt, the result of the worker that took the job over.

        Raises:
            StaleClaim: ``claim`` is not the job's current claim; nothing was written.
        """

        def change(record: JobRecord) -> JobRecord | None:
            if claim is not None and (record.worker_id, record.attempts) != (claim.worker_id, claim.attempt):
                current = Claim(record.worker_id, record.attempts) if record.worker_id else None
                raise StaleClaim(job_id, claim, current, record.status)
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
            pipe.delete(*_job_keys(job_id))
            pipe.srem(keys.pending(record.backend), job_id)
            job_index.remove_commands(pipe, record)
            stats.record_deleted(pipe, record)
            return True

        return bool(await self._transact(job_id, write))
