"""Prometheus metrics of the whole deployment, read from Redis at scrape time.

Any API replica answers ``/metrics`` with the same numbers, whichever process did the work:
current jobs come from the per-backend pending sets (no keyspace ``SCAN``) and their records,
finished-job counters and the running-time histogram from ``qrs:stats:jobs``
(``shared/stats.py``), live workers from the heartbeat registry (``shared/workers.py``). The
text is rendered by ``prometheus_client``.

Metric                              type       labels
qrs_jobs                            gauge      state (Queued|Running), program, backend
qrs_queue_depth                     gauge      backend (jobs waiting for a worker)
qrs_jobs_finished_total             counter    state (Completed|Failed|Cancelled), program
qrs_job_run_seconds                 histogram  program (Running -> final, seconds)
qrs_workers_live                    gauge      device
qrs_workers_busy                    gauge      device
qrs_arq_queue_length                gauge      (arq's queue: waiting, retrying and running jobs)
qrs_class_queue_length              gauge      class (cpu|gpu: entries of that device class's queue, KEDA's trigger)
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Iterable, Iterator
from typing import cast

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis.asyncio import Redis

from qiskit_runtime_server.shared import keys, routing, stats, workers
from qiskit_runtime_server.shared.backends import BackendCatalog
from qiskit_runtime_server.shared.models import JobRecord, JobStatus

_decode_record = msgspec.json.Decoder(JobRecord).decode


@functools.cache
def catalog_backends() -> tuple[str, ...]:
    """Names of the catalog's backends (the API serves the default catalog)."""
    return tuple(BackendCatalog().names())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Snapshot:
    """The families of one scrape, built beforehand (collectors are synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def _pending_records(redis: Redis, backends: Iterable[str]) -> list[JobRecord]:
    # One pending set per catalog backend (POST /jobs accepts no other): no keyspace SCAN.
    async with redis.pipeline(transaction=False) as pipe:
        for backend in backends:
            pipe.smembers(keys.pending(backend))
        groups = await pipe.execute()
    ids = [_text(i) for group in groups for i in group]
    records: list[JobRecord] = []
    for start in range(0, len(ids), 500):
        raws = await redis.mget([keys.job(i) for i in ids[start : start + 500]])
        records.extend(_decode_record(raw) for raw in raws if raw is not None)
    return records


def _finished_families(raw: dict[str, str]) -> Iterable[Metric]:
    finished = CounterMetricFamily("qrs_jobs_finished", "Jobs that reached a final state.", labels=["state", "program"])
    run = HistogramMetricFamily("qrs_job_run_seconds", "Running time of finished jobs.", labels=["program"])
    cumulative: dict[str, dict[str, float]] = {}  # run|: written cumulatively by earlier versions
    single: dict[str, dict[str, float]] = {}  # runb|: one bucket per job, summed here
    sums: dict[str, float] = {}
    for field, value in sorted(raw.items()):
        kind, _, rest = field.partition("|")
        if kind == "finished":
            program, _, state = rest.partition("|")
            finished.add_metric([state, program], float(value))
        elif kind in ("run", "runb"):
            program, _, le = rest.rpartition("|")
            (cumulative if kind == "run" else single).setdefault(program, {})[le] = float(value)
        elif kind == "run_sum":
            sums[rest] = float(value)
    for program in sorted(cumulative.keys() | single.keys()):
        # A bucket no job fell into has no field yet.
        old, new, below = cumulative.get(program, {}), single.get(program, {}), 0.0
        series = []
        for bound in stats.RUN_BUCKETS:
            label = stats.bucket_label(bound)
            below += new.get(label, 0.0)
            series.append((label, old.get(label, 0.0) + below))
        run.add_metric([program], series, sums.get(program, 0.0))
    return [finished, run]


async def render_metrics(redis: Redis, queue_name: str, backends: Iterable[str] | None = None) -> bytes:
    """The Prometheus text exposition of the deployment's current metrics.

    ``backends``: whose pending jobs to count; default every backend of the catalog.
    """
    records = await _pending_records(redis, catalog_backends() if backends is None else backends)
    jobs = GaugeMetricFamily("qrs_jobs", "Jobs not yet final.", labels=["state", "program", "backend"])
    current = Counter((r.status.value, r.program_id, r.backend) for r in records if not r.status.final)
    for state in (JobStatus.QUEUED, JobStatus.RUNNING):
        for (status, program, backend), count in sorted(current.items()):
            if status == state.value:
                jobs.add_metric([status, program, backend], count)
    depth = GaugeMetricFamily("qrs_queue_depth", "Jobs waiting for a worker, per backend.", labels=["backend"])
    waiting = Counter(r.backend for r in records if r.status == JobStatus.QUEUED)
    for backend, count in sorted(waiting.items()):
        depth.add_metric([backend], count)

    # redis-py types its commands as "Awaitable | value" (sync and async clients share them).
    stats_hash = await cast("Awaitable[dict[bytes, bytes]]", redis.hgetall(keys.JOB_STATS))
    raw_stats = {_text(k): _text(v) for k, v in stats_hash.items()}

    live = await workers.live_workers(redis)
    live_g = GaugeMetricFamily("qrs_workers_live", "Workers with a current heartbeat.", labels=["device"])
    busy_g = GaugeMetricFamily("qrs_workers_busy", "Live workers running a job.", labels=["device"])
    for device in sorted({w.device for w in live} | {"CPU"}):
        live_g.add_metric([device], sum(w.device == device for w in live))
        busy_g.add_metric([device], sum(w.device == device and w.current_job is not None for w in live))
    arq_len = GaugeMetricFamily("qrs_arq_queue_length", "Entries in the arq queue (waiting or running).")
    arq_len.add_metric([], await redis.zcard(queue_name))
    class_len = GaugeMetricFamily(
        "qrs_class_queue_length", "Entries (waiting or running) of each device class's queue.", labels=["class"]
    )
    for device_class in routing.CLASSES:
        class_len.add_metric([device_class], await redis.zcard(routing.class_queue(queue_name, device_class)))

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot([jobs, depth, *_finished_families(raw_stats), live_g, busy_g, arq_len, class_len]))
    return generate_latest(registry)
