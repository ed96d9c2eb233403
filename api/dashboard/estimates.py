"""Queue wait estimates from the live queue, recent running times and the number of workers.

Method. Every worker takes jobs from one FIFO queue (arq), whatever their backend, so a job
submitted now starts when the work ahead of it has been shared out among the live workers:

    wait = (sum over backends b of  Q_b * m_b  +  R_b * m_b / 2) / W

``Q_b`` and ``R_b`` are the jobs queued and running on backend ``b`` (the dashboard's counters,
kept in the transactions that change job states), ``m_b`` the mean of ``b``'s latest 50 running
times (``qrs:dash:runs:{b}``; a backend without history gets the mean over all backends), and a
running job is taken to be half done. ``W`` is the number of live workers; with none the wait is
unknown (``None``), and while fewer jobs are queued or running than there are workers, a new
job starts at once (0). A backend's *turnaround* adds its own ``m_b``. Sessions' jobs wait for their
turn on top of this, which the estimate ignores. ``bench/dashboard.py`` measures its error.

IBM-like timing (docs/timing.md): a job on a timed backend first waits its drawn queue time,
whose mean ``q_b`` (``QRS_QUEUE_TIME``) the backend's wait adds: ``wait_b = q_b + wait``
(:meth:`QueueEstimate.wait_for`). Its jobs still waiting out their queue time count in ``Q_b``
and in ``length_queue``, and its ``m_b`` includes the QPU time they are held ``Running``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis

from qiskit_runtime_server.shared import keys, stats, workers


class QueueEstimate(msgspec.Struct, kw_only=True):
    """The queue of every backend and the estimated wait of a job submitted now (seconds)."""

    queued: dict[str, int]
    running: dict[str, int]
    mean_run: dict[str, float | None]
    workers: int
    wait_seconds: float | None
    # Mean queue time (s) of the timed backends (IBM-like timing); others are absent.
    queue_seconds: dict[str, float] = msgspec.field(default_factory=dict)

    def wait_for(self, backend: str) -> float | None:
        """Estimated seconds from submission to the start of a job on ``backend``."""
        if self.wait_seconds is None:
            return None
        return self.queue_seconds.get(backend, 0.0) + self.wait_seconds

    def turnaround(self, backend: str) -> float | None:
        """Estimated seconds from submission to the end of a job on ``backend``."""
        wait, run = self.wait_for(backend), self.mean_run.get(backend)
        if wait is None or run is None:
            return wait
        return wait + run


def estimate(
    queued: dict[str, int],
    running: dict[str, int],
    runs: dict[str, list[float]],
    live: int,
    queue_seconds: dict[str, float] | None = None,
) -> QueueEstimate:
    """The estimate of the module docstring from its inputs (pure: the benchmark calls it too)."""
    means: dict[str, float | None] = {b: (sum(v) / len(v) if v else None) for b, v in runs.items()}
    known = [m for m in means.values() if m is not None]
    fallback = sum(known) / len(known) if known else None
    work = 0.0
    for backend in set(queued) | set(running):
        mean = means.get(backend) or fallback or 0.0
        work += queued.get(backend, 0) * mean + running.get(backend, 0) * mean / 2
    busy = sum(queued.values()) + sum(running.values())
    wait = None if live <= 0 else (0.0 if busy < live else work / live)
    return QueueEstimate(
        queued=queued,
        running=running,
        mean_run=means,
        workers=live,
        wait_seconds=wait,
        queue_seconds=dict(queue_seconds or {}),
    )


async def queue_estimate(
    redis: Redis,
    backends: Iterable[str],
    timed: Callable[[str], float | None] | None = None,
) -> QueueEstimate:
    """The live estimate for ``backends`` (those served) plus any backend with jobs in the queue.

    ``timed(name)``: the mean queue time of a timed backend, ``None`` for one that is not.
    """
    return (await status_reads(redis, backends, timed))[0]


async def status_reads(
    redis: Redis,
    backends: Iterable[str],
    timed: Callable[[str], float | None] | None = None,
    pending: Iterable[str] = (),
) -> tuple[QueueEstimate, int]:
    """:func:`queue_estimate`, and the pending jobs of the ``pending`` backends added up
    (``length_queue`` of a device served under several names).

    Two round trips: the counters, the worker list, the running times of ``backends`` and the
    pending sets, then the workers' heartbeat records and the running times of any other
    backend with jobs (``GET /backends/{name}/status`` is read before every job by the client).
    """
    names = list(backends)
    counted = list(pending)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.dash_now(keys.ALL_SCOPE))
        pipe.zrange(keys.WORKERS, 0, -1)
        for name in names:
            pipe.lrange(keys.dash_runs(name), 0, stats.RECENT_RUNS - 1)
        for name in counted:
            pipe.scard(keys.pending(name))
        now_raw, ids, *rest = await pipe.execute()
    runs_raw, sizes = rest[: len(names)], rest[len(names) :]
    now = stats.merge_hashes([now_raw])
    queued: dict[str, int] = {}
    running: dict[str, int] = {}
    for field, value in now.items():
        parts = field.split("|")
        if len(parts) == 3 and parts[0] == "backend" and value > 0:
            if parts[2] == "Queued":
                queued[parts[1]] = int(value)
            elif parts[2] == "Running":
                running[parts[1]] = int(value)
    runs = {name: [float(v) for v in values] for name, values in zip(names, runs_raw, strict=True)}
    others = sorted((set(queued) | set(running)) - set(runs))
    replies: list[Any] = []
    if ids or others:
        async with redis.pipeline(transaction=False) as pipe:
            for name in others:
                pipe.lrange(keys.dash_runs(name), 0, stats.RECENT_RUNS - 1)
            if ids:
                pipe.mget(workers.worker_keys(ids))
            replies = await pipe.execute()
    runs.update({name: [float(v) for v in values] for name, values in zip(others, replies, strict=False)})
    live = len(await workers.live_from(redis, replies[len(others)] if ids else []))
    means = {} if timed is None else {name: mean for name in runs if (mean := timed(name)) is not None}
    return estimate(queued, running, runs, live, means), sum(int(n) for n in sizes)
