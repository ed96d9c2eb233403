"""The worker registry: each live worker's heartbeat record in Redis, read by ``/workers``,
``/ready`` and ``/metrics``.

A worker rewrites its :class:`WorkerInfo` every few seconds under ``qrs:worker:{id}`` with a
time to live of one job lease; when the process dies the key expires and the worker drops out
of :func:`live_workers` (the ``qrs:workers`` index is cleaned lazily).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec
from redis.asyncio import Redis

from qiskit_runtime_server.shared import keys

_encode = msgspec.json.Encoder().encode

# Index entries whose record expired this long ago are dropped when the registry is read.
STALE_AFTER = 3600.0


class WorkerInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One worker as it last reported itself. Times are UNIX seconds.

    ``device`` is the Aer device the worker simulates on (``CPU``/``GPU``); ``visible_devices``
    is its ``CUDA_VISIBLE_DEVICES`` (the GPU it is pinned to), when set.
    """

    id: str
    host: str
    pid: int
    device: str
    queue: str
    started: float
    heartbeat: float
    current_job: str | None = None
    jobs_done: int = 0
    visible_devices: str | None = None


_decode_info = msgspec.json.Decoder(WorkerInfo).decode


async def publish(redis: Redis, info: WorkerInfo, ttl: float) -> None:
    """Write ``info`` with a time to live of ``ttl`` seconds and index it (one round trip).

    No MULTI: readers (:func:`live_workers`) already take an index entry without its record
    as a worker gone, and the record is the same entry written again.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker(info.id), _encode(info), px=max(1, int(ttl * 1000)))
        pipe.zadd(keys.WORKERS, {info.id: info.heartbeat})
        await pipe.execute()


async def remove(redis: Redis, worker_id: str) -> None:
    """Drop a worker at clean shutdown, so it stops counting as live at once."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.worker(worker_id))
        pipe.zrem(keys.WORKERS, worker_id)
        await pipe.execute()


async def live_workers(redis: Redis) -> list[WorkerInfo]:
    """Every worker whose heartbeat record has not expired, oldest first."""
    ids = await redis.zrange(keys.WORKERS, 0, -1)
    if not ids:
        return []
    return await live_from(redis, await redis.mget(worker_keys(ids)))


def worker_keys(ids: Iterable[bytes | str]) -> list[str]:
    """The heartbeat-record keys of the worker ids listed in ``keys.WORKERS`` (a ``ZRANGE`` reply)."""
    return [keys.worker(i.decode() if isinstance(i, bytes) else i) for i in ids]


async def live_from(redis: Redis, raws: Iterable[bytes | str | None]) -> list[WorkerInfo]:
    """The live workers among the heartbeat records ``raws`` (an ``MGET`` of :func:`worker_keys`);
    expired ones (``None``) are dropped from ``keys.WORKERS`` by age."""
    raws = list(raws)
    if any(raw is None for raw in raws):
        # By age rather than by id: a worker may be re-publishing the very entry right now.
        await redis.zremrangebyscore(keys.WORKERS, "-inf", time.time() - STALE_AFTER)
    return [_decode_info(raw) for raw in raws if raw is not None]
