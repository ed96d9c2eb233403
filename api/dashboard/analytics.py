"""The dashboard's analytics views: overview, trends, state distribution, backends, percentiles, usage.

All from the aggregates ``shared/stats.py`` keeps as jobs change state (``routes.py``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from qiskit_runtime_server.api.dashboard.common import STATUSES, caller_scopes
from qiskit_runtime_server.api.dashboard.viewer import request_viewer
from qiskit_runtime_server.api.query import int_param
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import keys, stats, workers
from qiskit_runtime_server.shared.errors import InvalidRequest
from qiskit_runtime_server.shared.models import JobStatus, iso

QUANTILES = (0.5, 0.9, 0.95, 0.99)


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
    viewer, scopes = caller_scopes(request)
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
    _, scopes = caller_scopes(request)
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
    _, scopes = caller_scopes(request)
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
    _, scopes = caller_scopes(request)
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
    _, scopes = caller_scopes(request)
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
