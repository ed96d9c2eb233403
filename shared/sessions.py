"""Sessions and batches: the stored record, IBM's state machine, and the session store.

A session record stores only what the client set (mode, backend, TTLs, ``accepting_jobs``) and
when it was closed. Everything else IBM reports (``state``, ``activated_at``,
``last_job_started``, ``last_job_completed``, ``elapsed_time``) is derived from the session's
jobs, found through the ``session`` job index, so workers never write session records.

State machine (IBM's ``state`` of ``GET /sessions/{id}``)::

    open ──first job starts──> active ──idle──> inactive ──new job──> active
      │                          │                  │
      └──────────────────────────┴──────────────────┴──> closed: DELETE .../close;
                                   accepting_jobs=false with no job left; max_ttl reached

``active`` means a job is queued or running, or (dedicated sessions) the last one finished
less than ``interactive_ttl`` seconds ago: IBM keeps the QPU reserved for the next job during
that window. After it the session is ``inactive`` but, as on IBM, not closed: it resumes with
its next job until ``max_ttl`` (counted from the first job start, or from creation when no
job started yet). A batch has no interactive window, so it is ``inactive`` whenever idle.

Closing cancels the session's queued jobs (running jobs finish), like IBM's max-TTL expiry and
``Session.cancel()``. Expiry is noticed lazily, by whoever reads the session next (a
``GET /sessions``, a submission, or the worker before it starts one of the session's jobs),
or by :meth:`SessionStore.housekeeping` for sessions nobody reads any more.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from qiskit_runtime_server.shared import job_index, keys
from qiskit_runtime_server.shared.errors import Conflict, SessionNotFound
from qiskit_runtime_server.shared.models import JobRecord, JobStatus, iso
from qiskit_runtime_server.shared.store import Guard, JobStore
from qiskit_runtime_server.shared.transactions import transact

logger = logging.getLogger("qrs.sessions")

DEDICATED = "dedicated"
BATCH = "batch"
MODES = frozenset({DEDICATED, BATCH})

_encode = msgspec.json.Encoder().encode


class SessionRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One session as stored under ``qrs:session:{id}``; times are UNIX seconds."""

    id: str
    instance: str
    backend: str
    mode: str
    max_ttl: int
    interactive_ttl: int
    created: float
    user: str | None = None
    accepting_jobs: bool = True
    closed_at: float | None = None


_decode = msgspec.json.Decoder(SessionRecord).decode


class SessionCreate(msgspec.Struct, kw_only=True):
    """Body of ``POST /sessions`` (docs/protocol.md §6); ``instance`` is ignored in favour of Service-CRN."""

    mode: str = DEDICATED
    backend: str | None = None
    instance: str | None = None
    max_ttl: int | None = None


class SessionPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``PATCH /sessions/{id}``: only ``accepting_jobs`` can change."""

    accepting_jobs: bool


class SessionActivity(msgspec.Struct, frozen=True):
    """What the session's jobs say about it."""

    pending: int = 0
    running: int = 0
    activated_at: float | None = None
    last_job_started: float | None = None
    last_job_completed: float | None = None


def activity(jobs: list[JobRecord]) -> SessionActivity:
    """Summarise a session's jobs (any order)."""
    started = [j.running for j in jobs if j.running is not None]
    completed = [j.finished for j in jobs if j.finished is not None and j.status.final and j.running is not None]
    return SessionActivity(
        pending=sum(1 for j in jobs if not j.status.final),
        running=sum(1 for j in jobs if j.status == JobStatus.RUNNING),
        activated_at=min(started) if started else None,
        last_job_started=max(started) if started else None,
        last_job_completed=max(completed) if completed else None,
    )


def expiry(record: SessionRecord, act: SessionActivity) -> float:
    """When the session closes by itself (UNIX seconds): ``max_ttl`` after activation or creation."""
    return (act.activated_at or record.created) + record.max_ttl


def state_of(record: SessionRecord, act: SessionActivity, now: float) -> str:
    """IBM's session ``state``: ``open``, ``active``, ``inactive`` or ``closed``."""
    if record.closed_at is not None or now >= expiry(record, act):
        return "closed"
    if act.pending == 0 and not record.accepting_jobs:
        return "closed"
    if act.activated_at is None:
        return "open"
    if act.pending:
        return "active"
    interactive = record.mode == DEDICATED and act.last_job_completed is not None
    if interactive and now < act.last_job_completed + record.interactive_ttl:  # type: ignore[operator]
        return "active"
    return "inactive"


