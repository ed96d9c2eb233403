"""msgspec models: what the API receives (wire bodies) and what Redis stores (records).

Stored records use ``kw_only=True, omit_defaults=True`` so that fields can be added with
defaults while API and workers roll out separately. Inbound bodies forbid unknown fields only
where IBM's API does; ``POST /jobs`` keeps the client's extra keys harmlessly.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import msgspec


class JobStatus(enum.StrEnum):
    """IBM's ``state.status`` vocabulary (Jobs API ``JobState``); the client polls until a final one."""

    QUEUED = "Queued"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

# IBM reason codes used on the wire (client: 1305 turns CANCELLED into RuntimeJobMaxTimeoutError).
REASON_RAN_TOO_LONG = 1305
REASON_EXECUTION_ERROR = 1517
REASON_INFRASTRUCTURE = 1500


class JobRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One job as stored under ``qrs:job:{id}``. Times are UNIX seconds (float, UTC)."""

    id: str
    program_id: str
    backend: str
    instance: str
    created: float
    status: JobStatus = JobStatus.QUEUED
    reason: str | None = None
    reason_code: int | None = None
    tags: list[str] = msgspec.field(default_factory=list)
    session_id: str | None = None
    log_level: str | None = None
    cost: int | None = None
    private: bool = False
    runtime: str = ""
    calibration_id: str | None = None
    user: str | None = None
    running: float | None = None
    finished: float | None = None
    # Simulation time (seconds) measured by the worker; IBM's quantum_seconds.
    quantum_seconds: float | None = None
    worker_id: str | None = None
    attempts: int = 0
    num_pubs: int | None = None
    qiskit_version: str | None = None
    # The worker's predicted simulation time (s) from the methods and sizes it ran.
    predicted_seconds: float | None = None
    # IBM-like timing (shared/timing.py): set when the job runs timed, the per-job QPU overhead
    # (s); the queue time drawn at submission (s); the QPU time of the duration model (s, written
    # by the worker once it has decoded the job); the measured simulation time (s), kept apart
    # because ``quantum_seconds`` is then the modelled QPU time.
    qpu_overhead: float | None = None
    queue_seconds: float | None = None
    qpu_seconds: float | None = None
    simulation_seconds: float | None = None


class JobSubmission(msgspec.Struct, kw_only=True):
    """Body of ``POST /jobs`` as the client sends it (docs/protocol.md §5.1).

    ``params`` stays raw JSON: it is stored verbatim and decoded only by the worker.
    """

    program_id: str
    backend: str | None = None
    # Empty when the body has no "params" (msgspec.Raw cannot be Optional).
    params: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    tags: list[str] | None = None
    session_id: str | None = None
    log_level: str | None = None
    cost: int | None = None
    runtime: str | None = None
    private: bool | None = None
    calibration_id: str | None = None
    start_session: bool | None = None
    session_time: int | None = None
    hub: str | None = None
    group: str | None = None
    project: str | None = None


class TagsUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``PUT /jobs/{id}/tags``."""

    tags: list[str]


def iso(ts: float | None) -> str | None:
    """UNIX seconds to IBM's timestamp form, e.g. ``2026-11-21T22:05:08.918939Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def job_view(record: JobRecord, max_execution_time: int, params: msgspec.Raw | None = None) -> dict[str, object]:
    """The ``GET /jobs/{id}`` body for ``record`` (docs/protocol.md §5.4); ``params`` is added when given.

    ``cost`` is the job's effective time limit in seconds, as on IBM (whose schema makes it a
    required integer): its own ``max_execution_time`` capped by the server's
    ``max_execution_time``, which is also the limit of a job that set none (worker/tasks.py).
    """
    state: dict[str, object] = {"status": record.status.value}
    if record.reason is not None:
        state["reason"] = record.reason
    if record.reason_code is not None:
        state["reason_code"] = record.reason_code
    usage_seconds = record.quantum_seconds or 0.0
    view: dict[str, object] = {
        "id": record.id,
        "backend": record.backend,
        "state": state,
        "status": record.status.value,
        "program": {"id": record.program_id},
        "created": iso(record.created),
        "session_id": record.session_id,
        "tags": record.tags,
        "runtime": record.runtime,
        "private": record.private,
        "cost": min(record.cost or max_execution_time, max_execution_time),
        "user_id": record.user,
        "usage": {"quantum_seconds": usage_seconds, "seconds": usage_seconds},
        "estimated_running_time_seconds": record.qpu_seconds,
    }
    if record.calibration_id is not None:
        view["calibration_id"] = record.calibration_id
    if params is not None:
        view["params"] = params
    return view
