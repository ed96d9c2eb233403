"""``/jobs`` after submission: list, cancel, delete, tags and metrics (docs/protocol.md §5.6)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from qiskit_runtime_server.api.auth import authenticate
from qiskit_runtime_server.api.body import decode_json, read_limited
from qiskit_runtime_server.api.query import int_param
from qiskit_runtime_server.api.responses import MsgspecResponse
from qiskit_runtime_server.api.routes.jobs import MAX_TAG_LENGTH, MAX_TAGS, load_job
from qiskit_runtime_server.api.state import app_state
from qiskit_runtime_server.shared.errors import Conflict, InvalidRequest, JobNotFound
from qiskit_runtime_server.shared.job_index import JobQuery
from qiskit_runtime_server.shared.models import TagsUpdate, iso, job_view

MAX_LIST_LIMIT = 1000

_decode_tags = msgspec.json.Decoder(TagsUpdate).decode




def _time_param(request: Request, name: str) -> float | None:
    """An ISO 8601 timestamp (``...+00:00`` or ``...Z``; naive means UTC) as UNIX seconds."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "+").replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"Query parameter {name} must be an ISO 8601 timestamp, got {raw!r}.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _bool_or_none(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise InvalidRequest(f"Query parameter {name} must be true or false, got {raw!r}.")
    return lowered == "true"


def _widen(ts: float | None, direction: int) -> float | None:
    """Widen an inclusive bound by one microsecond: timestamps on the wire have microsecond
    resolution, so a job's own ``created`` must match ``created_after``/``created_before``."""
    return None if ts is None else ts + direction * 1e-6


def parse_query(request: Request, instance: str) -> JobQuery:
    """The :class:`JobQuery` of a ``GET /jobs`` request.

    Raises:
        InvalidRequest: a malformed limit, offset, boolean, timestamp or sort (400).
    """
    sort = request.query_params.get("sort", "DESC").upper()
    if sort not in ("ASC", "DESC"):
        raise InvalidRequest(f"Query parameter sort must be ASC or DESC, got {sort!r}.")
    return JobQuery(
        instance=instance,
        limit=int_param(request, "limit", 20, 1, MAX_LIST_LIMIT),
        offset=int_param(request, "offset", 0, 0, 10**9),
        backend=request.query_params.get("backend") or None,
        program=request.query_params.get("program") or None,
        tags=tuple(t for t in request.query_params.getlist("tags") if t),
        session_id=request.query_params.get("session_id") or None,
        pending=_bool_or_none(request, "pending"),
        created_after=_widen(_time_param(request, "created_after"), -1),
        created_before=_widen(_time_param(request, "created_before"), +1),
        ascending=sort == "ASC",
        include_mocks=bool(_bool_or_none(request, "include_mocks")),
    )


async def list_jobs(request: Request) -> Response:
    """``GET /jobs``: ``{"jobs": [...], "count": total, "offset", "limit"}``, newest first unless ``sort=ASC``.

    ``count`` is the number of matches ignoring ``limit``/``offset``; the client pages on it.
    Only the calling instance's jobs are listed, and jobs on mock devices (dry runs) only with
    ``include_mocks=true`` or a mock ``backend`` filter, as on IBM. Params are never included
    (the client always sends ``exclude_params=true``, and listing 1000 jobs with their circuits
    would be huge).
    """
    principal = authenticate(request)
    query = parse_query(request, principal.instance)
    records, count = await app_state(request)["store"].find(query)
    limit = app_state(request)["settings"].max_execution_time
    jobs = [job_view(r, limit) for r in records]
    return MsgspecResponse({"jobs": jobs, "count": count, "offset": query.offset, "limit": query.limit})


async def cancel_job(request: Request) -> Response:
    """``POST /jobs/{id}/cancel``: a queued job never runs, a running one is stopped.

    Answers 204. 409 when the job is already final (the client raises
    ``RuntimeInvalidStateError``), 404 when unknown.
    """
    record = await load_job(request)
    cancelled = await app_state(request)["store"].cancel(record.id)
    if cancelled is None:
        current = await app_state(request)["store"].get(record.id)
        status = current.status.value if current else "deleted"
        raise Conflict(f"Job {record.id} cannot be cancelled: it is already {status}.")
    await app_state(request)["store"].log(record.id, f"{iso(cancelled.finished)} INFO job cancelled by the user")
    return Response(status_code=204)


async def delete_job(request: Request) -> Response:
    """``DELETE /jobs/{id}``: stop the job if needed, then remove record, params, result and logs (204)."""
    record = await load_job(request)
    store = app_state(request)["store"]
    if not record.status.final:
        # Cancel first: the worker running it stops when the record becomes final (or vanishes).
        await store.cancel(record.id, "Deleted by the user.")
    if not await store.delete(record.id):
        raise JobNotFound(record.id)
    return Response(status_code=204)


async def replace_tags(request: Request) -> Response:
    """``PUT /jobs/{id}/tags`` ``{"tags": [...]}``: exactly 204 (the client rejects other 2xx).

    Raises:
        InvalidRequest: not a list of 1 to 255 character strings, or more than 100 tags (400).
    """
    record = await load_job(request)
    body = await read_limited(request, app_state(request)["settings"].max_small_body_bytes)
    update = decode_json(_decode_tags, body, "tags")
    tags = sorted(set(update.tags))
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"A job can have at most {MAX_TAGS} tags.")
    for tag in tags:
        if not tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidRequest(f"Tags must be 1 to {MAX_TAG_LENGTH} characters long.")
    if await app_state(request)["store"].set_tags(record.id, tags) is None:
        raise JobNotFound(record.id)
    return Response(status_code=204)


async def job_metrics(request: Request) -> Response:
    """``GET /jobs/{id}/metrics``: timestamps, usage and counts, returned as is by ``job.metrics()``.

    ``usage.status`` is ``pending`` until the job is final (``job.usage()`` reads 0 until then),
    then ``billed``. ``quantum_seconds`` is the simulation time measured by the worker; with
    IBM-like timing (docs/timing.md) it is the modelled QPU time, and ``timing`` holds the drawn
    queue time, that QPU time and the measured ``simulation_seconds``.
    """
    record = await load_job(request)
    seconds = record.quantum_seconds or 0.0
    metrics: dict[str, object] = {
        "timestamps": {
            "created": iso(record.created),
            "running": iso(record.running),
            "finished": iso(record.finished),
        },
        "bss": {"seconds": seconds},
        "usage": {
            "quantum_seconds": seconds,
            "seconds": seconds,
            "qpu_charge_time_seconds": seconds,
            "status": "billed" if record.status.final else "pending",
        },
        "executions": record.num_pubs,
        "num_circuits": record.num_pubs,
        "num_pubs": record.num_pubs,
        "qiskit_version": record.qiskit_version,
        "worker_id": record.worker_id,
        "attempts": record.attempts,
        "predicted_seconds": record.predicted_seconds,
        "caller": "qiskit",
    }
    if record.qpu_overhead is not None:
        metrics["timing"] = {
            "mode": "ibm",
            "queue_seconds": record.queue_seconds,
            "qpu_seconds": record.qpu_seconds,
            "qpu_overhead_seconds": record.qpu_overhead,
            "simulation_seconds": record.simulation_seconds,
        }
    return MsgspecResponse(metrics)


routes = [
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/{job_id}", delete_job, methods=["DELETE"]),
    Route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{job_id}/tags", replace_tags, methods=["PUT"]),
    Route("/jobs/{job_id}/metrics", job_metrics, methods=["GET"]),
]
