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
``GET /sessions``, a submission, or the worker before it starts one of the session's jobs).
"""

from __future__ import annotations

import secrets
import time

import msgspec
from redis.asyncio import Redis

from shared import job_index, keys
from shared.models import JobRecord, JobStatus, iso
from shared.store import JobStore

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
    """Body of ``POST /sessions`` (PROTOCOL.md §6); ``instance`` is ignored in favour of Service-CRN."""

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


def new_session_id() -> str:
    """A 20-character lowercase id, the shape of IBM's session ids."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "s" + "".join(secrets.choice(alphabet) for _ in range(19))


class SessionStore:
    """Session persistence on the same Redis as the :class:`JobStore`."""

    def __init__(self, redis: Redis, jobs: JobStore) -> None:
        self.redis = redis
        self.jobs = jobs

    async def create(self, record: SessionRecord) -> None:
        await self.redis.set(keys.session(record.id), _encode(record))

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

    async def set_accepting(self, record: SessionRecord, accepting: bool) -> SessionRecord:
        """``PATCH /sessions/{id}``: stop (or resume) accepting jobs."""
        new = msgspec.structs.replace(record, accepting_jobs=accepting)
        await self.redis.set(keys.session(record.id), _encode(new))
        return new

    async def close(self, record: SessionRecord, when: float | None = None, reason: str | None = None) -> SessionRecord:
        """Close the session now (``DELETE /sessions/{id}/close``) and cancel its queued jobs."""
        if record.closed_at is not None:
            return record
        new = msgspec.structs.replace(record, accepting_jobs=False, closed_at=when or time.time())
        await self.redis.set(keys.session(record.id), _encode(new))
        why = reason or "The session was closed."
        for job in await self.session_jobs(record):
            if job.status == JobStatus.QUEUED:
                await self.jobs.cancel(job.id, f"Cancelled: {why}")
        return new
