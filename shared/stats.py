"""Job statistics kept in Redis as jobs change state: ``/metrics`` counters and the dashboard's aggregates.

Every API and worker process of a deployment writes them in the same transaction that changes a
job's state (``JobStore``), so the numbers are exact whichever process did the work, survive
restarts, and any API replica serves the same ones. Nothing here ever reads job records: the
dashboard's analytics (``api/dashboard``) are answered from these aggregates alone, so they cost
the same with 100 or 100,000 jobs stored.

``/metrics`` (``qrs:stats:jobs``): ``finished|{program}|{status}`` (count), ``runb|{program}|{le}``
(the jobs whose running time fell into that bucket of ``RUN_BUCKETS`` alone: one HINCRBY per job;
``api/metrics.py`` sums them into Prometheus' cumulative buckets, adding the cumulative
``run|{program}|{le}`` fields that earlier versions wrote), ``run_sum|{program}``, ``run_count|{program}``.

Dashboard, per *scope* (one instance, and ``all``: every instance; see ``shared/keys.py``):

* ``now`` hash: ``backend|{backend}|{status}``: jobs that are in that state
  (final states: jobs that ended so, kept while their record is; ``delete`` takes them off).
* ``hour:{YYYYMMDDHH}`` and ``day:{YYYYMMDD}`` hashes (UTC): ``created|{b}``,
  ``final|{b}|{status}``, ``run_s|{b}`` (seconds of running of the jobs that
  ended), ``wait_s|{b}`` / ``waited|{b}`` (queue wait of the jobs that started), and in the day
  hash only the log-spaced histograms ``wh|{b}|{i}`` (wait) and ``rh|{b}|{i}`` (run) and, for
  ``all``, ``worker_s|{worker}``. A job counts in the bucket of the moment of its change.
  Totals over backends (``state|{status}``, ``created``, ``final|{status}``) are not stored
  (one write less per scope and change): the readers add them up from the per-backend fields
  (:func:`with_totals`), and ignore the stored totals that earlier versions also wrote.
* ``status:{status}`` and ``status:{status}:{backend}`` zsets: the scope's job ids in that state
  (on that backend): the dashboard's state filter, and state + backend in one set.

Deployment-wide: ``qrs:dash:all:jobs[:{backend|program}:{v}]`` (the operator's job listing across
instances), ``qrs:dash:usage:{YYYY-MM}`` (instance -> simulation seconds) and
``qrs:dash:runs:{backend}`` (latest running times, for wait estimates). Every job change is also
published as JSON on ``qrs:job-events`` (the dashboard's WebSocket feed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from qiskit_runtime_server.shared import keys
from qiskit_runtime_server.shared.models import JobRecord, JobStatus

# Upper bounds (seconds) of the job running-time histogram buckets (/metrics).
RUN_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 10800.0, math.inf)

# Dashboard histograms: bucket i holds durations in (H_BASE * H_RATIO**(i-1), H_BASE * H_RATIO**i];
# bucket 0 everything up to 10 ms, the last everything above ~17 hours. A percentile read from
# them is within one bucket's width (25 %) of the exact one.
H_BASE = 0.01
H_RATIO = 1.25
H_BUCKETS = 80

HOUR_TTL = 8 * 86_400
DAY_TTL = 400 * 86_400
# Running times kept per backend for wait estimates.
RECENT_RUNS = 50

_encode = msgspec.json.Encoder().encode


def bucket_label(bound: float) -> str:
    """Prometheus' ``le`` label for a bucket bound (``+Inf`` for the last one)."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def h_index(seconds: float) -> int:
    """The dashboard histogram bucket of a duration in seconds."""
    if seconds <= H_BASE:
        return 0
    return min(H_BUCKETS - 1, math.ceil(math.log(seconds / H_BASE) / math.log(H_RATIO) - 1e-9))


def h_bound(index: int) -> float:
    """Upper bound (seconds) of dashboard histogram bucket ``index``."""
    return H_BASE * H_RATIO**index


def hour_label(ts: float) -> str:
    return time.strftime("%Y%m%d%H", time.gmtime(ts))


def day_label(ts: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ts))


def record_final(pipe: Pipeline, record: JobRecord) -> None:
    """Queue on ``pipe`` (inside the transaction that finishes ``record``) its ``/metrics`` counter updates."""
    program = record.program_id
    pipe.hincrby(keys.JOB_STATS, f"finished|{program}|{record.status.value}", 1)
    if record.running is None or record.finished is None:
        return  # cancelled before it ran: no running time to observe
    seconds = max(0.0, record.finished - record.running)
    bound = next(b for b in RUN_BUCKETS if seconds <= b)
    pipe.hincrby(keys.JOB_STATS, f"runb|{program}|{bucket_label(bound)}", 1)
    pipe.hincrbyfloat(keys.JOB_STATS, f"run_sum|{program}", seconds)
    pipe.hincrby(keys.JOB_STATS, f"run_count|{program}", 1)


