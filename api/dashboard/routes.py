"""The dashboard's analytics and queue API, under ``/dashboard/api`` (not IBM's ``/api/v1``).

Every answer comes from the aggregates ``shared/stats.py`` keeps as jobs change state and from
the job indexes; none scans job records, so each costs a bounded number of Redis commands with
any number of jobs stored (``bench/dashboard.py``). Each is narrowed to what the caller may see
(``viewer.py``); ``instance=`` narrows further to one instance the caller may see.

GET /dashboard/api/overview             jobs per state now, last hour, throughput, workers by device
GET /dashboard/api/trends               per hour (``unit=hour``, ``count`` <= 168) or day (<= 400)
GET /dashboard/api/status-distribution  jobs per state, overall and per backend
GET /dashboard/api/backends             per-backend utilisation and comparison over ``days``
GET /dashboard/api/queue                queue per backend, wait estimate, longest/shortest wait
GET /dashboard/api/percentiles          wait and run time p50/p90/p95/p99 over ``days``
GET /dashboard/api/usage                simulation seconds per instance in ``month`` (YYYY-MM)
GET /dashboard/api/workers              live workers, their current job and time busy today
GET /dashboard/api/jobs                 the jobs table (filters, search by id, paging)
GET /dashboard/api/jobs/{job_id}        one job: timestamps, attempts, worker, options, logs, reason
GET /dashboard/api/sessions             sessions and batches, newest first, with their jobs by state
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, cast

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qiskit_runtime_server.api.dashboard.estimates import queue_estimate
from qiskit_runtime_server.api.dashboard.viewer import Viewer, request_viewer
from qiskit_runtime_server.api.query import int_param
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import keys, sessions, stats, workers
from qiskit_runtime_server.shared.errors import InvalidRequest, NotFound
from qiskit_runtime_server.shared.models import JobRecord, JobStatus, iso

STATUSES = [s.value for s in JobStatus]
QUANTILES = (0.5, 0.9, 0.95, 0.99)
# Params larger than this are not decoded for the job detail's options.
MAX_OPTIONS_PARAMS = 1024 * 1024


def _scopes(request: Request) -> tuple[Viewer, list[str]]:
    viewer = request_viewer(request)
    return viewer, viewer.scopes(request.query_params.get("instance") or None)


def _split(fields: dict[str, float], prefix: str) -> dict[str, dict[str, float]]:
    """``{prefix|a|b: v}`` -> ``{a: {b: v}}``."""
    out: dict[str, dict[str, float]] = {}
    for field, value in fields.items():
        parts = field.split("|")
        if len(parts) == 3 and parts[0] == prefix:
            out.setdefault(parts[1], {})[parts[2]] = value
    return out


def _per_backend(fields: dict[str, float], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for field, value in fields.items():
        name, sep, backend = field.partition("|")
        if sep and name == prefix and "|" not in backend:
            out[backend] = value
    return out


def _states(fields: dict[str, float]) -> dict[str, int]:
    return {s: max(0, int(fields.get(f"state|{s}", 0))) for s in STATUSES}


async def overview(request: Request) -> Response:
    """``GET /dashboard/api/overview``: ``{"jobs": {state: n}, "last_hour": {...}, "throughput_per_minute",
    "workers": {"live", "busy", "by_device": {device: {"live", "busy"}}}}``."""
    viewer, scopes = _scopes(request)
    redis = app_state(request)["pool"]
    now = time.time()
    states = _states(await stats.read_now(redis, scopes))
    (hour,) = await stats.read_buckets(redis, scopes, "hour", [stats.hour_label(now)])
    (previous,) = await stats.read_buckets(redis, scopes, "hour", [stats.hour_label(now - 3600)])
    finished = sum(hour.get(f"final|{s}", 0) for s in STATUSES)
    # Throughput over the last full 60 minutes: this hour so far plus the rest from the previous one.
    into = (now % 3600) / 3600
    window = finished + sum(previous.get(f"final|{s}", 0) for s in STATUSES) * (1 - into)
    live = await workers.live_workers(redis)
    by_device: dict[str, dict[str, int]] = {}
    for w in live:
        entry = by_device.setdefault(w.device, {"live": 0, "busy": 0})
        entry["live"] += 1
        entry["busy"] += int(w.current_job is not None)
    return MsgspecResponse(
        {
            "jobs": states,
            "this_hour": {
                "created": int(hour.get("created", 0)),
                **{s: int(hour.get(f"final|{s}", 0)) for s in STATUSES if JobStatus(s).final},
            },
            "throughput_per_minute": round(window / 60, 3),
            "workers": {"live": len(live), "busy": sum(e["busy"] for e in by_device.values()), "by_device": by_device},
            "operator": viewer.operator,
        }
    )


async def trends(request: Request) -> Response:
    """``GET /dashboard/api/trends?unit=hour|day&count=N``: ``{"unit", "buckets": [{"start", "created",
    "Completed", "Failed", "Cancelled", "started"}]}``, oldest first (UTC)."""
    _, scopes = _scopes(request)
    unit = request.query_params.get("unit", "hour")
    if unit not in ("hour", "day"):
        raise InvalidRequest(f"unit must be hour or day: {unit!r}")
    count = int_param(request, "count", 24 if unit == "hour" else 30, 1, 168 if unit == "hour" else 400)
    labels = stats.bucket_labels(unit, count, time.time())
    buckets = await stats.read_buckets(app_state(request)["pool"], scopes, unit, labels)
    fmt = "%Y%m%d%H" if unit == "hour" else "%Y%m%d"
    out = []
    for label, fields in zip(labels, buckets, strict=True):
        start = datetime.strptime(label + "+0000", fmt + "%z").timestamp()
        entry: dict[str, Any] = {"start": iso(start), "created": int(fields.get("created", 0))}
        entry["started"] = int(sum(_per_backend(fields, "waited").values()))
        for s in STATUSES:
            if JobStatus(s).final:
                entry[s] = int(fields.get(f"final|{s}", 0))
        out.append(entry)
    return MsgspecResponse({"unit": unit, "buckets": out})


async def status_distribution(request: Request) -> Response:
    """``GET /dashboard/api/status-distribution``: ``{"total": {state: n}, "by_backend": {b: {state: n}}}``."""
    _, scopes = _scopes(request)
    fields = await stats.read_now(app_state(request)["pool"], scopes)
    by_backend = {
        b: {s: max(0, int(v.get(s, 0))) for s in STATUSES}
        for b, v in sorted(_split(fields, "backend").items())
        if any(v.values())
    }
    return MsgspecResponse({"total": _states(fields), "by_backend": by_backend})


def _histogram(fields: dict[str, float], prefix: str, backend: str | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for field, value in fields.items():
        parts = field.split("|")
        if len(parts) == 3 and parts[0] == prefix and (backend is None or parts[1] == backend):
            out[int(parts[2])] = out.get(int(parts[2]), 0.0) + value
    return out


async def _days(request: Request, scopes: list[str]) -> tuple[int, dict[str, float]]:
    days = int_param(request, "days", 1, 1, 400)
    labels = stats.bucket_labels("day", days, time.time())
    buckets = await stats.read_buckets(app_state(request)["pool"], scopes, "day", labels)
    merged: dict[str, float] = {}
    for bucket in buckets:
        for field, value in bucket.items():
            merged[field] = merged.get(field, 0.0) + value
    return days, merged


async def backend_comparison(request: Request) -> Response:
    """``GET /dashboard/api/backends?days=N``: per backend over the last N days (UTC, this day
    included): jobs created and ended by state, success rate, busy seconds and their share,
    utilisation (busy seconds over the window's worker-seconds, with today's workers), mean and
    p95 wait and run times (seconds)."""
    _, scopes = _scopes(request)
    days, fields = await _days(request, scopes)
    busy = _per_backend(fields, "run_s")
    total_busy = sum(busy.values()) or 0.0
    finals = _split(fields, "final")
    created = _per_backend(fields, "created")
    waited, wait_s = _per_backend(fields, "waited"), _per_backend(fields, "wait_s")
    live = len(await workers.live_workers(app_state(request)["pool"]))
    into_today = time.time() % 86_400
    capacity = max(1, live) * (86_400 * (days - 1) + into_today)
    out = []
    for backend in sorted(set(busy) | set(finals) | set(created)):
        ended = finals.get(backend, {})
        done = sum(ended.values())
        completed = ended.get(JobStatus.COMPLETED.value, 0)
        run_pct = stats.percentiles(_histogram(fields, "rh", backend), (0.5, 0.95))
        wait_pct = stats.percentiles(_histogram(fields, "wh", backend), (0.5, 0.95))
        out.append(
            {
                "backend": backend,
                "created": int(created.get(backend, 0)),
                "ended": {s: int(ended.get(s, 0)) for s in STATUSES if JobStatus(s).final},
                "success_rate": round(completed / done, 4) if done else None,
                "busy_seconds": round(busy.get(backend, 0.0), 3),
                "busy_share": round(busy.get(backend, 0.0) / total_busy, 4) if total_busy else 0.0,
                "utilisation": round(busy.get(backend, 0.0) / capacity, 4),
                "mean_run_seconds": round(busy[backend] / done, 4) if done and backend in busy else None,
                "mean_wait_seconds": round(wait_s.get(backend, 0) / waited[backend], 4)
                if waited.get(backend)
                else None,
                "run_seconds": run_pct,
                "wait_seconds": wait_pct,
            }
        )
    return MsgspecResponse({"days": days, "backends": out})


async def percentile_view(request: Request) -> Response:
    """``GET /dashboard/api/percentiles?days=N&backend=B``: ``{"wait_seconds": {"p50",...}, "run_seconds":
    {...}, "samples": {"wait", "run"}}``, from log-spaced histograms (within 25 % of exact)."""
    _, scopes = _scopes(request)
    days, fields = await _days(request, scopes)
    backend = request.query_params.get("backend") or None
    wait, run = _histogram(fields, "wh", backend), _histogram(fields, "rh", backend)
    return MsgspecResponse(
        {
            "days": days,
            "backend": backend,
            "wait_seconds": stats.percentiles(wait, QUANTILES),
            "run_seconds": stats.percentiles(run, QUANTILES),
            "samples": {"wait": int(sum(wait.values())), "run": int(sum(run.values()))},
        }
    )


async def queue_view(request: Request) -> Response:
    """``GET /dashboard/api/queue``: per backend with jobs or recent runs ``{"backend", "queued", "running",
    "mean_run_seconds", "estimated_wait_seconds", "estimated_turnaround_seconds"}`` and a summary
    (total queued and running, workers, the estimated wait of a new job, the backends with the
    longest and shortest estimated turnaround, the age of the oldest queued job the caller may see).

    Queue lengths are deployment-wide, as ``length_queue`` of ``/backends/{name}/status`` is.
    """
    _, scopes = _scopes(request)
    state = app_state(request)
    served = state["catalog"].names(include_mocks=False)
    est = await queue_estimate(state["pool"], served)
    rows = []
    # Backends with jobs now, and those with recent running times (their turnaround is known).
    recent = {b for b, mean in est.mean_run.items() if mean is not None}
    for backend in sorted(set(est.queued) | set(est.running) | recent):
        rows.append(
            {
                "backend": backend,
                "queued": est.queued.get(backend, 0),
                "running": est.running.get(backend, 0),
                "mean_run_seconds": est.mean_run.get(backend),
                "estimated_wait_seconds": est.wait_seconds,
                "estimated_turnaround_seconds": est.turnaround(backend),
            }
        )
    turnaround = {str(r["backend"]): est.turnaround(str(r["backend"])) for r in rows}
    known = sorted((t, b) for b, t in turnaround.items() if t is not None)
    oldest_age = None
    async with state["pool"].pipeline(transaction=False) as pipe:
        for scope in scopes:
            pipe.zrange(keys.dash_status(scope, JobStatus.QUEUED.value), 0, 0, withscores=True)
        replies = await pipe.execute()
    created = [float(score) for reply in replies for _, score in reply]
    if created:
        oldest_age = round(max(0.0, time.time() - min(created)), 3)
    return MsgspecResponse(
        {
            "backends": rows,
            "summary": {
                "queued": sum(est.queued.values()),
                "running": sum(est.running.values()),
                "workers": est.workers,
                "estimated_wait_seconds": est.wait_seconds,
                "longest_wait": known[-1][1] if known else None,
                "shortest_wait": known[0][1] if known else None,
                "oldest_queued_age_seconds": oldest_age,
            },
        }
    )


async def usage(request: Request) -> Response:
    """``GET /dashboard/api/usage?month=YYYY-MM``: ``{"month", "instances": {crn: seconds}, "total"}``,
    only the instances the caller may see."""
    viewer = request_viewer(request)
    month = request.query_params.get("month") or time.strftime("%Y-%m", time.gmtime())
    try:
        datetime.strptime(month, "%Y-%m")
    except ValueError:
        raise InvalidRequest(f"month must look like 2026-12: {month!r}") from None
    redis = app_state(request)["pool"]
    if viewer.instances is None:
        raw = await cast("Awaitable[dict[bytes, bytes]]", redis.hgetall(keys.dash_usage(month)))
        per = {stats._text(k): float(v) for k, v in raw.items()}
    else:
        names = sorted(viewer.instances)
        values = await cast("Awaitable[list[bytes | None]]", redis.hmget(keys.dash_usage(month), names))
        per = {n: float(v) for n, v in zip(names, values, strict=True) if v is not None}
    return MsgspecResponse({"month": month, "instances": per, "total": round(sum(per.values()), 6)})


async def worker_view(request: Request) -> Response:
    """``GET /dashboard/api/workers``: ``{"workers": [{"id", "device", "host", "current_job",
    "jobs_done", "last_heartbeat", "busy_seconds_today"}]}``. A viewer limited to some instances
    sees another instance's running job as ``"current_job": "(other instance)"``."""
    viewer = request_viewer(request)
    redis = app_state(request)["pool"]
    live = await workers.live_workers(redis)
    current = [w.current_job for w in live if w.current_job]
    records = {r.id: r for r in await app_state(request)["store"].many(current)} if current else {}
    (today,) = await stats.read_buckets(redis, [keys.ALL_SCOPE], "day", [stats.day_label(time.time())])
    rows = []
    for w in live:
        job = w.current_job
        if job is not None and not viewer.sees(records[job].instance if job in records else ""):
            job = "(other instance)"
        rows.append(
            {
                "id": w.id,
                "host": w.host,
                "device": w.device,
                "visible_devices": w.visible_devices,
                "current_job": job,
                "jobs_done": w.jobs_done,
                "started": iso(w.started),
                "last_heartbeat": iso(w.heartbeat),
                "busy_seconds_today": round(today.get(f"worker_s|{w.id}", 0.0), 3) if viewer.operator else None,
            }
        )
    return MsgspecResponse({"workers": rows})


