"""Sorted-set indexes behind ``GET /jobs``: every filter is a ZSET of job ids scored by creation time.

Each instance has its "all jobs" set (``keys.instance_jobs``) plus one set per filter value
(``keys.job_filter``): backend, program, each tag, session, and state ``pending``/``final``.
Because every set is scored by the job's creation time, a query is

* one set (no filter, or one): ``ZCOUNT`` over the creation-time window for ``count`` and one
  ``ZRANGEBYSCORE ... LIMIT`` for the page, both O(log N + page);
* several filters: ``ZINTERSTORE`` of the sets (Redis starts from the smallest) into a scratch
  key that lives for one request, then the same two commands on it.

Nothing ever scans job records, so listing stays fast with 100,000 jobs stored. The store calls
:func:`add_commands`, :func:`update_commands` and :func:`remove_commands` inside the same
transaction that writes the record, so the indexes never disagree with the records.

Retention: a finished job's record expires (``QRS_JOB_RETENTION``) but Redis cannot expire one
member of a set. Every index key is therefore registered in ``qrs:indexes`` when a job is
added to it, and :func:`trim` walks that registry a few keys at a time, least recently trimmed
first, removing the members older than the retention (by score: creation time) whose record is
gone. No keyspace ``SCAN``: the registry names every index there is.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.models import JobRecord

PENDING = "pending"
FINAL = "final"
# Every mock device name starts so (shared/backends.py: the client's dry_run rule, and aliases
# may not start so), which lets the index tell a dry run from its record alone.
MOCK_PREFIX = "mock_"


def _mocks_key(instance: str) -> str:
    """The instance's index of jobs on mock devices."""
    return keys.job_filter(instance, "class", "mock")


class JobQuery(msgspec.Struct, kw_only=True, frozen=True):
    """The filters of ``GET /jobs`` (docs/protocol.md §5.6); times are UNIX seconds, bounds inclusive."""

    instance: str
    limit: int = 20
    offset: int = 0
    backend: str | None = None
    program: str | None = None
    tags: tuple[str, ...] = ()
    session_id: str | None = None
    pending: bool | None = None
    created_after: float | None = None
    created_before: float | None = None
    ascending: bool = False
    # Jobs on mock devices (dry runs) are listed only on request, as IBM lists them.
    include_mocks: bool = False


def _filter_keys(record: JobRecord) -> list[str]:
    """Every index ``record`` belongs to, except the state one."""
    inst = record.instance
    out = [
        keys.instance_jobs(inst),
        keys.job_filter(inst, "backend", record.backend),
        keys.job_filter(inst, "program", record.program_id),
    ]
    out += [keys.job_filter(inst, "tag", tag) for tag in record.tags]
    if record.session_id:
        out.append(keys.job_filter(inst, "session", record.session_id))
    if record.backend.startswith(MOCK_PREFIX):
        out.append(_mocks_key(inst))
    return out


def _state_key(record: JobRecord) -> str:
    return keys.job_filter(record.instance, "state", FINAL if record.status.final else PENDING)


def _register(pipe: Any, index_keys: list[str], now: float) -> None:
    """Name ``index_keys`` in the registry :func:`trim` walks (kept scores: last trim time)."""
    if index_keys:
        pipe.zadd(keys.INDEXES, dict.fromkeys(index_keys, now), nx=True)


def add_commands(pipe: Any, record: JobRecord) -> None:
    """Queue on ``pipe`` the commands that index a new job."""
    index_keys = [*_filter_keys(record), _state_key(record)]
    for key in index_keys:
        pipe.zadd(key, {record.id: record.created})
    _register(pipe, index_keys, record.created)


def update_commands(pipe: Any, old: JobRecord, new: JobRecord) -> None:
    """Queue the commands that move a job between indexes after a state or tag change."""
    added: list[str] = []
    if _state_key(old) != _state_key(new):
        pipe.zrem(_state_key(old), old.id)
        added.append(_state_key(new))
    inst = new.instance
    for tag in set(old.tags) - set(new.tags):
        pipe.zrem(keys.job_filter(inst, "tag", tag), new.id)
    added += [keys.job_filter(inst, "tag", tag) for tag in sorted(set(new.tags) - set(old.tags))]
    for key in added:
        pipe.zadd(key, {new.id: new.created})
    _register(pipe, added, new.created)


def remove_commands(pipe: Any, record: JobRecord) -> None:
    """Queue the commands that take a deleted job out of every index."""
    for key in [*_filter_keys(record), _state_key(record)]:
        pipe.zrem(key, record.id)


def query_keys(query: JobQuery) -> list[str]:
    """The index sets whose intersection answers ``query`` (the instance's set when unfiltered)."""
    inst = query.instance
    sets: list[str] = []
    if query.backend:
        sets.append(keys.job_filter(inst, "backend", query.backend))
    if query.program:
        sets.append(keys.job_filter(inst, "program", query.program))
    sets += [keys.job_filter(inst, "tag", tag) for tag in dict.fromkeys(query.tags)]
    if query.session_id:
        sets.append(keys.job_filter(inst, "session", query.session_id))
    if query.pending is not None:
        sets.append(keys.job_filter(inst, "state", PENDING if query.pending else FINAL))
    return sets or [keys.instance_jobs(inst)]


