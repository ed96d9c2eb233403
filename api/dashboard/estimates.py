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
"""

from __future__ import annotations

from collections.abc import Iterable

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

    def turnaround(self, backend: str) -> float | None:
        """Estimated seconds from submission to the end of a job on ``backend``."""
        run = self.mean_run.get(backend)
        if self.wait_seconds is None or run is None:
            return self.wait_seconds
        return self.wait_seconds + run


def estimate(queued: dict[str, int], running: dict[str, int], runs: dict[str, list[float]], live: int) -> QueueEstimate:
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
    return QueueEstimate(queued=queued, running=running, mean_run=means, workers=live, wait_seconds=wait)


async def queue_estimate(redis: Redis, backends: Iterable[str]) -> QueueEstimate:
    """The live estimate for ``backends`` (those served) plus any backend with jobs in the queue."""
    now = await stats.read_now(redis, [keys.ALL_SCOPE])
    queued: dict[str, int] = {}
    running: dict[str, int] = {}
    for field, value in now.items():
        parts = field.split("|")
        if len(parts) == 3 and parts[0] == "backend" and value > 0:
            if parts[2] == "Queued":
                queued[parts[1]] = int(value)
            elif parts[2] == "Running":
                running[parts[1]] = int(value)
    names = set(backends) | set(queued) | set(running)
    runs = await stats.recent_runs(redis, sorted(names))
    live = len(await workers.live_workers(redis))
    return estimate(queued, running, runs, live)
