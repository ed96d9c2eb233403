"""Optimistic transactions: WATCH a key, read it, write under MULTI/EXEC; retry on conflict, a bounded number of times.

The one compare-and-set loop of the job store (job records, job creation under a session
guard) and the session store. The WATCH and the read of the watched key travel in one round
trip (the read is sent behind the WATCH on the same connection, so it sees the state the
WATCH guards), the queued writes in a second: a state change costs two round trips.

Connection errors while watching and reading are retried with the client's own back-off (the
pair is idempotent, and a fresh connection watches nothing); a connection lost inside EXEC
surfaces as ``WatchError`` from redis-py and is retried like a conflict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

_T = TypeVar("_T")

# Conflicts (or lost connections inside EXEC) one transaction rides out before it gives up.
MAX_ATTEMPTS = 50


class Contended(WatchError):
    """The watched key kept changing under every one of ``MAX_ATTEMPTS`` attempts (a ``RedisError``)."""


async def watch_and_get(pipe: Pipeline, key: str) -> bytes | None:
    """``WATCH key`` then ``GET key`` on ``pipe``'s connection in one round trip; ``pipe`` stays watching."""
    conn = pipe.connection
    if conn is None:
        conn = await pipe.connection_pool.get_connection()
        pipe.connection = conn

    async def send() -> bytes | None:
        await conn.send_packed_command(conn.pack_commands([("WATCH", key), ("GET", key)]))
        await conn.read_response()
        raw: bytes | None = await conn.read_response()
        return raw

    async def failed(error: Exception) -> None:
        await conn.disconnect()

    raw = await conn.retry.call_with_retry(send, failed)
    pipe.watching = True
    return raw


async def transact(
    redis: Redis,
    key: str | None,
    write: Callable[[Pipeline, bytes | None], _T],
    *,
    attempts: int = MAX_ATTEMPTS,
) -> _T:
    """Run ``write`` on the current value of ``key`` and apply what it queued, atomically.

    ``write(pipe, raw)`` gets the pipeline already in MULTI and the raw value of ``key``
    (``None`` when missing); it queues its commands and returns what this returns. When it
    queues nothing, nothing is sent (the WATCH is released). It may raise to refuse the write.
    Without ``key`` nothing is watched: ``write`` gets ``None`` and the block runs once.

    Raises:
        Contended: ``key`` changed during each of ``attempts`` attempts.
    """
    for _ in range(attempts):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                raw = None if key is None else await watch_and_get(pipe, key)
                pipe.multi()
                outcome = write(pipe, raw)
                if pipe.command_stack:
                    await pipe.execute()
                return outcome
            except WatchError:
                continue
    raise Contended(f"{key} changed during each of {attempts} attempts to update it")