def _scopes(record: JobRecord) -> tuple[str, str]:
    return keys.dash_scope(record.instance), keys.ALL_SCOPE


def _bump(pipe: Pipeline, record: JobRecord, ts: float, fields: dict[str, float], day_only: dict[str, float]) -> None:
    """Add ``fields`` to the hour and day hashes (``day_only`` to the day hash) of both scopes."""
    for scope in _scopes(record):
        hour, day = keys.dash_hour(scope, hour_label(ts)), keys.dash_day(scope, day_label(ts))
        for key, extra, ttl in ((hour, {}, HOUR_TTL), (day, day_only, DAY_TTL)):
            for field, amount in {**fields, **extra}.items():
                if float(amount).is_integer():
                    pipe.hincrby(key, field, int(amount))
                else:
                    pipe.hincrbyfloat(key, field, amount)
            pipe.expire(key, ttl)


def _event(pipe: Pipeline, record: JobRecord) -> None:
    event = {
        "id": record.id,
        "instance": record.instance,
        "backend": record.backend,
        "program": record.program_id,
        "status": record.status.value,
        "created": record.created,
        "running": record.running,
        "finished": record.finished,
        "worker": record.worker_id,
        "reason": record.reason,
        "session_id": record.session_id,
    }
    pipe.publish(keys.JOB_EVENTS_CHANNEL, _encode(event))


def _register(pipe: Pipeline, index_keys: list[str], now: float) -> None:
    # job_index.trim walks this registry: expired jobs leave the dashboard's sets with the others.
    pipe.zadd(keys.INDEXES, dict.fromkeys(index_keys, now), nx=True)


def record_created(pipe: Pipeline, record: JobRecord) -> None:
    """Queue on ``pipe`` (inside ``JobStore.create``'s transaction) the dashboard updates of a new job."""
    all_keys = [
        keys.dash_all_jobs(),
        keys.dash_all_jobs("backend", record.backend),
        keys.dash_all_jobs("program", record.program_id),
    ]
    status_keys = [
        keys.dash_status(scope, record.status.value, backend)
        for scope in _scopes(record)
        for backend in (None, record.backend)
    ]
    for key in all_keys + status_keys:
        pipe.zadd(key, {record.id: record.created})
    _register(pipe, all_keys + status_keys, record.created)
    for scope in _scopes(record):
        pipe.hincrby(keys.dash_now(scope), f"backend|{record.backend}|{record.status.value}", 1)
    _bump(pipe, record, record.created, {f"created|{record.backend}": 1}, {})
    _event(pipe, record)


def record_change(pipe: Pipeline, old: JobRecord, new: JobRecord, now: float | None = None) -> None:
    """Queue on ``pipe`` (inside the transaction that turns ``old`` into ``new``) the dashboard updates.

    A change that keeps the state (tags, a worker taking over a running job) moves nothing.
    ``now`` (UNIX seconds) picks the time buckets; the store leaves it to the clock, the
    benchmark's fill backdates it.
    """
    if old.status == new.status:
        return
    now = time.time() if now is None else now
    backend = new.backend
    moved = []
    for scope in _scopes(new):
        for on in (None, backend):
            pipe.zrem(keys.dash_status(scope, old.status.value, on), new.id)
            pipe.zadd(keys.dash_status(scope, new.status.value, on), {new.id: new.created})
            moved.append(keys.dash_status(scope, new.status.value, on))
        pipe.hincrby(keys.dash_now(scope), f"backend|{backend}|{old.status.value}", -1)
        pipe.hincrby(keys.dash_now(scope), f"backend|{backend}|{new.status.value}", 1)
    _register(pipe, moved, new.created)
    fields: dict[str, float] = {}
    day_only: dict[str, float] = {}
    if new.status == JobStatus.RUNNING and old.status == JobStatus.QUEUED:
        wait = max(0.0, (new.running or now) - new.created)
        fields.update({f"wait_s|{backend}": wait, f"waited|{backend}": 1})
        day_only[f"wh|{backend}|{h_index(wait)}"] = 1
    if new.status.final:
        fields[f"final|{backend}|{new.status.value}"] = 1
        if new.running is not None:
            run = max(0.0, (new.finished or now) - new.running)
            fields[f"run_s|{backend}"] = run
            day_only[f"rh|{backend}|{h_index(run)}"] = 1
            pipe.lpush(keys.dash_runs(backend), repr(run))
            pipe.ltrim(keys.dash_runs(backend), 0, RECENT_RUNS - 1)
            if new.worker_id:
                # Deployment-wide only: per-worker time is not an instance's data.
                day = keys.dash_day(keys.ALL_SCOPE, day_label(now))
                pipe.hincrbyfloat(day, f"worker_s|{new.worker_id}", run)
        if new.quantum_seconds:
            period = time.strftime("%Y-%m", time.gmtime(new.finished or now))
            pipe.hincrbyfloat(keys.dash_usage(period), new.instance, new.quantum_seconds)
            pipe.expire(keys.dash_usage(period), DAY_TTL)
    if fields or day_only:
        _bump(pipe, new, now, fields, day_only)
    _event(pipe, new)


