"""Deployment-wide job counters kept in Redis, for ``/metrics``.

Every API and worker process of a deployment writes to one Redis hash (``qrs:stats:jobs``) in
the same transaction that makes a job final, so the counts are exact whichever process did
the work, survive process restarts, and any API replica serves the same numbers. Prometheus
counters kept per process would need one scrape target per worker instead.

Fields: ``finished|{program}|{status}`` (count), ``run|{program}|{le}`` (cumulative histogram
bucket of running time, seconds), ``run_sum|{program}`` and ``run_count|{program}``.
"""

from __future__ import annotations

import math

from redis.asyncio.client import Pipeline

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.models import JobRecord

# Upper bounds (seconds) of the job running-time histogram buckets.
RUN_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 10800.0, math.inf)


def bucket_label(bound: float) -> str:
    """Prometheus' ``le`` label for a bucket bound (``+Inf`` for the last one)."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def record_final(pipe: Pipeline, record: JobRecord) -> None:
    """Queue on ``pipe`` (inside the transaction that finishes ``record``) its counter updates."""
    program = record.program_id
    pipe.hincrby(keys.JOB_STATS, f"finished|{program}|{record.status.value}", 1)
    if record.running is None or record.finished is None:
        return  # cancelled before it ran: no running time to observe
    seconds = max(0.0, record.finished - record.running)
    for bound in RUN_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(keys.JOB_STATS, f"run|{program}|{bucket_label(bound)}", 1)
    pipe.hincrbyfloat(keys.JOB_STATS, f"run_sum|{program}", seconds)
    pipe.hincrby(keys.JOB_STATS, f"run_count|{program}", 1)
