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
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared import keys
from shared.models import JobRecord

PENDING = "pending"
FINAL = "final"


class JobQuery(msgspec.Struct, kw_only=True, frozen=True):
    """The filters of ``GET /jobs`` (PROTOCOL.md §5.6); times are UNIX seconds, bounds inclusive."""

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
    return out


def _state_key(record: JobRecord) -> str:
    return keys.job_filter(record.instance, "state", FINAL if record.status.final else PENDING)


def add_commands(pipe: Any, record: JobRecord) -> None:
    """Queue on ``pipe`` the commands that index a new job."""
    for key in [*_filter_keys(record), _state_key(record)]:
        pipe.zadd(key, {record.id: record.created})


def update_commands(pipe: Any, old: JobRecord, new: JobRecord) -> None:
    """Queue the commands that move a job between indexes after a state or tag change."""
    if _state_key(old) != _state_key(new):
        pipe.zrem(_state_key(old), old.id)
        pipe.zadd(_state_key(new), {new.id: new.created})
    inst = new.instance
    for tag in set(old.tags) - set(new.tags):
        pipe.zrem(keys.job_filter(inst, "tag", tag), new.id)
    for tag in set(new.tags) - set(old.tags):
        pipe.zadd(keys.job_filter(inst, "tag", tag), {new.id: new.created})


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


async def find(redis: Redis, query: JobQuery) -> tuple[list[str], int]:
    """The page of job ids matching ``query`` (newest first unless ``ascending``) and the total count."""
    sets = query_keys(query)
    scratch = None
    if len(sets) == 1:
        key = sets[0]
    else:
        scratch = key = keys.listing_scratch(uuid.uuid4().hex)
    low = "-inf" if query.created_after is None else query.created_after
    high = "+inf" if query.created_before is None else query.created_before
    async with redis.pipeline(transaction=True) as pipe:
        if scratch is not None:
            # MAX keeps the creation time: every set scores a job by the same value.
            pipe.zinterstore(scratch, sets, aggregate="MAX")
        pipe.zcount(key, low, high)
        if query.ascending:
            pipe.zrangebyscore(key, low, high, start=query.offset, num=query.limit)
        else:
            pipe.zrevrangebyscore(key, high, low, start=query.offset, num=query.limit)
        if scratch is not None:
            pipe.delete(scratch)
        replies = await pipe.execute()
    offset = 1 if scratch is not None else 0
    count, ids = replies[offset], replies[offset + 1]
    return [i.decode() if isinstance(i, bytes) else i for i in ids], int(count)


async def session_job_ids(redis: Redis, instance: str, session_id: str) -> list[str]:
    """All job ids of a session in submission order (oldest first)."""
    ids = await redis.zrange(keys.job_filter(instance, "session", session_id), 0, -1)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]