def record_deleted(pipe: Pipeline, record: JobRecord) -> None:
    """Queue on ``pipe`` (inside ``JobStore.delete``'s transaction) the removal of a job from the dashboard's sets."""
    for key in (
        keys.dash_all_jobs(),
        keys.dash_all_jobs("backend", record.backend),
        keys.dash_all_jobs("program", record.program_id),
    ):
        pipe.zrem(key, record.id)
    for scope in _scopes(record):
        pipe.zrem(keys.dash_status(scope, record.status.value), record.id)
        pipe.zrem(keys.dash_status(scope, record.status.value, record.backend), record.id)
        pipe.hincrby(keys.dash_now(scope), f"backend|{record.backend}|{record.status.value}", -1)


# ---- readers (the dashboard API); every one reads a bounded number of hashes, never job records ----


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def merge_hashes(hashes: Iterable[dict[Any, Any]]) -> dict[str, float]:
    """``HGETALL`` replies of ``now``, hour or day hashes summed field by field, totals added."""
    out: dict[str, float] = {}
    for item in hashes:
        for field, value in item.items():
            name = _text(field)
            out[name] = out.get(name, 0.0) + float(value)
    return with_totals(out)


def _is_total(name: str) -> bool:
    return name == "created" or name.startswith("state|") or (name.startswith("final|") and name.count("|") == 1)


def with_totals(fields: dict[str, float]) -> dict[str, float]:
    """``fields`` with the totals over backends added up: ``state|{s}`` from ``backend|{b}|{s}``,
    ``created`` from ``created|{b}`` and ``final|{s}`` from ``final|{b}|{s}`` (stored totals, which
    earlier versions wrote next to the per-backend fields, are replaced)."""
    out = {name: value for name, value in fields.items() if not _is_total(name)}
    for name, value in list(out.items()):
        parts = name.split("|")
        if len(parts) == 3 and parts[0] == "backend":
            total = f"state|{parts[2]}"
        elif len(parts) == 2 and parts[0] == "created":
            total = "created"
        elif len(parts) == 3 and parts[0] == "final":
            total = f"final|{parts[2]}"
        else:
            continue
        out[total] = out.get(total, 0.0) + value
    return out


async def read_now(redis: Redis, scopes: list[str]) -> dict[str, float]:
    """The ``now`` hashes of ``scopes``, summed field by field."""
    async with redis.pipeline(transaction=False) as pipe:
        for scope in scopes:
            pipe.hgetall(keys.dash_now(scope))
        return merge_hashes(await pipe.execute())


def bucket_labels(unit: str, count: int, now: float) -> list[str]:
    """The ``count`` latest hour (``unit="hour"``) or day labels up to ``now``, oldest first."""
    step = 3600 if unit == "hour" else 86_400
    label = hour_label if unit == "hour" else day_label
    return [label(now - step * i) for i in range(count - 1, -1, -1)]


async def read_buckets(redis: Redis, scopes: list[str], unit: str, labels: list[str]) -> list[dict[str, float]]:
    """Per label (oldest first), the hour or day hashes of ``scopes`` summed."""
    key = keys.dash_hour if unit == "hour" else keys.dash_day
    async with redis.pipeline(transaction=False) as pipe:
        for label in labels:
            for scope in scopes:
                pipe.hgetall(key(scope, label))
        replies = await pipe.execute()
    n = len(scopes)
    return [merge_hashes(replies[i * n : (i + 1) * n]) for i in range(len(labels))]


def percentiles(histogram: dict[int, float], quantiles: Iterable[float]) -> dict[str, float | None]:
    """Quantiles (0..1) of a dashboard histogram ``{bucket index: count}``, in seconds.

    Interpolated geometrically inside the bucket that crosses the quantile; ``None`` when empty.
    """
    total = sum(histogram.values())
    out: dict[str, float | None] = {}
    for q in quantiles:
        name = f"p{round(q * 100):d}"
        if total <= 0:
            out[name] = None
            continue
        target, seen = q * total, 0.0
        for index in sorted(histogram):
            count = histogram[index]
            if seen + count >= target:
                low = 0.0 if index == 0 else h_bound(index - 1)
                high = h_bound(index)
                frac = (target - seen) / count if count else 1.0
                out[name] = high * frac if low == 0 else low * (high / low) ** frac
                break
            seen += count
    return out