def _hides_mocks(query: JobQuery) -> bool:
    """Whether mock jobs are left out: unless ``include_mocks`` or the backend filter is a mock."""
    return not query.include_mocks and not (query.backend or "").startswith(MOCK_PREFIX)


async def find(redis: Redis, query: JobQuery) -> tuple[list[str], int]:
    """The page of job ids matching ``query`` (newest first unless ``ascending``) and the total count.

    Jobs on mock devices are left out unless ``query.include_mocks`` (the client's
    ``service.jobs(include_mocks=True)``) or the backend filter names a mock device. Leaving them
    out costs a ``ZDIFFSTORE`` (linear in the matching set) only for an instance that has mock
    jobs stored; the others keep the O(log N + page) path.
    """
    sets = query_keys(query)
    mocks = _mocks_key(query.instance) if _hides_mocks(query) else None
    # A mock job indexed between this check and the listing may show once in it: harmless.
    if mocks is not None and not await redis.exists(mocks):
        mocks = None
    scratch = None
    if len(sets) == 1 and mocks is None:
        key = sets[0]
    else:
        scratch = key = keys.listing_scratch(uuid.uuid4().hex)
    low = "-inf" if query.created_after is None else query.created_after
    high = "+inf" if query.created_before is None else query.created_before
    async with redis.pipeline(transaction=True) as pipe:
        if scratch is not None:
            # MAX keeps the creation time: every set scores a job by the same value.
            if len(sets) > 1:
                pipe.zinterstore(scratch, sets, aggregate="MAX")
            if mocks is not None:
                # ZDIFFSTORE keeps the first set's scores: the creation times.
                pipe.zdiffstore(scratch, [scratch if len(sets) > 1 else sets[0], mocks])
        pipe.zcount(key, low, high)
        if query.ascending:
            pipe.zrangebyscore(key, low, high, start=query.offset, num=query.limit)
        else:
            pipe.zrevrangebyscore(key, high, low, start=query.offset, num=query.limit)
        if scratch is not None:
            pipe.delete(scratch)
        replies = await pipe.execute()
    # Replies of the ZINTERSTORE/ZDIFFSTORE queued before ZCOUNT.
    offset = int(len(sets) > 1) + int(mocks is not None) if scratch is not None else 0
    count, ids = replies[offset], replies[offset + 1]
    return [i.decode() if isinstance(i, bytes) else i for i in ids], int(count)


async def session_job_ids(redis: Redis, instance: str, session_id: str) -> list[str]:
    """All job ids of a session in submission order (oldest first)."""
    ids = await redis.zrange(keys.job_filter(instance, "session", session_id), 0, -1)
    return [_text(i) for i in ids]


# Seconds between two trims of the same index key, and how much one trim looks at.
TRIM_INTERVAL = 300.0
TRIM_KEYS = 50
TRIM_MEMBERS = 500


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def trim_key(redis: Redis, key: str, cutoff: float, now: float, limit: int = TRIM_MEMBERS) -> int:
    """Remove from index ``key`` up to ``limit`` members created before ``cutoff`` whose record
    expired; forget ``key`` in the registry once it is empty. Returns the members removed.

    Members are checked against their record, not dropped by score alone: a job created long
    ago that finished recently is still stored (its retention counts from its end).
    """
    old = [_text(i) for i in await redis.zrangebyscore(key, "-inf", cutoff, start=0, num=limit)]
    gone: list[str] = []
    if old:
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in old:
                pipe.exists(keys.job(job_id))
            present = await pipe.execute()
        gone = [job_id for job_id, there in zip(old, present, strict=True) if not there]
        if gone:
            await redis.zrem(key, *gone)
    async with redis.pipeline(transaction=True) as pipe:
        try:
            # WATCH: a job indexed meanwhile keeps the key registered.
            await pipe.watch(key)
            empty = not await pipe.exists(key)
            pipe.multi()
            if empty:
                pipe.zrem(keys.INDEXES, key)
            else:
                pipe.zadd(keys.INDEXES, {key: now}, xx=True)
            await pipe.execute()
        except WatchError:
            pass
    return len(gone)


async def trim(redis: Redis, retention: float, now: float, max_keys: int = TRIM_KEYS) -> int:
    """One retention pass over the ``max_keys`` index keys trimmed least recently (and not in
    the last ``TRIM_INTERVAL`` seconds); returns the members removed. ``retention`` <= 0: none.
    """
    if retention <= 0:
        return 0
    names = await redis.zrangebyscore(keys.INDEXES, "-inf", now - TRIM_INTERVAL, start=0, num=max_keys)
    removed = 0
    for name in names:
        removed += await trim_key(redis, _text(name), now - retention, now)
    return removed