def session_view(record: SessionRecord, act: SessionActivity, now: float) -> dict[str, object]:
    """The ``GET /sessions/{id}`` body (the field names ``Session.details()`` renames)."""
    state = state_of(record, act, now)
    end = record.closed_at if record.closed_at is not None else now
    elapsed = 0.0 if act.activated_at is None else max(0.0, end - act.activated_at)
    return {
        "id": record.id,
        "backend_name": record.backend,
        "mode": record.mode,
        "max_ttl": record.max_ttl,
        "interactive_ttl": record.interactive_ttl if record.mode == DEDICATED else None,
        "active_ttl": record.max_ttl,
        "state": state,
        "accepting_jobs": record.accepting_jobs and state != "closed",
        "started_at": iso(record.created),
        "last_job_started": iso(act.last_job_started),
        "last_job_completed": iso(act.last_job_completed),
        "closed_at": iso(record.closed_at),
        "activated_at": iso(act.activated_at),
        "elapsed_time": round(elapsed, 3),
        "timestamps": [],
        "user_id": record.user,
    }


def sessions_index(scope: str) -> str:
    """ZSET of the session ids of a dashboard scope (``keys.dash_scope``: one instance, or ``all``),
    scored by creation time: the dashboard's Sessions view pages it without scanning the keyspace.

    Registered in ``qrs:indexes`` so :func:`shared.job_index.trim` drops the members created
    longer than the retention ago (their "job" record never exists, so age alone decides).
    """
    return f"{keys.PREFIX}dash:{scope}:sessions"


