"""The dashboard's job and session views: the jobs table, one job's detail, sessions and batches."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from qiskit_runtime_server.api.dashboard.common import STATUSES, caller_scopes
from qiskit_runtime_server.api.dashboard.viewer import Viewer, request_viewer
from qiskit_runtime_server.api.query import int_param
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared import keys, sessions, stats
from qiskit_runtime_server.shared.errors import InvalidRequest, NotFound
from qiskit_runtime_server.shared.models import JobRecord, iso

# Params larger than this are not decoded for the job detail's options.
MAX_OPTIONS_PARAMS = 1024 * 1024


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
    viewer, scopes = caller_scopes(request)
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