def job_row(record: JobRecord) -> dict[str, Any]:
    """One line of the jobs table (also the WebSocket's job event, without ``instance`` filtering)."""
    return {
        "id": record.id,
        "status": record.status.value,
        "backend": record.backend,
        "program": record.program_id,
        "instance": record.instance,
        "tags": record.tags,
        "session_id": record.session_id,
        "created": iso(record.created),
        "running": iso(record.running),
        "finished": iso(record.finished),
        "worker": record.worker_id,
        "attempts": record.attempts,
        "reason": record.reason,
        "quantum_seconds": record.quantum_seconds,
        "predicted_seconds": record.predicted_seconds,
    }


def _time(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidRequest(f"{name} is not an ISO 8601 date: {raw!r}") from None


def _listing_sets(request: Request, viewer: Viewer) -> list[str]:
    """The index sets whose intersection is the requested jobs table."""
    q = request.query_params
    instance = q.get("instance") or None
    if instance is None and viewer.instances is not None:
        if len(viewer.instances) != 1:
            raise InvalidRequest("Choose one of your instances with instance=.")
        (instance,) = viewer.instances
    if instance is not None:
        viewer.scopes(instance)  # 403 for an instance the caller may not see
    status = q.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}: {status!r}")
    sets: list[str] = []
    if instance is None:
        if q.get("tag") or q.get("session_id"):
            raise InvalidRequest("Filtering by tag or session needs instance=.")
        if status:  # with a backend, one set holds both (shared/stats.py)
            sets.append(keys.dash_status(keys.ALL_SCOPE, status, q.get("backend") or None))
        elif q.get("backend"):
            sets.append(keys.dash_all_jobs("backend", q["backend"]))
        if q.get("program"):
            sets.append(keys.dash_all_jobs("program", q["program"]))
        return sets or [keys.dash_all_jobs()]
    if status:
        sets.append(keys.dash_status(keys.dash_scope(instance), status, q.get("backend") or None))
    fields: tuple[tuple[str, str], ...] = (("program", "program"), ("tag", "tag"), ("session", "session_id"))
    if not status:
        fields = (("backend", "backend"), *fields)
    for field, param in fields:
        if q.get(param):
            sets.append(keys.job_filter(instance, field, q[param]))
    return sets or [keys.instance_jobs(instance)]