def new_session_id() -> str:
    """A 20-character lowercase id, the shape of IBM's session ids."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "s" + "".join(secrets.choice(alphabet) for _ in range(19))


class SessionStore:
    """Session persistence on the same Redis as the :class:`JobStore`.

    Every change of a session record is a compare-and-set (WATCH/MULTI on ``qrs:session:{id}``),
    as for job records: a closed session is never written again, so a ``PATCH`` racing a close
    cannot reopen it, and :meth:`job_guard` makes a job's creation depend on the session still
    accepting jobs at the moment the job is written. A closed session expires after the job
    retention (``QRS_JOB_RETENTION``); :meth:`housekeeping` closes the sessions that ended
    unread and trims the job indexes.
    """

    # Seconds between two housekeeping passes of one process.
    HOUSEKEEPING_INTERVAL = 60.0
    HOUSEKEEPING_SESSIONS = 100

    def __init__(self, redis: Redis, jobs: JobStore) -> None:
        self.redis = redis
        self.jobs = jobs
        self._next_housekeeping = 0.0

    async def create(self, record: SessionRecord) -> None:
        """Store a new session, index it for the dashboard (per instance and overall) and register
        it among the open ones, by when it ends at the latest.

        A session ends ``max_ttl`` after its activation, which comes before ``max_ttl`` after
        its creation (else it closed unactivated): ``created + 2 max_ttl`` bounds its end.
        """
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.session(record.id), _encode(record))
            pipe.zadd(keys.OPEN_SESSIONS, {record.id: record.created + 2 * record.max_ttl})
            index_keys = [sessions_index(keys.dash_scope(record.instance)), sessions_index(keys.ALL_SCOPE)]
            for key in index_keys:
                pipe.zadd(key, {record.id: record.created})
            pipe.zadd(keys.INDEXES, dict.fromkeys(index_keys, record.created), nx=True)
            await pipe.execute()

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self.redis.get(keys.session(session_id))
        return None if raw is None else _decode(raw)

    async def session_jobs(self, record: SessionRecord) -> list[JobRecord]:
        """The session's jobs, oldest first."""
        ids = await job_index.session_job_ids(self.redis, record.instance, record.id)
        return await self.jobs.many(ids)

    async def refresh(self, session_id: str) -> tuple[SessionRecord, SessionActivity] | None:
        """The session and its activity, closing it first if it expired; ``None`` if unknown.

        A session found closed by a timeout or by ``accepting_jobs=false`` gets its ``closed_at``
        stored and its queued jobs cancelled, so its state never goes back.
        """
        record = await self.get(session_id)
        if record is None:
            return None
        act = activity(await self.session_jobs(record))
        now = time.time()
        if record.closed_at is None and state_of(record, act, now) == "closed":
            deadline = expiry(record, act)
            closed_at = deadline if deadline <= now else now
            record = await self.close(record, closed_at, "The session expired.")
            act = activity(await self.session_jobs(record))
        return record, act

    async def _change(
        self, session_id: str, change: Callable[[SessionRecord], SessionRecord | None]
    ) -> tuple[SessionRecord, bool] | None:
        """Apply ``change`` to the stored record under WATCH/MULTI (:func:`transact`).

        ``change`` returns the new record, or ``None`` to keep the current one. Returns the
        record as stored afterwards and whether this call wrote it; ``None`` if the session is gone.
        A record that becomes closed leaves the open-session registry and gets its time to live.
        """
        key = keys.session(session_id)

        def write(pipe: Pipeline, raw: bytes | None) -> tuple[SessionRecord, bool] | None:
            if raw is None:
                return None
            old = _decode(raw)
            new = change(old)
            if new is None:
                return old, False
            retention = self.jobs.retention
            if new.closed_at is not None and retention > 0:
                pipe.set(key, _encode(new), ex=max(1, int(retention)))
            else:
                pipe.set(key, _encode(new), keepttl=True)
            if new.closed_at is not None:
                pipe.zrem(keys.OPEN_SESSIONS, session_id)
            return new, True

        return await transact(self.redis, key, write)

    async def set_accepting(self, record: SessionRecord, accepting: bool) -> SessionRecord:
        """``PATCH /sessions/{id}``: stop (or resume) accepting jobs; a closed session stays closed."""

        def change(current: SessionRecord) -> SessionRecord | None:
            if current.closed_at is not None or current.accepting_jobs == accepting:
                return None
            return msgspec.structs.replace(current, accepting_jobs=accepting)

        outcome = await self._change(record.id, change)
        return record if outcome is None else outcome[0]

    async def close(self, record: SessionRecord, when: float | None = None, reason: str | None = None) -> SessionRecord:
        """Close the session now (``DELETE /sessions/{id}/close``) and cancel its queued jobs.

        The close is written first; every job created before it is then in the session's
        index (jobs are created under :meth:`job_guard`), and every later one is refused, so
        no queued job of the session is left to run.
        """
        closed_at = when or time.time()

        def change(current: SessionRecord) -> SessionRecord | None:
            if current.closed_at is not None:
                return None
            return msgspec.structs.replace(current, accepting_jobs=False, closed_at=closed_at)

        outcome = await self._change(record.id, change)
        if outcome is None:
            return record
        new, wrote = outcome
        if wrote:
            why = reason or "The session was closed."
            for job in await self.session_jobs(new):
                if job.status == JobStatus.QUEUED:
                    await self.jobs.cancel(job.id, f"Cancelled: {why}")
        return new

    def job_guard(self, session_id: str) -> Guard:
        """The condition under which a job may be created in the session: it exists and is open
        to jobs (``JobStore.create`` checks it in the job's own transaction).

        The guard raises ``SessionNotFound`` (404) or ``Conflict`` (409), as admission does.
        """

        def check(raw: bytes | None) -> None:
            if raw is None:
                raise SessionNotFound(session_id)
            current = _decode(raw)
            if current.closed_at is not None:
                raise Conflict(f"Session {session_id} is closed.")
            if not current.accepting_jobs:
                raise Conflict(f"Session {session_id} is not accepting jobs.")

        return Guard(keys.session(session_id), check)

    async def close_ended(self, now: float, limit: int = HOUSEKEEPING_SESSIONS) -> int:
        """Close (and so start the retention of) up to ``limit`` sessions whose latest end has
        passed but that nobody read since; returns how many were looked at."""
        ids = await self.redis.zrangebyscore(keys.OPEN_SESSIONS, "-inf", now, start=0, num=limit)
        for raw_id in ids:
            session_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
            found = await self.refresh(session_id)
            if found is None:
                await self.redis.zrem(keys.OPEN_SESSIONS, session_id)
            elif found[0].closed_at is None:
                # Still open (a job started late): look again when it can end at the latest.
                await self.redis.zadd(keys.OPEN_SESSIONS, {session_id: expiry(*found) + found[0].max_ttl})
        return len(ids)

    async def housekeeping(self, now: float | None = None) -> bool:
        """Retention work, at most once per ``HOUSEKEEPING_INTERVAL`` per process: close ended
        sessions, trim expired jobs out of the indexes (:func:`shared.job_index.trim`).

        Run after API writes (as a background task of the response), so a busy deployment
        cleans up as it goes and an idle one has nothing new to clean. Errors are logged,
        never raised: the request that triggered it has already succeeded. Returns whether a
        pass ran.
        """
        now = time.time() if now is None else now
        if now < self._next_housekeeping:
            return False
        self._next_housekeeping = now + self.HOUSEKEEPING_INTERVAL
        try:
            await self.close_ended(now)
            await job_index.trim(self.redis, self.jobs.retention, now)
        except RedisError as exc:
            logger.warning("retention housekeeping failed: %s", exc)
        except Exception:
            # It runs after the response (a background task): nobody else would see the error.
            logger.exception("retention housekeeping failed")
        return True