async def list_jobs(request: Request) -> Response:
    """``GET /dashboard/api/jobs``: ``{"jobs": [row], "count", "limit", "offset"}``.

    Filters: ``status`` (one of IBM's five states), ``backend``, ``program``, ``instance``,
    ``tag`` and ``session_id`` (with an instance), ``created_after``/``created_before`` (ISO 8601),
    ``id`` (one job), ``sort`` ``asc``/``desc`` by creation, ``limit`` (<= 200), ``offset``.
    An instance key with several instances must name one (400).
    """
    viewer = request_viewer(request)
    store = app_state(request)["store"]
    limit = int_param(request, "limit", 50, 1, 200)
    offset = int_param(request, "offset", 0, 0, 10_000_000)
    if job_id := request.query_params.get("id"):
        record = await store.get(job_id.strip())
        found = [record] if record is not None and viewer.sees(record.instance) else []
        return MsgspecResponse({"jobs": [job_row(r) for r in found], "count": len(found), "limit": limit, "offset": 0})
    sets = _listing_sets(request, viewer)
    low_t, high_t = _time(request, "created_after"), _time(request, "created_before")
    low: float | str = "-inf" if low_t is None else low_t
    high: float | str = "+inf" if high_t is None else high_t
    ascending = request.query_params.get("sort", "desc").lower() == "asc"
    scratch = None
    key = sets[0]
    if len(sets) > 1:
        scratch = key = keys.listing_scratch(uuid.uuid4().hex)
    async with store.redis.pipeline(transaction=True) as pipe:
        if scratch is not None:
            pipe.zinterstore(scratch, sets, aggregate="MAX")
        pipe.zcount(key, low, high)
        if ascending:
            pipe.zrangebyscore(key, low, high, start=offset, num=limit)
        else:
            pipe.zrevrangebyscore(key, high, low, start=offset, num=limit)
        if scratch is not None:
            pipe.delete(scratch)
        replies = await pipe.execute()
    first = 1 if scratch is not None else 0
    count, ids = int(replies[first]), [stats._text(i) for i in replies[first + 1]]
    records = [r for r in await store.many(ids) if viewer.sees(r.instance)]
    return MsgspecResponse({"jobs": [job_row(r) for r in records], "count": count, "limit": limit, "offset": offset})


def _options(params: bytes | None) -> Any:
    if params is None or len(params) > MAX_OPTIONS_PARAMS:
        return None
    try:
        decoded = msgspec.json.decode(params)
    except msgspec.DecodeError:
        return None
    return decoded.get("options") if isinstance(decoded, dict) else None


async def job_detail(request: Request) -> Response:
    """``GET /dashboard/api/jobs/{job_id}``: the row plus ``options`` (of params up to 1 MiB),
    ``logs``, ``reason_code``, ``num_pubs``, ``cost``; 404 for a job the caller may not see."""
    viewer = request_viewer(request)
    store = app_state(request)["store"]
    job_id = request.path_params["job_id"]
    record = await store.get(job_id)
    if record is None or not viewer.sees(record.instance):
        raise NotFound(f"Job {job_id} was not found.")
    detail = job_row(record)
    detail.update(
        reason_code=record.reason_code,
        num_pubs=record.num_pubs,
        cost=record.cost,
        options=_options(await store.params(job_id)),
        logs=await store.logs(job_id),
    )
    return MsgspecResponse(detail)


async def list_sessions(request: Request) -> Response:
    """``GET /dashboard/api/sessions``: ``{"sessions": [{"id", "mode", "backend", "instance", "state",
    "created", "closed", "jobs": {state: n}}], "count", "limit", "offset"}``, newest first.

    ``state`` is ``GET /api/v1/sessions/{id}``'s (open, active, inactive, closed), computed without
    writing: a session that ended unread (expired, or a batch that stopped accepting jobs with
    none left) reads ``closed`` with ``"closed": null`` until someone stores its close. Sessions
    come from the per-scope index ``shared.sessions.sessions_index``; a page reads its session
    records and their jobs (``limit`` <= 100), never the keyspace. ``instance=`` narrows to one
    instance the caller may see (403 otherwise); sessions older than the job retention drop out.
    """
    viewer, scopes = _scopes(request)
    redis = app_state(request)["pool"]
    session_store = app_state(request)["sessions"]
    limit = int_param(request, "limit", 50, 1, 100)
    offset = int_param(request, "offset", 0, 0, 10_000_000)
    index_keys = [sessions.sessions_index(scope) for scope in scopes]
    scratch = None
    key = index_keys[0]
    if len(index_keys) > 1:  # an instance key with several instances: their union, for one request
        scratch = key = keys.listing_scratch(uuid.uuid4().hex)
    async with redis.pipeline(transaction=True) as pipe:
        if scratch is not None:
            pipe.zunionstore(scratch, index_keys, aggregate="MAX")
        pipe.zcard(key)
        pipe.zrevrange(key, offset, offset + limit - 1)
        if scratch is not None:
            pipe.delete(scratch)
        replies = await pipe.execute()
    first = 1 if scratch is not None else 0
    count, ids = int(replies[first]), [stats._text(i) for i in replies[first + 1]]
    now = time.time()
    rows = []
    for session_id in ids:
        record = await session_store.get(session_id)
        if record is None or not viewer.sees(record.instance):
            continue  # expired since it was indexed
        jobs = await session_store.session_jobs(record)
        by_state = dict.fromkeys(STATUSES, 0)
        for job in jobs:
            by_state[job.status.value] += 1
        rows.append(
            {
                "id": record.id,
                "mode": record.mode,
                "backend": record.backend,
                "instance": record.instance,
                "state": sessions.state_of(record, sessions.activity(jobs), now),
                "created": iso(record.created),
                "closed": iso(record.closed_at),
                "jobs": by_state,
            }
        )
    return MsgspecResponse({"sessions": rows, "count": count, "limit": limit, "offset": offset})


routes = [
    Route("/overview", overview),
    Route("/trends", trends),
    Route("/status-distribution", status_distribution),
    Route("/backends", backend_comparison),
    Route("/queue", queue_view),
    Route("/percentiles", percentile_view),
    Route("/usage", usage),
    Route("/workers", worker_view),
    Route("/jobs", list_jobs),
    Route("/jobs/{job_id}", job_detail),
    Route("/sessions", list_sessions),
]
